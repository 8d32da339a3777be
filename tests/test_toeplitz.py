"""Fused Toeplitz SENSE normal operator (``nufft.ToeplitzSenseNormal``, ``kernels/toeplitz.py``) against
the non-uniform DFT and the unfused composition ``S^H (NUFFT.N) S``."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cudasim import simulated_output
from mrirecon.kernels.toeplitz import (
    crop_combine,
    expand_into_grid,
    toeplitz_convolve,
    toeplitz_fft,
)
from test_nufft import ndft_matrix

from mrirecon import sim
from mrirecon.errors import InputError
from mrirecon.linop import Sense
from mrirecon.methods.noncartesian import SenseNUFFT
from mrirecon.nufft import NUFFT, StackedNUFFT, ToeplitzSenseNormal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_timing

SHAPES = [(20, 24), (21, 15), (10, 12, 8), (7, 9, 5)]  # even, odd, 3D even, 3D odd


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _problem(rng: np.random.Generator, shape: tuple[int, ...], n_coils: int = 3, n_samples: int = 600):
    coord = (rng.random((n_samples, len(shape))) - 0.5) * np.array(shape)
    return coord, _complex(rng, (n_coils,) + shape), _complex(rng, shape)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_normal_matches_ndft_and_composition(rng, shape):
    coord, maps, x = _problem(rng, shape)
    nufft = NUFFT(coord, shape, (3,))
    e = ndft_matrix(coord, shape)
    coils = maps.astype(np.complex128) * x
    exact = np.einsum("c...,c...->...", maps.conj(), ((coils.reshape(3, -1) @ e.T) @ e.conj()).reshape(coils.shape))
    composed = Sense(maps).H(nufft.N(Sense(maps)(x)))
    for prune in (True, False):
        got = ToeplitzSenseNormal(nufft, maps, prune=prune)(x)
        assert got.dtype == np.complex64 and got.shape == shape
        assert _rel(got, exact) < 1e-3  # NUFFT accuracy: measured 4.1e-5 .. 8.7e-5
        assert _rel(got, composed) < 1e-5  # float32 rounding: measured 1.2e-7 .. 1.4e-7


@pytest.mark.parametrize("shape", SHAPES)
def test_fused_normal_is_hermitian(rng, shape):
    coord, maps, x = _problem(rng, shape)
    op = ToeplitzSenseNormal(NUFFT(coord, shape, (3,)), maps)
    y = _complex(rng, shape)
    nx, ny = op(x).astype(np.complex128), op(y).astype(np.complex128)
    lhs, rhs = np.vdot(nx, y), np.vdot(x, ny)
    assert abs(lhs - rhs) / (np.linalg.norm(nx) * np.linalg.norm(y)) < 1e-6  # measured 2e-9 .. 1e-8
    assert np.vdot(x, nx).real > 0 and abs(np.vdot(x, nx).imag) < 1e-5 * abs(np.vdot(x, nx))  # PSD, real form


def test_buffer_is_reused_and_overwritten(rng):
    """One grid per operator; a second call (stale grid contents) gives the same result."""
    shape = (16, 18)
    coord, maps, x = _problem(rng, shape)
    op = ToeplitzSenseNormal(NUFFT(coord, shape, (3,)), maps)
    first = op(x)
    grid = op.buffer()
    assert grid.shape == (3, 32, 36) and op.buffer() is grid
    op(_complex(rng, shape))
    np.testing.assert_array_equal(op(x), first)
    assert op.buffer() is grid


@pytest.mark.parametrize("shape", [(6, 10), (5, 7), (4, 6, 8), (3, 5, 7)])
def test_expand_and_crop_combine(rng, shape):
    maps, x = _complex(rng, (2,) + shape), _complex(rng, shape)
    grid_shape = tuple(2 * n for n in shape)
    grid = _complex(rng, (2,) + grid_shape)  # stale contents: the expand must overwrite all of them
    expand_into_grid(x, maps, grid)
    corner = (slice(None),) + tuple(slice(0, n) for n in shape)
    np.testing.assert_allclose(grid[corner], maps * x, rtol=1e-6, atol=1e-6)  # FMA rounding
    grid[corner] = 0
    assert not grid.any()  # the padding is zero
    grid = _complex(rng, (2,) + grid_shape)
    corner = grid[corner]
    np.testing.assert_allclose(crop_combine(grid, maps), (maps.conj() * corner).sum(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 12), (7, 5), (4, 6, 8), (3, 5, 7)])
def test_pruned_fft_matches_unpruned(rng, shape):
    """The pruned forward FFT gives the full spectrum; the pruned inverse the corner of the full inverse."""
    grid_shape = tuple(2 * n for n in shape)
    corner = (slice(None),) + tuple(slice(0, n) for n in shape)
    axes = tuple(range(1, len(shape) + 1))
    grid = np.zeros((2,) + grid_shape, np.complex64)
    grid[corner] = _complex(rng, (2,) + shape)
    full = np.fft.fftn(grid, axes=axes)
    np.testing.assert_allclose(toeplitz_fft(grid.copy(), shape, inverse=False), full, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(toeplitz_fft(grid.copy(), shape, inverse=False, prune=False), full, rtol=1e-5, atol=1e-4)
    spectrum = _complex(rng, (2,) + grid_shape)
    full_inv = np.fft.ifftn(spectrum, axes=axes, norm="forward")
    pruned = toeplitz_fft(spectrum.copy(), shape, inverse=True)[corner]
    np.testing.assert_allclose(pruned, full_inv[corner], rtol=1e-5, atol=1e-4)
    weights = rng.random(grid_shape).astype(np.float32)
    a = toeplitz_convolve(grid.copy(), weights, shape)[corner]
    b = toeplitz_convolve(grid.copy(), weights, shape, prune=False)[corner]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4 * np.abs(b).max())


def test_pruned_fft_out_of_place_is_put_back(rng, monkeypatch):
    """scipy may return a new array despite ``overwrite_x``: the pruned passes then copy it back."""
    import scipy.fft

    shape = (6, 5)
    corner = (slice(None), slice(0, 6), slice(0, 5))
    grid = np.zeros((2, 12, 10), np.complex64)
    grid[corner] = _complex(rng, (2,) + shape)
    weights = rng.random((12, 10)).astype(np.float32)
    expected = toeplitz_convolve(grid.copy(), weights, shape, prune=False)[corner]
    for name in ("fft", "ifft"):
        original = getattr(scipy.fft, name)
        monkeypatch.setattr(scipy.fft, name, lambda *a, _f=original, **k: _f(*a, **{**k, "overwrite_x": False}).copy())
    got = toeplitz_convolve(grid.copy(), weights, shape)[corner]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4 * np.abs(expected).max())


def test_sense_nufft_uses_the_fused_normal_where_it_applies(rng):
    shape = (12, 14)
    coord, maps, x = _problem(rng, shape)
    fused = SenseNUFFT(NUFFT(coord, shape, (3,)), maps)
    plain = SenseNUFFT(NUFFT(coord, shape, (3,), toeplitz=False), maps)
    assert isinstance(fused.fused_normal, ToeplitzSenseNormal) and plain.fused_normal is None
    assert _rel(fused.N(x), plain.N(x)) < 1e-3  # Toeplitz vs interp + spread: NUFFT accuracy
    np.testing.assert_allclose(fused.N(x), fused.sense.H(fused.nufft.N(fused.sense(x))), rtol=1e-5, atol=1e-5)

    stack = sim.stack_of_stars(6, 24, 4, matrix=12)
    vol = (4, 12, 12)
    stacked = SenseNUFFT(StackedNUFFT(stack, vol, (2,)), _complex(rng, (2,) + vol))
    assert stacked.fused_normal is None  # the stack runs its per-row normals: fallback
    v = _complex(rng, vol)
    np.testing.assert_allclose(stacked.N(v), stacked.sense.H(stacked.nufft.N(stacked.sense(v))), rtol=1e-6)


def test_bad_maps_are_reported(rng):
    coord, maps, _ = _problem(rng, (10, 12))
    with pytest.raises(InputError, match="coil maps"):
        ToeplitzSenseNormal(NUFFT(coord, (10, 12), (3,)), maps[:, :8])


def test_floor_is_the_doubled_fft_pair_and_two_coil_passes(monkeypatch):
    """``toeplitz_sense_iteration_floor`` times three parts: the FFT pair on the 2N grid of every coil,
    the expand and the combine on the (coil, *N) images (each timing stubbed to 0.25 s here)."""
    shapes = []
    real_random = bench_timing._random
    monkeypatch.setattr(bench_timing, "_random", lambda xp, shape, seed: shapes.append(shape) or real_random(xp, shape, seed))
    monkeypatch.setattr(bench_timing, "best_time", lambda fn, repeats, xp=np: (fn(), 0.25)[1])
    assert bench_timing.toeplitz_sense_iteration_floor(np, 3, (6, 5), 1) == 0.75
    assert sorted(shapes) == sorted([(3, 12, 10), (3, 6, 5), (6, 5), (3, 6, 5)])


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import toeplitz as t

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(5)
    c = lambda s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    errs = []
    for shape in [(1, 5, 6), (3, 4, 5)]:
        grid_shape = tuple(2 * n if n > 1 else 1 for n in shape)
        maps, x = c((2,) + shape), c(shape)
        ref = c((2,) + grid_shape)
        got = c((2,) + grid_shape)
        t.expand_into_grid_cpu(x, maps, ref)
        t.expand_into_grid_cuda(x, maps, got)
        errs.append(np.abs(got - ref).max())
        grid = c((2,) + grid_shape)
        ref, got = np.empty(shape, np.complex64), np.empty(shape, np.complex64)
        t.crop_combine_cpu(grid, maps, ref)
        t.crop_combine_cuda(grid, maps, got)
        errs.append(np.abs(got - ref).max() / np.abs(ref).max())
    print(*errs)
    """
)


def test_cuda_kernels_match_cpu_under_simulator():
    """The numba.cuda twins run under NUMBA_ENABLE_CUDASIM=1 (set before numba.cuda is imported)."""
    out = simulated_output(_SIM_SCRIPT)
    errs = [float(v) for v in out]
    assert len(errs) == 4 and max(errs) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(20, 24), (21, 15), (10, 12, 8)])
def test_cupy_fused_normal_matches_cpu(rng, shape):
    import cupy as cp

    coord, maps, x = _problem(rng, shape, n_samples=3000)
    cpu = ToeplitzSenseNormal(NUFFT(coord, shape, (3,)), maps)
    gpu = ToeplitzSenseNormal(NUFFT(cp.asarray(coord), shape, (3,)), cp.asarray(maps))
    got = cp.asnumpy(gpu(cp.asarray(x)))
    assert _rel(got, cpu(x)) < 1e-5
