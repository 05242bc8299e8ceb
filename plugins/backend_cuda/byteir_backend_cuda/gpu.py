"""Is there a usable NVIDIA GPU here? Asked at compile time (the default architecture) and when a cuda artifact
loads; importing this module never needs CuPy or a driver."""

from __future__ import annotations

from functools import lru_cache


def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def gpu_problem() -> str | None:
    """None when a CUDA GPU is usable through CuPy here, else one line saying what is missing."""
    cp = _cupy()
    if cp is None:
        return "CuPy is not installed (pip install cupy-cuda12x, or cupy-cuda13x for a CUDA 13 driver)"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 -- CUDARuntimeError without a driver
        return f"no usable CUDA driver/GPU ({type(e).__name__}: {str(e).splitlines()[0]})"
    if n == 0:
        return "no CUDA GPU is visible (CUDA_VISIBLE_DEVICES?)"
    return None


@lru_cache(maxsize=1)
def local_arch() -> int | None:
    """The compute capability of GPU 0 (e.g. 90), or None without one."""
    if gpu_problem():
        return None
    cp = _cupy()
    return int(cp.cuda.Device(0).compute_capability)
