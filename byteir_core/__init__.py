"""byteir: an end-to-end model compiler. StableHLO in, ByRE out, run by a light runtime.

Public API::

    art = byteir_core.compile("model.mlir", target="cpu", output="model.byre")
    session = byteir_core.load("model.byre")
    outputs = session(*inputs)
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("byteir-core")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.2.5+src"

from .errors import (  # noqa: E402
    ArtifactIntegrityError,
    ByreFormatError,
    ByteirError,
    ByteirTargetWarning,
    FrontendError,
    InputError,
    NoFrontendError,
    OptionError,
    PassGroupError,
    PluginLoadError,
    ProviderError,
    TargetError,
    UnsupportedOpError,
)
from .hookspecs import hookimpl  # noqa: E402


def compile(model, example_inputs=None, *, target="cpu", frontend=None, pass_groups=None, output=None,
            dump_dir=None, input_shapes=None, options=None, progress=None):
    """Compile ``model`` for ``target`` into a ByRE :class:`~byteir_core.byre.Artifact` (saved to ``output``).

    model           a path (``.mlir``, ``.mlirbc``, ``.pt2``, ...), bytes, an ``ir.Module``, or an object a
                    frontend takes (an ``nn.Module`` with ``example_inputs``, an ``ExportedProgram``, ...)
    example_inputs  the inputs to trace with, for frontends that trace (torch)
    target          ``cpu`` (default), ``cuda``, ``reference``, or any target a plugin adds
                    (``byteir list-plugins``); an unknown one is a :class:`TargetError` listing the valid ones
    frontend        force a frontend by name (default: the first installed one that accepts ``model``)
    pass_groups     the ``hlo`` pass groups to run (default: every default group)
    output          where to save (``.byre`` bytecode, ``.byre.mlir`` text); written atomically
    dump_dir        write the IR after every stage here
    input_shapes    static shapes for @main's dynamic arguments: one per argument, e.g. ``[[1, 3, 224, 224]]``,
                    or by input name, e.g. ``{"input": [1, 3, 224, 224]}`` (CLI: ``--input-shape
                    input=1x3x224x224``)
    options         frontend options (the torch frontend's: ``train``, ``fx_passes``, ...); an unknown key is
                    an :class:`OptionError` listing the frontend's options
    progress        None: a progress line on stderr when it is a terminal and the compile takes over a second
                    (``BYTEIR_PROGRESS=0`` turns it off); False: none; a callable: called with each stage's name

    The artifact is reproducible: the same input, target, options and versions give the same bytes. Its creation
    time is recorded only when ``SOURCE_DATE_EPOCH`` is set (and is then that time).
    """
    from .compiler.driver import compile as _compile

    return _compile(model, example_inputs, target=target, frontend=frontend, pass_groups=pass_groups,
                    output=output, dump_dir=dump_dir, input_shapes=input_shapes, options=options,
                    progress=progress)


def load(source, device=None, *, expected_sha256=None):
    """Load an artifact (path, bytes or Artifact) into a :class:`Session` that runs on ``device`` (None: on the
    devices it was compiled for; a provider may offer variants, e.g. ``"cuda-interpret"``)."""
    from .runtime.session import load as _load

    return _load(source, device, expected_sha256=expected_sha256)


def __getattr__(name):
    if name == "Session":
        from .runtime.session import Session

        return Session
    if name == "Artifact":
        from .byre import Artifact

        return Artifact
    raise AttributeError(name)


__all__ = [
    "compile", "load", "Session", "Artifact", "hookimpl", "__version__",
    "ByteirError", "ByreFormatError", "FrontendError", "NoFrontendError", "OptionError", "PassGroupError",
    "PluginLoadError", "ProviderError", "TargetError", "UnsupportedOpError", "InputError", "ArtifactIntegrityError",
    "ByteirTargetWarning",
]
