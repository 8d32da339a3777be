"""A strict stand-in for CuPy on the CPU, to run mrirecon's GPU code paths before they meet a GPU.

``DeviceArray`` is a NumPy array that plays a CuPy array, and ``FakeCupy`` the ``cupy`` module (NumPy's
functions taking and returning device arrays). What CuPy refuses raises ``TypeError`` here too: NumPy's
converters (``np.asarray``, ``np.array``, ``np.ascontiguousarray``: an implicit device-to-host copy),
a host array mixed into device arithmetic or into a ``cupy.*`` call (a NumPy mask times a device array).
NumPy functions called on a device array are served by the fake namespace, as CuPy serves them
(``__array_function__``). Reductions return 0-d device arrays, as CuPy's do.
The numba.cuda launches (``_launch_gpu``) run the CPU twins instead, after checking that every array
argument is a device array (the CUDA twins are checked against the CPU kernels on the CUDA simulator).

``install(monkeypatch)`` switches ``get_array_module`` (and NumPy's converters) over for one test; as a
pytest plugin (``-p fakecupy``) it does so for a whole session, ``import cupy`` included.
Not covered: anything in the numba.cuda kernels themselves, and CuPy functions NumPy has and CuPy lacks.
"""
from __future__ import annotations

import contextlib
import types
from typing import Any

import numpy as np

class DeviceArray(np.ndarray):
    """A NumPy array standing for a CuPy array (see the module doc)."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _reject_host(ufunc.__name__, inputs + (out or ()))
        args = [_host(a) for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(_host(o) for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        # CuPy serves ``np.f(device_array)`` with ``cupy.f`` (NEP 18): so does this, through the fake namespace
        sub = func.__module__.rsplit(".", 1)[-1]
        space = _Namespace(getattr(np, sub) if sub in ("fft", "linalg") else np)
        return getattr(space, func.__name__)(*args, **kwargs)

    def get(self) -> np.ndarray:
        return _CONVERTERS["array"](_host(self))

    @property
    def device(self) -> Any:
        return types.SimpleNamespace(id=0)


def _host(a: Any) -> Any:
    return a.view(np.ndarray) if isinstance(a, DeviceArray) else a


def _is_host_array(a: Any) -> bool:
    return isinstance(a, np.ndarray) and not isinstance(a, DeviceArray) and a.ndim > 0


def _reject_host(name: str, values) -> None:
    for a in values:
        if _is_host_array(a) or (isinstance(a, (list, tuple)) and any(_is_host_array(b) for b in a)):
            raise TypeError(f"{name}: a host (NumPy) array mixed with device arrays")


def _wrap(result: Any) -> Any:
    if isinstance(result, (np.ndarray, np.generic)):
        return _CONVERTERS["asarray"](result).view(DeviceArray)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    if isinstance(result, list):
        return [_wrap(r) for r in result]
    return result


def _unwrap(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_host(v) for v in value)
    return _host(value)


_HOST_OK = {"asarray", "array"}  # the CuPy functions that take host arrays (and copy them)
# NumPy's converters: on a CuPy array they raise (no implicit device-to-host copy); ``install`` makes
# them do so on a DeviceArray, while the fake namespace keeps the originals
_CONVERTERS = {name: getattr(np, name) for name in ("asarray", "array", "asanyarray", "ascontiguousarray")}


class _Namespace:
    """NumPy's functions (or a sub-namespace's) that take and return device arrays."""

    def __init__(self, base: Any):
        self._base = base

    def __getattr__(self, name: str) -> Any:
        obj = _CONVERTERS[name] if self._base is np and name in _CONVERTERS else getattr(self._base, name)
        if isinstance(obj, (type, types.ModuleType)) or not callable(obj):
            return obj

        def call(*args, **kwargs):
            if name not in _HOST_OK:
                _reject_host(f"xp.{name}", args + tuple(kwargs.values()))
            result = obj(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
            if name in _HOST_OK and args and _is_host_array(args[0]) and np.shares_memory(result, args[0]):
                result = _CONVERTERS["array"](result)  # CuPy copies host arrays to the device
            return _wrap(result)

        return call


class _Stream:
    ptr = 0

    def synchronize(self) -> None:
        pass


class _Device(contextlib.nullcontext):
    def __init__(self, index: int = 0):
        super().__init__()
        self.id = index

    def synchronize(self) -> None:
        pass


class FakeCupy(_Namespace):
    """The ``cupy`` module as far as mrirecon uses it."""

    ndarray = DeviceArray
    __version__ = "fake"

    def __init__(self):
        super().__init__(np)
        self.fft = _Namespace(np.fft)
        self.linalg = _Namespace(np.linalg)
        self.random = _Namespace(np.random)
        self.cuda = types.SimpleNamespace(
            get_current_stream=_Stream,
            Device=_Device,
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                          getDeviceProperties=lambda index: {"name": b"fake GPU"}),
        )

    @staticmethod
    def asnumpy(x: Any) -> np.ndarray:
        return _CONVERTERS["array"](_host(x))


def _cpu_twins() -> dict:
    """CUDA launcher -> a function running the CPU twin on host views (same effect on the arrays)."""
    from mrirecon.kernels import coil, espirit, fused, nufft, rss, toeplitz, wavelet

    def cg(x, r, p, ap, a, rr):
        part = np.empty_like(rr)
        fused.cg_update_batched_cpu(x, r, p, ap, a, part)
        rr += part

    def spread(values, u, grid, width, table, density, order, n0, n1, n2):
        grid3 = np.array((n0, n1, n2))
        axis = 0 if n0 > 1 else 1
        starts = (np.floor(u - 0.5 * width).astype(np.int64) + 1) % grid3
        slabs = nufft._slabs(starts[order, axis], order, int(grid3[axis]), width)
        nufft.spread_cpu(values, u, grid, width, table, density, n0, n1, n2, *slabs, axis)

    return {
        coil.sense_expand_batched_cuda: coil.sense_expand_batched_cpu,
        coil.sense_combine_batched_cuda: coil.sense_combine_batched_cpu,
        coil.weight_batched_cuda: coil.weight_batched_cpu,
        fused.l2_dual_update_cuda: lambda s, u, z, y, w: fused.l2_dual_update_cpu(u, z, y, w, s),
        fused.cg_update_batched_cuda: cg,
        fused.real_dot_batched_cuda: lambda u, v, out: out.__iadd__((u.conj() * v).real.sum(axis=1)),
        toeplitz.expand_into_grid_cuda: toeplitz.expand_into_grid_cpu,
        toeplitz.crop_combine_cuda: toeplitz.crop_combine_cpu,
        nufft.interp_cuda: nufft.interp_cpu,
        nufft.spread_cuda: spread,
        espirit.power_maps_cuda: lambda g, n, c, m: espirit.power_maps_cpu(g, n, np.float32(c), m),
        rss.rss_cuda: rss.rss_cpu,
        wavelet.dwt_cuda: wavelet.dwt_cpu,
        wavelet.idwt_cuda: wavelet.idwt_cpu,
    }


def _refusing(name: str, convert):
    """NumPy's converter ``name`` that raises on a device array, as it does on a CuPy array."""

    def call(a, *args, **kwargs):
        if isinstance(a, DeviceArray):
            raise TypeError(f"numpy.{name} of a device array (an implicit device-to-host copy)")
        return convert(a, *args, **kwargs)

    return call


def install(monkeypatch) -> FakeCupy:
    """Make ``get_array_module`` see ``FakeCupy`` (and its launches run the CPU twins) for one test."""
    from mrirecon.kernels import backend, coil, espirit, fused, nufft, rss, toeplitz, wavelet

    fake = FakeCupy()
    twins = _cpu_twins()

    def launch(xp, twin, *args) -> None:
        assert xp is fake, "a CUDA launch with the wrong array module"
        for a in args:
            if isinstance(a, np.ndarray):
                assert isinstance(a, DeviceArray), f"{twin.__name__}: a host array passed to a CUDA kernel"
        twins[twin](*(_host(a) for a in args))

    monkeypatch.setattr(backend, "_cupy", lambda: fake)
    for name, convert in _CONVERTERS.items():
        monkeypatch.setattr(np, name, _refusing(name, convert))
    for module in (coil, espirit, fused, nufft, rss, toeplitz, wavelet):
        monkeypatch.setattr(module, "_launch_gpu", launch)
    return fake


def pytest_configure(config) -> None:
    """As a pytest plugin (``-p fakecupy``, tests/ on ``sys.path``): the whole session on the fake, with
    ``import cupy`` giving it, so that ``pytest -m gpu`` runs the GPU tests on the CPU. SigPy is imported
    first (if present): it must keep seeing no CuPy."""
    import sys

    import pytest

    try:
        import sigpy  # noqa: F401
    except ImportError:
        pass
    sys.modules["cupy"] = install(pytest.MonkeyPatch())
