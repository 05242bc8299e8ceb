"""Plugin discovery (entry-point group ``byteir``), isolation of failures, and the registry of what loaded.

Unlike a plain ``pm.load_setuptools_entrypoints``, each entry point is imported, version-checked and asked
for its registrations on its own, inside a try block: one broken plugin is reported, never fatal.
Environment: ``BYTEIR_PLUGINS=a,b`` loads only those entry points; ``BYTEIR_DISABLE_PLUGINS=a,b`` skips those.
The built-ins always load: every target's fallback chain ends in the reference backend.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .interfaces import PLUGIN_API_VERSION, Backend, Frontend, PassGroup, Provider

ENTRY_POINT_GROUP = "byteir"

BUILTIN_MODULES = {
    "stablehlo": "byteir_core.builtins.stablehlo_frontend",
    "hlo-passes": "byteir_core.builtins.hlo_passes",
    "reference": "byteir_core.builtins.reference",
}

_KINDS = {
    "frontend": ("byteir_register_frontends", Frontend),
    "pass_group": ("byteir_register_pass_groups", PassGroup),
    "backend": ("byteir_register_backends", Backend),
    "provider": ("byteir_register_providers", Provider),
}


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    status: str  # "ok" | "failed" | "incompatible" | "disabled"
    error: str = ""
    registers: list[str] = field(default_factory=list)
    builtin: bool = False

    def status_text(self) -> str:
        return self.status + (f": {self.error}" if self.error else "")

    def as_dict(self) -> dict:
        return {
            "name": self.name, "module": self.module, "distribution": self.distribution,
            "version": self.version, "status": self.status, "error": self.error,
            "registers": list(self.registers), "builtin": self.builtin,
        }


def _describe(kind: str, obj: Any) -> str:
    if kind == "backend":
        extra = f", serves {','.join(obj.serves())}" if obj.targets else ""
        return f"backend {obj.name} (device {obj.device}{extra})"
    if kind == "provider":
        return f"provider {obj.name} (device {obj.device})"
    if kind == "pass_group":
        return f"pass-group {obj.name} ({obj.stage})"
    return f"frontend {obj.name}"


class Registry:
    """Everything the loaded plugins registered, with the plugin that registered each name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("byteir")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.frontends: dict[str, Frontend] = {}
        self.pass_groups: dict[str, PassGroup] = {}
        self.backends: dict[str, Backend] = {}
        self.providers: dict[str, Provider] = {}
        self.owner: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin name
        self.callee_provider: dict[str, Provider] = {}

    # -- loading -----------------------------------------------------------------------------------
    def load_module(self, name: str, module_path: str, dist: str, version: str, *,
                    builtin: bool = False, loader=None) -> PluginInfo:
        info = PluginInfo(name, module_path, dist, version, "ok", builtin=builtin)
        self.plugins.append(info)
        try:
            module = loader() if loader else importlib.import_module(module_path)
        except BaseException as e:  # noqa: BLE001 -- a plugin's import may raise anything, even SystemExit
            info.status, info.error = "failed", f"import raised {type(e).__name__}: {e}"
            return info
        api = str(getattr(module, "BYTEIR_PLUGIN_API", PLUGIN_API_VERSION))
        if api.split(".")[0] != PLUGIN_API_VERSION.split(".")[0]:
            info.status = "incompatible"
            info.error = f"written for plugin API {api}, byteir-core {_core_version()} implements {PLUGIN_API_VERSION}"
            return info
        try:
            self.pm.register(module, name=name)
        except Exception as e:  # noqa: BLE001
            info.status, info.error = "failed", f"invalid hooks: {e}"
            return info
        try:
            staged = self._collect(name)
        except Exception as e:  # noqa: BLE001
            self.pm.unregister(name=name)
            info.status, info.error = "failed", str(e)
            return info
        for kind, obj in staged:  # commit only when everything the plugin registered is valid
            self._store(kind, obj, name)
            info.registers.append(_describe(kind, obj))
        return info

    def _collect(self, plugin_name: str) -> list[tuple[str, Any]]:
        staged: list[tuple[str, Any]] = []
        for kind, (hook_name, cls) in _KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue

                def register(obj, _kind=kind, _cls=cls, _hook=hook_name):
                    if not isinstance(obj, _cls):
                        raise TypeError(f"{_hook} registered {obj!r}, which is not a {_cls.__name__}")
                    if not getattr(obj, "name", ""):
                        raise ValueError(f"{_hook} registered a {_cls.__name__} without a name")
                    staged.append((_kind, obj))

                try:
                    impl.function(register=register)
                except KeyboardInterrupt:
                    raise
                except BaseException as e:  # noqa: BLE001 -- even sys.exit() in a hook fails only this plugin
                    raise RuntimeError(f"{hook_name} raised {type(e).__name__}: {e}") from e
        names: set[tuple[str, str]] = set()
        callees: dict[str, str] = {}
        for kind, obj in staged:
            self._check_unique(kind, obj.name, plugin_name)
            if (kind, obj.name) in names:
                raise ValueError(f"{kind} {obj.name!r} is registered twice by this plugin")
            names.add((kind, obj.name))
            if kind == "provider":
                for callee in obj.callees:
                    if callee in self.callee_provider:
                        raise ValueError(f"callee {callee!r} is already provided by provider "
                                         f"{self.callee_provider[callee].name!r}")
                    if callee in callees:
                        raise ValueError(f"callee {callee!r} is provided twice by this plugin (providers "
                                         f"{callees[callee]!r} and {obj.name!r})")
                    callees[callee] = obj.name
        return staged

    def _check_unique(self, kind: str, name: str, plugin: str) -> None:
        if (kind, name) in self.owner:
            raise ValueError(f"{kind} {name!r} is already registered by plugin {self.owner[(kind, name)]!r}")

    def _store(self, kind: str, obj: Any, plugin: str) -> None:
        table = {"frontend": self.frontends, "pass_group": self.pass_groups,
                 "backend": self.backends, "provider": self.providers}[kind]
        table[obj.name] = obj
        self.owner[(kind, obj.name)] = plugin
        if kind == "provider":
            for callee in obj.callees:
                self.callee_provider[callee] = obj

    # -- queries -----------------------------------------------------------------------------------
    def plugin_of(self, kind: str, name: str) -> PluginInfo | None:
        owner = self.owner.get((kind, name))
        return next((p for p in self.plugins if p.name == owner), None)

    def frontends_in_order(self) -> list[Frontend]:
        # third-party frontends first, so a plugin can take over a format the built-ins also read
        builtin = {n for n, p in self.owner.items() if n[0] == "frontend" and self._is_builtin(p)}
        return ([f for n, f in self.frontends.items() if ("frontend", n) not in builtin]
                + [f for n, f in self.frontends.items() if ("frontend", n) in builtin])

    def _is_builtin(self, plugin_name: str) -> bool:
        return any(p.builtin for p in self.plugins if p.name == plugin_name)

    def versions(self) -> dict[str, str]:
        """Distribution versions of every plugin that loaded, for the provenance manifest."""
        return {p.name: f"{p.distribution} {p.version}" for p in self.plugins if p.status == "ok"}


def _core_version() -> str:
    try:
        return metadata.version("byteir-core")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {x.strip() for x in raw.split(",") if x.strip()}


def load_registry() -> Registry:
    """Discover and load every plugin now (ignores the cache); used by tests and ``list-plugins``."""
    reg = Registry()
    core_version = _core_version()
    for name, module_path in BUILTIN_MODULES.items():
        reg.load_module(name, module_path, "byteir-core", core_version, builtin=True)
    only = _env_list("BYTEIR_PLUGINS")
    blocked = _env_list("BYTEIR_DISABLE_PLUGINS") or set()
    seen: dict[str, str] = {name: "byteir-core" for name in BUILTIN_MODULES}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        if ep.name in seen:
            if seen[ep.name] != dist:  # a clash, not the same distribution found twice on sys.path
                reg.plugins.append(PluginInfo(ep.name, ep.value, dist, version, "failed",
                                              f"entry point name {ep.name!r} is already used by {seen[ep.name]}"))
            continue
        seen[ep.name] = dist
        if (only is not None and ep.name not in only) or ep.name in blocked:
            why = "BYTEIR_DISABLE_PLUGINS" if ep.name in blocked else "not in BYTEIR_PLUGINS"
            reg.plugins.append(PluginInfo(ep.name, ep.value, dist, version, "disabled", why))
            continue
        reg.load_module(ep.name, ep.value, dist, version, loader=ep.load)
    return reg


_registry: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = load_registry()
        return _registry


def reset_registry() -> None:
    """Forget the loaded registry (the next :func:`get_registry` discovers plugins again)."""
    global _registry
    with _lock:
        _registry = None
