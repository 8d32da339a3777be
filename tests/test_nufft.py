"""NUFFT operator and density compensation against a direct non-uniform DFT in float64."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
from cudasim import simulated_output
from mrirecon.kernels.fft import fftc

from mrirecon import sim
from mrirecon.dcf import pipe_menon_dcf, ramp_dcf
from mrirecon.errors import InputError
from mrirecon.nufft import NUFFT, StackedNUFFT, nufft_plan, stack_partitions


def ndft_matrix(coord: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """E[m, r] = prod(N)^(-1/2) exp(-2 pi i k_m . r / N), r centred (index - N//2), float64."""
    axes = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    r = np.stack([a.ravel() for a in axes], axis=-1).astype(np.float64)
    phase = (coord.reshape(-1, len(shape)) / np.array(shape)) @ r.T
    return np.exp(-2j * np.pi * phase) / np.sqrt(np.prod(shape))


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _random_coord(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.random((n, len(shape))) - 0.5) * np.array(shape)


SHAPES = [(20, 24), (10, 12, 8)]  # even and mixed sizes; 3D with a short axis


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "accuracy, limit",
    # measured (seed 1234 here; seed 0 gave 3.2e-4 / 4.3e-4 and 7.1e-7 / 8.1e-7): default < 5e-4, high < 1e-6
    [("default", 1e-3), ("high", 1e-5)],
)
def test_matches_ndft(rng, shape, accuracy, limit):
    coord = _random_coord(rng, 400, shape)
    images = _complex(rng, (3,) + shape)
    e = ndft_matrix(coord, shape)
    a = NUFFT(coord, shape, (3,), accuracy=accuracy)
    y = a(images.astype(np.complex64))
    expected = images.reshape(3, -1) @ e.T
    assert y.dtype == np.complex64 and y.shape == (3, 400)
    assert np.linalg.norm(y - expected) / np.linalg.norm(expected) < limit

    values = _complex(rng, (3, 400))
    x = a.H(values.astype(np.complex64))
    expected_adj = (values @ e.conj()).reshape((3,) + shape)
    assert np.linalg.norm(x - expected_adj) / np.linalg.norm(expected_adj) < limit


def test_3d_radial_matches_ndft(rng):
    """A structured trajectory: 3D radial spokes pile thousands of samples onto the k-space centre."""
    shape = (12, 12, 12)
    coord = sim.radial_3d(200, 24, matrix=12).reshape(-1, 3)
    x = _complex(rng, shape)
    e = ndft_matrix(coord, shape)
    y = e @ x.ravel()
    adj = (e.conj().T @ y).reshape(shape)
    for accuracy, limit in [("default", 1e-3), ("high", 1e-5)]:  # measured 5.9e-4 / 4.1e-4; 7.4e-7 / 1.2e-6
        a = NUFFT(coord, shape, accuracy=accuracy)
        assert np.linalg.norm(a(x.astype(np.complex64)) - y) / np.linalg.norm(y) < limit
        assert np.linalg.norm(a.H(y.astype(np.complex64)) - adj) / np.linalg.norm(adj) < limit


@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_identity(rng, shape):
    a = NUFFT(_random_coord(rng, 30 * 17, shape).reshape(30, 17, len(shape)), shape, (2,))
    x, y = _complex(rng, a.ishape).astype(np.complex64), _complex(rng, a.oshape).astype(np.complex64)
    ax = a(x).astype(np.complex128)
    lhs, rhs = np.vdot(ax, y), np.vdot(x, a.H(y).astype(np.complex128))
    assert abs(lhs - rhs) / (np.linalg.norm(ax) * np.linalg.norm(y)) < 5e-7  # float32 sums: measured 6e-9 .. 1.1e-7 over 16 seeds


@pytest.mark.parametrize("shape", SHAPES)
def test_toeplitz_normal_matches_ndft(rng, shape):
    coord = _random_coord(rng, 500, shape)
    e = ndft_matrix(coord, shape)
    x = _complex(rng, (2,) + shape)
    expected = (x.reshape(2, -1) @ (e.T @ e.conj())).reshape(x.shape)  # E^H E x, row vectors
    a = NUFFT(coord, shape, (2,))
    got = a.N(x.astype(np.complex64))
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-3  # measured 1.1e-4 (2D), 1.3e-4 (3D)
    plain = NUFFT(coord, shape, (2,), toeplitz=False).N(x.astype(np.complex64))
    assert np.linalg.norm(plain - expected) / np.linalg.norm(expected) < 1e-3  # measured 3.3e-4, 4.8e-4


def test_cartesian_positions_give_the_centred_fft(rng):
    shape = (16, 12)
    ky, kx = np.meshgrid(np.arange(16) - 8, np.arange(12) - 6, indexing="ij")
    coord = np.stack([ky, kx], axis=-1).astype(np.float64)
    x = _complex(rng, shape).astype(np.complex64)
    y = NUFFT(coord, shape, accuracy="high")(x)
    np.testing.assert_allclose(y, fftc(x), atol=2e-6 * np.abs(fftc(x)).max())  # measured 6.6e-7


def test_plans_are_reused(rng):
    coord = _random_coord(rng, 100, (16, 16))
    assert NUFFT(coord, (16, 16)).plan is NUFFT(coord.copy(), (16, 16), (4,)).plan
    assert NUFFT(coord, (16, 16)).plan is not NUFFT(coord, (16, 16), accuracy="high").plan


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coord": np.full((5, 2), 9.0)}, "leaves k-space"),
        ({"coord": np.zeros((5, 3))}, "coordinates per sample"),
        ({"coord": np.full((5, 2), np.nan)}, "NaN"),
        ({"accuracy": "best"}, "unknown NUFFT accuracy"),
        ({"width": 40}, "kernel width"),
        ({"oversamp": 1.0}, "oversampling"),
    ],
)
def test_bad_input_is_reported(kwargs, match):
    args = {"coord": np.zeros((5, 2)), **kwargs}
    coord = args.pop("coord")
    with pytest.raises(InputError, match=match):
        NUFFT(coord, (16, 16), **args)


def test_pipe_menon_flattens_the_gridded_density():
    """Converged weights make the kernel-smoothed sampling density flat inside the sampled disc."""
    n = 64
    traj = sim.radial(101, 2 * n, matrix=n, ordering="golden")
    plan = nufft_plan(traj, (n, n), 2.0, 4)  # the Pipe-Menon defaults
    ones = np.ones((plan.n_samples, 1), np.complex64)
    gy, gx = np.meshgrid(*[np.arange(g) - g // 2 for g in plan.grid_shape], indexing="ij")
    grid_centre = np.hypot(gy, gx) < 0.4 * plan.grid_shape[0]
    sample_centre = np.hypot(traj[..., 0], traj[..., 1]).ravel() < 0.4 * n

    def flatness(w):
        """Relative spread of the gridded density (central 80% of the disc) and of C w at the samples."""
        grid = plan.spread(ones * w.reshape(-1, 1))
        at_samples = plan.interp(grid).real[sample_centre, 0]
        gridded = np.abs(np.fft.fftshift(grid[..., 0]))[grid_centre]
        return gridded.std() / gridded.mean(), at_samples.std() / at_samples.mean()

    # measured: unweighted 1.31 (gridded); ramp 0.23; Pipe-Menon 15 iterations 0.114 and 0.0040
    assert flatness(np.ones(plan.n_samples))[0] > 1.0
    assert flatness(ramp_dcf(traj))[0] > 0.2
    w = pipe_menon_dcf(traj, (n, n), n_iter=15)
    gridded, at_samples = flatness(w)
    assert gridded < 0.13 and at_samples < 0.005
    # Cartesian units: the weights add up to the sampled disc area (measured 0.979)
    assert abs(w.sum() / (np.pi * (n / 2) ** 2) - 1) < 0.03


def test_ramp_dcf_areas():
    traj = sim.radial(64, 128, ordering="uniform")
    w = ramp_dcf(traj)
    assert abs(w.sum() / (np.pi * 64**2) - 1) < 2e-4  # rings of all spokes tile the disc: measured 6e-5
    w3 = ramp_dcf(sim.radial_3d(4000, 32))
    assert abs(w3.sum() / (4 / 3 * np.pi * 16**3) - 1) < 4e-3  # shells tile the ball: measured 2.0e-3
    with pytest.raises(InputError, match="radial trajectory"):
        ramp_dcf(np.zeros((10, 2)))


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import nufft as k

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(3)
    errs = []
    for shape in [(10, 12), (6, 8, 6)]:
        coord = (rng.random((37, len(shape))) - 0.5) * np.array(shape)
        plan = k.NufftPlan(coord, shape, 1.25, 4)
        n_grid = int(np.prod(plan.grid_shape))
        grid = (rng.standard_normal((n_grid, 2)) + 1j * rng.standard_normal((n_grid, 2))).astype(np.complex64)
        vals = (rng.standard_normal((37, 2)) + 1j * rng.standard_normal((37, 2))).astype(np.complex64)
        dens = np.float32(k._TABLE_DENSITY)
        out = np.zeros((37, 2), np.complex64)
        k.interp_cuda(grid, plan.u, out, plan.width, plan.table, dens, plan.order, *plan._grid3)
        ref = plan.interp(grid.reshape(plan.grid_shape + (2,)))
        errs.append(np.abs(out - ref).max() / np.abs(ref).max())
        spread = np.zeros((n_grid, 2), np.complex64)
        k.spread_cuda(vals, plan.u, spread, plan.width, plan.table, dens, plan.order, *plan._grid3)
        ref = plan.spread(vals).reshape(spread.shape)
        errs.append(np.abs(spread - ref).max() / np.abs(ref).max())
    print(*errs)
    """
)


def test_cuda_kernels_match_cpu_under_simulator():
    """The numba.cuda twins run under NUMBA_ENABLE_CUDASIM=1 (set before numba.cuda is imported)."""
    out = simulated_output(_SIM_SCRIPT)
    errs = [float(v) for v in out]
    assert len(errs) == 4 and max(errs) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES)
def test_cupy_nufft_matches_cpu(rng, shape):
    import cupy as cp

    coord = _random_coord(rng, 3000, shape)
    x = _complex(rng, (4,) + shape).astype(np.complex64)
    y = _complex(rng, (4, 3000)).astype(np.complex64)
    cpu = NUFFT(coord, shape, (4,))
    gpu = NUFFT(cp.asarray(coord), shape, (4,))
    for got, ref in [
        (gpu(cp.asarray(x)), cpu(x)),
        (gpu.H(cp.asarray(y)), cpu.H(y)),
        (gpu.N(cp.asarray(x)), cpu.N(x)),
    ]:
        got = cp.asnumpy(got)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5


@pytest.mark.parametrize("kind", ["stars", "spirals"])
@pytest.mark.parametrize("accuracy, limit", [("default", 1e-3), ("high", 1e-5)])  # measured <= 3.7e-4 and <= 8.7e-7
def test_stacked_nufft_matches_ndft(rng, kind, accuracy, limit):
    """FFT along kz + a 2D NUFFT per (rotated) partition = the 3D non-uniform DFT, forward and adjoint."""
    shape = (6, 16, 16)
    traj = sim.stack_of_stars(8, 32, 6, matrix=16) if kind == "stars" else sim.stack_of_spirals(3, 100, 16, 6)
    assert stack_partitions(traj, shape) is not None and stack_partitions(sim.radial_3d(50, 20), shape) is None
    e = ndft_matrix(traj, shape)
    a = StackedNUFFT(traj, shape, (2,), accuracy=accuracy)
    images = _complex(rng, (2,) + shape)
    expected = (images.reshape(2, -1) @ e.T).reshape((2,) + traj.shape[:-1])
    y = a(images.astype(np.complex64))
    assert np.linalg.norm(y - expected) / np.linalg.norm(expected) < limit
    values = _complex(rng, expected.shape)
    expected_adj = (values.reshape(2, -1) @ e.conj()).reshape((2,) + shape)
    assert np.linalg.norm(a.H(values.astype(np.complex64)) - expected_adj) / np.linalg.norm(expected_adj) < limit
    x = images.astype(np.complex64)
    direct = a.H(a(x))
    assert np.linalg.norm(a.N(x) - direct) / np.linalg.norm(direct) < limit  # Toeplitz per kz row
