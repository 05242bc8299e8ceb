"""The plugin contract. These docstrings are the plugin author's manual.

A plugin is a Python module named by an entry point in the group ``byteir``::

    [project.entry-points.byteir]
    mychip = "byteir_backend_mychip.plugin"

The module sets ``BYTEIR_PLUGIN_API = "1.0"`` (the major version must match
:data:`byteir_core.interfaces.PLUGIN_API_VERSION`) and implements any of the hooks below with
``@byteir_core.hookimpl``. Each hook receives a ``register`` callable; call it once per object.

Each plugin is loaded on its own: if its import raises, a hook raises, or it registers something invalid,
the plugin is listed as ``failed`` by ``byteir list-plugins`` and the others keep working. Names are global:
registering a name that another plugin already registered fails the later plugin.

The core's own built-ins (the ``stablehlo`` frontend, the ``hlo`` pass groups and the ``reference``
backend and provider) are plugins registered through these same hooks.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("byteir")
hookimpl = pluggy.HookimplMarker("byteir")


@hookspec
def byteir_register_frontends(register):
    """Register model frontends: ``register(frontend)`` with a :class:`byteir_core.interfaces.Frontend`.

    Called once when the plugin is loaded. ``byteir_core.compile(model)`` asks each frontend's
    ``accepts(model)`` in registration order (built-ins last) unless the user names one with
    ``frontend=``; the chosen frontend's ``to_stablehlo(model, example_inputs, options, context)`` must return
    an ``ir.Module`` built in the given context whose entry function is ``@main`` (or its only public
    function).
    """


@hookspec
def byteir_register_pass_groups(register):
    """Register pass groups: ``register(pass_group)`` with a :class:`byteir_core.interfaces.PassGroup`.

    A pass group belongs to a stage (``hlo`` runs on StableHLO before partitioning; ``linalg`` and ``byre``
    are for backends' own pipelines) and runs in ``order`` within it. Users list groups with
    ``byteir opt --pass-groups a,b`` or ``compile(..., pass_groups=[...])``; groups with ``default=True`` run
    when the user names none. A pass group must leave the module valid; the driver verifies it afterwards and
    reports the group's name if verification fails.
    """


@hookspec
def byteir_register_backends(register):
    """Register code generators: ``register(backend)`` with a :class:`byteir_core.interfaces.Backend`.

    Partitioning walks the chosen target's fallback chain (the target, then each backend's ``fallback``
    targets, then ``reference``). For each op of ``@main`` the first target in the chain with a backend that
    claims the op wins, and among that target's backends the highest ``claims(op)`` priority wins.
    Consecutive ops of one backend form a :class:`~byteir_core.interfaces.Cluster`, and the backend's
    ``compile(cluster)`` returns a :class:`~byteir_core.interfaces.CompiledCluster`: the callee a runtime
    provider implements and the kernel (binary or IR) the artifact carries for it.

    ``claims`` is called for every op and must be fast and must not raise; claim only what ``compile``
    really handles, because an op you claim and cannot compile fails the whole compile.
    """


@hookspec
def byteir_register_providers(register):
    """Register runtime providers: ``register(provider)`` with a :class:`byteir_core.interfaces.Provider`.

    A provider states the callees it executes (e.g. ``reference.stablehlo``). When a Session loads an
    artifact, each ``byre.compute`` op's callee is looked up among installed providers and
    ``provider.load(callee, kernel, attrs)`` prepares it once; a callee nobody provides is a load-time error
    naming the callee and the plugin that compiled it. The runtime never imports the compiler: a provider must
    not depend on a backend's compile-time code.
    """
