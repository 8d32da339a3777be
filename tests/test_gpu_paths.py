"""The GPU code paths on the CPU: every CuPy branch run on ``tests/fakecupy.py``'s stand-in, which raises
where CuPy would (NumPy converters on device arrays, host arrays mixed into device arithmetic or kernel
launches), the ``pytest -m gpu`` tests run on it, the numba.cuda launcher's contract with a stand-in for
``numba.cuda``, and every numba.cuda kernel compiled to PTX for sm_90 (typing the simulator never does)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from fakecupy import DeviceArray, install
from mrirecon import sim
from mrirecon.kernels import coil
from mrirecon.kernels.fft import ifftc_planes
from mrirecon.linop import CartesianSense, SenseNormal
from mrirecon.nufft import NUFFT, StackedNUFFT, ToeplitzSenseNormal
from mrirecon.reconstruction import recon
from mrirecon.solvers import conjugate_gradient

TESTS = Path(__file__).resolve().parent


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _on_device(value) -> np.ndarray:
    """The host copy of a result that must be a device array."""
    assert isinstance(value, DeviceArray), f"a {type(value).__name__} came back, not a device array"
    return np.array(value.view(np.ndarray))


@pytest.fixture
def cp(monkeypatch):
    return install(monkeypatch)


def test_the_fake_refuses_what_cupy_refuses(cp):
    """The checks themselves: each would catch the faults the tests below look for."""
    x = cp.asarray(np.ones(4, np.complex64))
    with pytest.raises(TypeError, match="implicit"):
        np.asarray(x)
    with pytest.raises(TypeError, match="host"):
        x * np.ones(4, np.float32)  # a NumPy mask times a device array
    with pytest.raises(TypeError, match="host"):
        cp.broadcast_to(np.ones(4), (2, 4))
    with pytest.raises(TypeError, match="host"):  # a host weight for device coil images
        coil.apply_weight(cp.asarray(np.ones((2, 4), np.complex64)), np.ones(4, np.float32))
    assert isinstance(x.sum(), DeviceArray)  # reductions stay on the device, as 0-d arrays


@pytest.mark.parametrize("shape", [(4, 12, 10), (3, 9, 7)])
def test_batched_cg_sense_on_device(cp, rng, shape):
    """Batched and unbatched CartesianSense, SenseNormal (per-entry lam) and CG on device arrays equal NumPy."""
    n = 3
    maps, x, y = _complex(rng, (n,) + shape), _complex(rng, (n,) + shape[1:]), _complex(rng, (n,) + shape)
    mask = rng.random((n,) + shape[1:]) < 0.4
    lam = np.array([0.0, 0.3, 1.5], dtype=np.float32).reshape(n, 1, 1)
    g = cp.asarray
    gpu, cpu = CartesianSense(g(maps), g(mask), 1), CartesianSense(maps, mask, 1)
    np.testing.assert_allclose(_on_device(gpu(g(x))), cpu(x), atol=1e-4)
    np.testing.assert_allclose(_on_device(gpu.H(g(y))), cpu.H(y), atol=1e-4)
    n_gpu, n_cpu = SenseNormal(g(maps), g(mask), g(lam), batch_ndim=1), SenseNormal(maps, mask, lam, batch_ndim=1)
    solved = conjugate_gradient(n_gpu, g(x), max_iter=6, tol=1e-3, batch_ndim=1, check_every=2)
    np.testing.assert_allclose(_on_device(solved), conjugate_gradient(n_cpu, x, max_iter=6, tol=1e-3, batch_ndim=1,
                                                                      check_every=2), atol=1e-4)
    one_gpu, one_cpu = CartesianSense(g(maps[0]), g(mask[0])), CartesianSense(maps[0], mask[0])
    np.testing.assert_allclose(_on_device(conjugate_gradient(one_gpu.N, g(x[0]), max_iter=6)),
                               conjugate_gradient(one_cpu.N, x[0], max_iter=6), atol=1e-4)
    u = np.zeros_like(y[0])
    back = one_gpu.l2_dual(g(y[0] * mask[0])).dual_step(g(u), g(x[0]), 0.3)
    np.testing.assert_allclose(_on_device(back), one_cpu.l2_dual(y[0] * mask[0]).dual_step(u.copy(), x[0], 0.3), atol=1e-4)


@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 8)])
def test_nufft_and_toeplitz_on_device(cp, rng, shape):
    coord = ((rng.random((300, len(shape))) - 0.5) * np.array(shape)).astype(np.float32)
    x, y, maps = _complex(rng, (3,) + shape), _complex(rng, (3, 300)), _complex(rng, (3,) + shape)
    gpu, cpu = NUFFT(cp.asarray(coord), shape, (3,)), NUFFT(coord, shape, (3,))
    for got, want in [(gpu(cp.asarray(x)), cpu(x)), (gpu.H(cp.asarray(y)), cpu.H(y)), (gpu.N(cp.asarray(x)), cpu.N(x))]:
        assert np.linalg.norm(_on_device(got) - want) / np.linalg.norm(want) < 1e-5
    fused = ToeplitzSenseNormal(gpu, cp.asarray(maps))(cp.asarray(x[0]))
    want = ToeplitzSenseNormal(cpu, maps)(x[0])
    assert np.linalg.norm(_on_device(fused) - want) / np.linalg.norm(want) < 1e-5


def test_stacked_nufft_on_device(cp, rng):
    spokes = (rng.random((4, 50, 2)) - 0.5) * 16
    coord = np.concatenate([np.broadcast_to(np.array([-2.0, -1, 0, 1])[:, None, None], (4, 50, 1)), spokes], -1)
    gpu, cpu = StackedNUFFT(cp.asarray(coord), (6, 16, 16), (2,)), StackedNUFFT(coord, (6, 16, 16), (2,))
    x = _complex(rng, (2, 6, 16, 16))
    np.testing.assert_allclose(_on_device(gpu(cp.asarray(x))), cpu(x), atol=1e-4)
    np.testing.assert_allclose(_on_device(gpu.N(cp.asarray(x))), cpu.N(x), atol=1e-4)
    y = _complex(rng, (2, 4, 50))
    np.testing.assert_allclose(_on_device(gpu.H(cp.asarray(y))), cpu.H(y), atol=1e-4)


@pytest.mark.parametrize("n", [8, 7])
def test_ifftc_planes_on_device(cp, rng, n):
    x = _complex(rng, (3, n, 6, 5))
    np.testing.assert_allclose(_on_device(ifftc_planes(cp.asarray(x), 1, [n - 1, 0, 3])), ifftc_planes(x, 1, [n - 1, 0, 3]),
                               atol=1e-6)


@pytest.fixture(scope="module")
def slices():
    """Three 4-coil slices with their own masks and a noise scan (whitening runs too)."""
    shape = (32, 28)
    maps = np.stack([sim.birdcage_maps(4, shape) * np.exp(0.7j * k) for k in range(3)]).astype(np.complex64)
    tasks = [sim.simulate(sim.shepp_logan(shape), maps[k], sim.poisson_disc_mask(shape, 2.5, 12, seed=k),
                          noise_sigma=1e-3, seed=k, noise_scans=16) for k in range(3)]
    return dataclasses.replace(tasks[0], data=np.stack([t.data for t in tasks]), dims=("slice",) + tasks[0].dims), maps


@pytest.mark.parametrize("batched", [None, False])
@pytest.mark.parametrize("case", ["maps", "espirit", "compressed", "zerofill"])
def test_recon_on_device(cp, slices, batched, case):
    """``recon`` on device k-space: batched (the GPU default) and per entry, given or ESPIRiT maps, coil
    compression; the image stays on the device and equals the CPU's."""
    ksp, maps = slices
    method, params = {
        "maps": ("sense", {"maps": maps, "max_iter": 8}),
        "espirit": ("sense", {"calib": 12, "max_iter": 8}),
        "compressed": ("sense", {"maps": maps, "max_iter": 8, "coil_compression": 3}),
        "zerofill": ("zerofill", {}),
    }[case]
    cpu = recon(ksp, method, device="cpu", **params).data
    gpu_params = {**params, "maps": cp.asarray(maps)} if "maps" in params else params
    gpu = recon(ksp.to("cuda"), method, device="cuda", batched=batched, **gpu_params).data
    assert np.abs(_on_device(gpu) - cpu).max() < 1e-4 * np.abs(cpu).max()


def test_launch_gpu_passes_unsynchronised_views_on_the_current_stream(monkeypatch):
    """``_launch_gpu``: the arrays as numba views made with ``sync=False`` (numba's default waits for the
    arrays' stream on the host, per array and launch), other arguments as they are, on the first array's
    device and CuPy's current stream (numba's default stream for CuPy's null stream)."""
    calls = []

    class Array:
        __cuda_array_interface__: ClassVar[dict] = {}
        device = types.SimpleNamespace(id=1)

    class Gpus:
        def __getitem__(self, index):
            calls.append(("device", index))
            return contextlib.nullcontext()

    monkeypatch.setattr(coil, "cuda", types.SimpleNamespace(
        gpus=Gpus(),
        as_cuda_array=lambda a, sync=True: ("view", a, sync),
        external_stream=lambda ptr: ("external", ptr),
        default_stream=lambda: "default",
    ))
    a, b = Array(), Array()
    for ptr, stream in [(0, "default"), (1234, ("external", 1234))]:
        current = types.SimpleNamespace(ptr=ptr)
        xp = types.SimpleNamespace(cuda=types.SimpleNamespace(get_current_stream=lambda current=current: current))
        coil._launch_gpu(xp, lambda *args: calls.append(args), 0.5, a, 7, b)
        assert calls[-2:] == [("device", 1), (0.5, ("view", a, False), 7, ("view", b, False), stream)]


def test_gpu_marked_tests_run_on_the_fake():
    """``pytest -m gpu`` with ``fakecupy`` as the plugin: every GPU test's CuPy path runs here (the
    numba.cuda twins replaced by the CPU kernels) and passes, so none should fail on a GPU for a host
    array, a NumPy call or a missing import."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-p", "fakecupy", str(TESTS)],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=TESTS.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]


def _kernel_signatures() -> list[tuple[str, object, tuple]]:
    """Every numba.cuda kernel with the argument types CuPy arrays give it (C-contiguous or strided)."""
    from numba import types as t

    from mrirecon.kernels import espirit, fused, nufft, rss, toeplitz, wavelet

    c64, c128, f32, f64, i64 = t.complex64, t.complex128, t.float32, t.float64, t.int64
    cases = []
    for layout in ("C", "A"):
        def a(dtype, ndim, layout=layout):
            return t.Array(dtype, ndim, layout)

        for cx, re in ((c64, f32), (c128, f64)):
            cases += [
                ("coil._expand_cuda", coil._expand_cuda, (a(cx, 2), a(cx, 3), a(cx, 3))),
                ("coil._combine_cuda", coil._combine_cuda, (a(cx, 3), a(cx, 3), a(cx, 2))),
                ("coil._weight_cuda", coil._weight_cuda, (a(cx, 3), a(f32, 2))),
                ("fused._cg_batched_cuda", fused._cg_batched_cuda, (a(cx, 2),) * 4 + (a(re, 1), a(f64, 1))),
                ("fused._real_dot_cuda", fused._real_dot_cuda, (a(cx, 2), a(cx, 2), a(f64, 1))),
            ]
        grid_args = (i64, a(f32, 1), f32, a(i64, 1), i64, i64, i64)  # width, table, density, order, n0, n1, n2
        cases += [
            ("fused._l2_dual_cuda", fused._l2_dual_cuda, (a(c64, 2),) * 3 + (a(f32, 1), f32, f32)),
            ("toeplitz._expand_into_grid_cuda", toeplitz._expand_into_grid_cuda, (a(c64, 3), a(c64, 4), a(c64, 4))),
            ("toeplitz._crop_combine_cuda", toeplitz._crop_combine_cuda, (a(c64, 4), a(c64, 4), a(c64, 3))),
            ("nufft._interp_cuda", nufft._interp_cuda, (a(c64, 2), a(f64, 2), a(c64, 2)) + grid_args),
            ("nufft._spread_cuda", nufft._spread_cuda, (a(c64, 2), a(f64, 2), a(f32, 2)) + grid_args),
            ("espirit._power_cuda", espirit._power_cuda, (a(c64, 2), i64, f32, a(c64, 2), a(c64, 2))),
            ("rss._rss_cuda", rss._rss_cuda, (a(c64, 4), t.UniTuple(i64, 3), a(f32, 3))),
            ("rss._rss_cuda", rss._rss_cuda, (a(c64, 4), t.UniTuple(i64, 3), a(c64, 3))),
        ]
        for x, re in ((c64, f32), (f32, f32), (f64, f64)):
            cases += [
                ("wavelet._dwt_cuda_kernel", wavelet._dwt_cuda_kernel, (a(x, 3), a(re, 1), a(re, 1), i64, a(x, 3), a(x, 3))),
                ("wavelet._idwt_cuda_kernel", wavelet._idwt_cuda_kernel, (a(x, 3), a(x, 3), a(re, 1), a(re, 1), i64, a(x, 3))),
            ]
    return cases


def test_every_cuda_kernel_compiles_for_an_h100(monkeypatch):
    """Each numba.cuda kernel typed, lowered and compiled to PTX for sm_90 (needs NVVM, no GPU): the CUDA
    simulator runs the kernels as Python and so never types them (e.g. the builtin ``min``/``max``, which
    Numba 0.68's own CUDA target fails to type; numba-cuda takes them)."""
    from numba import cuda
    from numba import types as t
    from numba.cuda import dispatcher

    # device functions ask the current device for its compute capability: say sm_90 instead of a driver
    monkeypatch.setattr(dispatcher, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(9, 0)),
                        raising=False)

    def probe(out):
        out[0] = 1.0

    try:
        cuda.compile_ptx(probe, (t.float32[::1],), cc=(9, 0))
    except Exception as exc:  # no NVVM here (or no CUDA target at all)
        pytest.skip(f"numba.cuda cannot compile PTX here: {type(exc).__name__}")
    failed = []
    for name, kernel, signature in _kernel_signatures():
        try:
            cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        except Exception as exc:
            failed.append(f"{name}{tuple(str(s) for s in signature)}: {type(exc).__name__}: {str(exc)[:300]}")
    assert not failed, "\n".join(failed)
