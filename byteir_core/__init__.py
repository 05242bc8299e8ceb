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
    __version__ = "0.2.0+src"

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
            dump_dir=None, **kwargs):
    """Compile ``model`` into a ByRE artifact. See :func:`byteir_core.compiler.driver.compile`."""
    from .compiler.driver import compile as _compile

    return _compile(model, example_inputs, target=target, frontend=frontend, pass_groups=pass_groups,
                    output=output, dump_dir=dump_dir, **kwargs)


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
    "ByteirError", "ByreFormatError", "FrontendError", "NoFrontendError", "OptionError", "PassGroupError", "PluginLoadError",
    "ProviderError", "TargetError", "UnsupportedOpError", "InputError", "ArtifactIntegrityError",
    "ByteirTargetWarning",
]
