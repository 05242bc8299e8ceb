"""Error types a user can catch. Each carries the facts needed to act on it."""

from __future__ import annotations

from dataclasses import dataclass, field


class ByteirError(Exception):
    """Base class of every error byteir raises on purpose."""


class PluginLoadError(ByteirError):
    """A plugin could not be imported, registered something invalid, or is incompatible."""

    def __init__(self, plugin: str, reason: str):
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"plugin {plugin!r}: {reason}")


class FrontendError(ByteirError):
    """A model could not be turned into StableHLO (unreadable file, parse error, no entry function)."""


class NoFrontendError(FrontendError):
    """No installed frontend accepts the given model."""


class PassGroupError(ByteirError):
    """A pass group failed or was named but does not exist."""


class TargetError(ByteirError):
    """An unknown target or a backend problem while compiling for it."""


class OptionError(ByteirError, ValueError):
    """An option no installed part knows, or a value it does not take; the message lists the valid ones."""


@dataclass
class UnsupportedOp:
    """One kind of op that no backend of a target claims."""

    name: str
    count: int
    locations: list[str] = field(default_factory=list)
    claimable_by: list[str] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        where = ", ".join(self.locations[:3]) + (" ..." if len(self.locations) > 3 else "")
        hint = (
            f"; installed backends that could take it: {', '.join(self.claimable_by)}"
            if self.claimable_by
            else "; no installed backend supports it"
        )
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.name} x{self.count}{reason} at {where or 'unknown location'}{hint}"


class UnsupportedOpError(ByteirError):
    """Ops that no backend in the target's fallback chain claims; all listed at once."""

    def __init__(self, target: str, chain: list[str], ops: list[UnsupportedOp]):
        self.target = target
        self.chain = chain
        self.ops = ops
        lines = [f"{len(ops)} kind(s) of op are not supported by target {target!r} "
                 f"(fallback chain: {' -> '.join(chain)}):"]
        lines += [f"  - {op.describe()}" for op in ops]
        super().__init__("\n".join(lines))


class ByreFormatError(ByteirError):
    """A file is not a ByRE artifact we can read: wrong magic, truncated, corrupted, too new, malformed."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ProviderError(ByteirError):
    """A callee in an artifact has no provider installed, or a provider failed while loading a kernel."""


class InputError(ByteirError, ValueError):
    """A runtime input does not match the entry function's signature."""


class ArtifactIntegrityError(ByteirError):
    """An artifact's content hash does not match the hash the caller pinned."""


class ByteirTargetWarning(UserWarning):
    """A compile succeeded, but not the way the target's name promises: e.g. ``target="cuda"`` with no cuda
    backend installed, so every op was compiled for the host instead. The message names what to install."""
