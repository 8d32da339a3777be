"""One array namespace per call: NumPy on the CPU, CuPy on a GPU, chosen by where the data lives."""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

Device = str  # "cpu", "cuda", "cuda:N" or "auto"


@functools.cache
def _cupy() -> ModuleType | None:
    """CuPy if it imports and sees at least one device, else None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
        return cupy
    except Exception:  # no cupy, no driver, no device: all mean "CPU only"
        return None


def gpu_available() -> bool:
    """True when CuPy is installed and a CUDA device is visible."""
    return _cupy() is not None


def get_array_module(x: Any) -> ModuleType:
    """Return ``cupy`` for CuPy arrays, ``numpy`` for everything else."""
    cp = _cupy()
    if cp is not None and isinstance(x, cp.ndarray):
        return cp
    return np


def resolve_device(device: Device = "auto") -> Device:
    """Turn ``"auto"`` into ``"cuda"`` or ``"cpu"``; check that a requested GPU exists."""
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not gpu_available():
            raise RuntimeError(f"device {device!r} requested but no CUDA GPU with CuPy is available")
        return device
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")


def to_device(x: Any, device: Device) -> Any:
    """Move an array to ``device`` (no copy when it is already there); ``None`` passes through."""
    if x is None:
        return None
    device = resolve_device(device)
    if device == "cpu":
        return to_numpy(x)
    cp = _cupy()
    index = int(device.split(":")[1]) if ":" in device else None
    if index is None:
        return cp.asarray(x)
    with cp.cuda.Device(index):
        return cp.asarray(x)


def to_numpy(x: Any) -> np.ndarray:
    """Return a NumPy array, copying from the GPU when needed."""
    if get_array_module(x) is not np:
        return x.get()
    return np.asarray(x)


def device_of(x: Any) -> Device:
    """``"cpu"`` or ``"cuda:N"`` for an array."""
    if get_array_module(x) is np:
        return "cpu"
    return f"cuda:{x.device.id}"
