"""Fused Cartesian SENSE operator, fused PDHG dual blocks and the fused solver kernels, each against an
independent NumPy reference (centred FFTs by explicit shifts, the unfused prox maps, plain array code)."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from cudasim import simulated_output
from mrirecon.finite_difference import FiniteDifference
from mrirecon.kernels import fused
from mrirecon.linop import FFT, CartesianSense, Sampling, Sense, SenseNormal
from mrirecon.prox import project_linf_ball, prox_l2_conjugate
from mrirecon.solvers import conjugate_gradient, pdhg

# even 2D and 3D (checkerboard folding), odd 2D and mixed 3D (shift folding), a 2D size over one CPU block
SHAPES = [(4, 12, 10), (2, 6, 4, 8), (3, 9, 7), (2, 6, 5, 8), (3, 130, 70)]


def _complex(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.complex64) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def _fftc(x: np.ndarray, axes: tuple[int, ...], inverse: bool = False) -> np.ndarray:
    fn = np.fft.ifftn if inverse else np.fft.fftn
    return np.fft.fftshift(fn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _reference(maps: np.ndarray, mask: np.ndarray):
    """A, A^H of Cartesian SENSE in complex128 with explicit shifts."""
    axes = tuple(range(1, maps.ndim))
    m = maps.astype(np.complex128)

    def forward(x):
        return mask * _fftc(m * x, axes)

    def adjoint(y):
        return (np.conj(m) * _fftc(mask * y, axes, inverse=True)).sum(axis=0)

    return forward, adjoint


@pytest.mark.parametrize("shape", SHAPES)
def test_cartesian_sense_matches_shifted_reference(rng, shape):
    maps, x, y = _complex(rng, shape), _complex(rng, shape[1:]), _complex(rng, shape)
    mask = rng.random(shape[1:]) < 0.4
    a = Sampling(shape, mask) @ FFT(shape, ndim=len(shape) - 1) @ Sense(maps)
    assert isinstance(a, CartesianSense) and a.even == all(n % 2 == 0 for n in shape[1:])
    forward, adjoint = _reference(maps, mask)
    ax, ahy, nx = a(x), a.H(y), a.N(x)
    assert ax.dtype == ahy.dtype == nx.dtype == np.complex64
    scale = np.abs(forward(x)).max()
    # complex64 round-off: measured max differences <= 2.2e-7 of the largest entry; a missed shift,
    # checkerboard sign or conj gives O(1)
    np.testing.assert_allclose(ax, forward(x), atol=2e-6 * scale, rtol=0)
    np.testing.assert_allclose(ahy, adjoint(y), atol=2e-6 * np.abs(adjoint(y)).max(), rtol=0)
    np.testing.assert_allclose(nx, adjoint(forward(x)), atol=2e-6 * np.abs(adjoint(forward(x))).max(), rtol=0)
    # the normal in the operator's own coordinates, with lam, as the sense method runs it
    normal = SenseNormal(maps, mask, lam=0.3)
    u = normal.uncentre(x)
    expected = normal.uncentre((adjoint(forward(x)) + 0.3 * x).astype(np.complex64))
    np.testing.assert_allclose(normal(u), expected, atol=2e-6 * np.abs(expected).max(), rtol=0)
    np.testing.assert_array_equal(normal.centre(u), x)


def test_composition_without_the_pattern_stays_generic(rng):
    shape = (3, 8, 6)
    maps, mask = _complex(rng, shape), rng.random(shape[1:]) < 0.5
    partial = FFT(shape, ndim=1) @ Sense(maps)  # FFT over one axis only: not Cartesian SENSE
    assert not isinstance(Sampling(shape, mask) @ partial, CartesianSense)
    assert not isinstance(Sampling(shape, mask) @ FFT(shape, ndim=1) @ Sense(maps), CartesianSense)


@pytest.mark.parametrize("shape", SHAPES)
def test_sense_data_dual_matches_prox_and_operators(rng, shape):
    """One fused dual step equals u <- prox_l2_conjugate(s, u + s A x, y) and returns A^H u."""
    maps, x = _complex(rng, shape), _complex(rng, shape[1:])
    mask = rng.random(shape[1:]) < 0.4
    y, u0 = _complex(rng, shape) * mask, _complex(rng, shape)
    forward, adjoint = _reference(maps, mask)
    sigma = 0.37
    expected_u = prox_l2_conjugate(sigma, u0 + sigma * forward(x), y)
    a = CartesianSense(maps, mask)
    block = a.l2_dual(y)
    u = np.ascontiguousarray(a.uncentre_kspace(u0))
    back = block.dual_step(u, x, sigma)
    assert back.dtype == np.complex64
    # measured <= 1.7e-7 of the largest entry
    np.testing.assert_allclose(a.centre_kspace(u), expected_u, atol=2e-6 * np.abs(expected_u).max(), rtol=0)
    expected_back = adjoint(expected_u)
    np.testing.assert_allclose(back, expected_back, atol=2e-6 * np.abs(expected_back).max(), rtol=0)


@pytest.mark.parametrize("shape", [(12, 9), (5, 6, 7), (16, 16)])
@pytest.mark.parametrize("group", [None, 0])
def test_linf_dual_matches_projection_and_differences(rng, shape, group):
    g = FiniteDifference(shape)
    x, v0 = _complex(rng, shape), _complex(rng, g.oshape)
    sigma, bound = 0.4, 0.9
    expected_v = project_linf_ball(v0 + sigma * g(x), bound, group)
    v = v0.copy()
    back = g.linf_dual(bound, group).dual_step(v, x, sigma)
    # measured <= 2.1e-7 (v) and 5.3e-7 (G^H v), complex64 round-off; a wrong neighbour or projection gives O(0.1)
    np.testing.assert_allclose(v, expected_v, atol=2e-6, rtol=0)
    np.testing.assert_allclose(back, g.H(expected_v), atol=4e-6, rtol=0)
    assert np.abs(v).max() <= bound * (1 + 1e-6)


def test_tv_dual_kernel_and_its_fallback_match_the_unfused_step(rng):
    """The Numba TV kernel (2D/3D, trailing axes; complex64 and complex128) and the unfused step that a 4D
    image falls back to both equal the difference, projection and adjoint applied one by one."""
    for shape, ndim, dtype, kernel in [((7, 10), 2, np.complex64, True), ((4, 5, 6), 2, np.complex128, True),
                                       ((3, 4, 5, 6), 3, np.complex64, False)]:
        g = FiniteDifference(shape, ndim=ndim)
        x, v0 = _complex(rng, shape, dtype), _complex(rng, g.oshape, dtype)
        assert fused.tv_kernel_fits(v0, x, g.axes) is kernel
        for group in (None, 0):
            expected = project_linf_ball(v0 + 0.3 * g(x), 0.8, group)
            v = v0.copy()
            back = g.linf_dual(0.8, group).dual_step(v, x, 0.3)
            np.testing.assert_allclose(v, expected, atol=2e-6, rtol=0)
            np.testing.assert_allclose(back, g.H(expected), atol=4e-6, rtol=0)


def test_apply_weight_matches_numpy(rng):
    from mrirecon.kernels.coil import apply_weight

    coils, weight = _complex(rng, (3, 130, 70)), rng.standard_normal((130, 70)).astype(np.float32)
    expected = coils * weight
    apply_weight(coils, weight)  # the Numba kernel (C-contiguous complex64)
    np.testing.assert_array_equal(coils, expected)  # one float32 product per component: exact
    strided = _complex(rng, (3, 70, 130)).transpose(0, 2, 1)  # not C-contiguous: NumPy's multiply
    expected = strided * weight
    apply_weight(strided, weight)
    np.testing.assert_array_equal(strided, expected)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, np.float64])
def test_cg_update_matches_numpy(rng, dtype):
    n = 20000  # more than two CPU blocks
    x, r, p, ap = (_complex(rng, (n,), np.complex128) for _ in range(4))
    if dtype == np.float64:
        x, r, p, ap = (a.real.copy() for a in (x, r, p, ap))
    x, r, p, ap = (a.astype(dtype) for a in (x, r, p, ap))
    alpha = 0.37
    ex, er = x + alpha * p, r - alpha * ap
    rr = fused.cg_update(x, r, p, ap, alpha)
    tol = 1e-6 if dtype == np.complex64 else 1e-12
    np.testing.assert_allclose(x, ex, atol=tol * 10, rtol=0)
    np.testing.assert_allclose(r, er, atol=tol * 10, rtol=0)
    assert rr == pytest.approx(float(np.vdot(er, er).real), rel=tol * 10)


def test_pdhg_fused_blocks_equal_generic_pairs(rng):
    """TV-regularised SENSE by PDHG: fused dual blocks give the iterates of operator + prox pairs."""
    shape = (4, 16, 12)
    maps, mask = _complex(rng, shape), rng.random(shape[1:]) < 0.5
    truth = np.zeros(shape[1:], np.complex64)
    truth[4:12, 3:9] = 1.0
    forward, _ = _reference(maps, mask)
    y = (forward(truth) + 0.01 * _complex(rng, shape) * mask).astype(np.complex64)
    a = CartesianSense(maps, mask)
    g = FiniteDifference(shape[1:])
    x0 = np.zeros(shape[1:], np.complex64)
    args = {"x0": x0, "tau": 0.2, "sigma": (0.5, 0.1), "max_iter": 40}
    fused_x = pdhg([a.l2_dual(y), g.linf_dual(0.02, None)], [None, None], **args)
    generic_x = pdhg([a, g], [lambda s, v: prox_l2_conjugate(s, v, y), lambda s, v: project_linf_ball(v, 0.02)], **args)
    assert np.linalg.norm(fused_x - truth) < 0.2 * np.linalg.norm(truth)  # it reconstructs: measured 0.006-0.044
    # complex64 round-off over 40 iterations: measured 6e-8 to 7e-8 relative (seeds 0-2)
    assert np.linalg.norm(fused_x - generic_x) < 1e-6 * np.linalg.norm(generic_x)


def test_cg_on_sense_normal_solves_the_system(rng):
    """CG (fused update) on SenseNormal reaches the complex128 least-squares solution."""
    shape = (4, 10, 8)
    maps, mask = _complex(rng, shape), rng.random(shape[1:]) < 0.6
    y = _complex(rng, shape) * mask
    forward, adjoint = _reference(maps, mask)
    n = int(np.prod(shape[1:]))
    basis = np.eye(n).reshape((n,) + shape[1:])
    matrix = np.stack([adjoint(forward(b)).ravel() for b in basis], axis=1) + 0.1 * np.eye(n)
    exact = np.linalg.solve(matrix, adjoint(y).ravel()).reshape(shape[1:])
    normal = SenseNormal(maps, mask, lam=0.1)
    rhs = normal.uncentre(CartesianSense(maps, mask).H(y))
    x = normal.centre(conjugate_gradient(normal, rhs, max_iter=200, tol=1e-7))
    np.testing.assert_allclose(x, exact, atol=5e-6 * np.abs(exact).max(), rtol=0)  # measured 2.7e-7 to 4e-7


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import fused

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(7)
    c = lambda s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    n_coils, n = 3, 99  # 297 elements: a partial thread block
    u, z, y = c((n_coils, n)), c((n_coils, n)), c((n_coils, n))
    w = (rng.random(n) - 0.5).astype(np.float32)
    u_cpu, z_cpu, u_gpu, z_gpu = u.copy(), z.copy(), u.copy(), z.copy()
    fused.l2_dual_update_cpu(u_cpu, z_cpu, y, w, 0.3)
    fused.l2_dual_update_cuda(0.3, u_gpu, z_gpu, y, w)
    u_ref = (u + 0.3 * (w * z - y)) / 1.3
    print(np.abs(u_gpu - u_cpu).max(), np.abs(z_gpu - z_cpu).max(), np.abs(u_cpu - u_ref).max(), np.abs(z_cpu - w * u_ref).max())
    """
)


def test_l2_dual_cuda_twin_matches_cpu_under_simulator():
    """The numba.cuda twin of the data-dual update under NUMBA_ENABLE_CUDASIM=1, against the CPU kernel."""
    out = simulated_output(_SIM_SCRIPT)
    errors = [float(v) for v in out]
    assert len(errors) == 4 and max(errors) < 1e-6, errors


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4, 12, 10), (3, 9, 7)])
def test_cartesian_sense_and_dual_on_cupy_match_cpu(rng, shape):
    import cupy as cp

    maps, x, y = _complex(rng, shape), _complex(rng, shape[1:]), _complex(rng, shape)
    mask = rng.random(shape[1:]) < 0.4
    cpu, gpu = CartesianSense(maps, mask), CartesianSense(cp.asarray(maps), cp.asarray(mask))
    np.testing.assert_allclose(cp.asnumpy(gpu(cp.asarray(x))), cpu(x), atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(gpu.H(cp.asarray(y))), cpu.H(y), atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(gpu.N(cp.asarray(x))), cpu.N(x), atol=1e-4)
    u_cpu = np.ascontiguousarray(cpu.uncentre_kspace(y * mask))
    u_gpu = cp.ascontiguousarray(gpu.uncentre_kspace(cp.asarray(y * mask)))
    back_cpu = cpu.l2_dual(y * mask).dual_step(u_cpu, x, 0.3)
    back_gpu = gpu.l2_dual(cp.asarray(y * mask)).dual_step(u_gpu, cp.asarray(x), 0.3)
    np.testing.assert_allclose(cp.asnumpy(u_gpu), u_cpu, atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(back_gpu), back_cpu, atol=1e-4)


@pytest.mark.parametrize("contiguous", [True, False])
def test_batched_cg_update_and_real_dot_match_numpy(rng, contiguous):
    """Per-system steps (one of them 0: a frozen system) and per-system |r|^2 and Re <u, v>, kept as
    (batch, 1, 1) arrays; non-contiguous arrays take the xp twin."""
    shape = (3, 2, 90, 100)  # 9000 elements per system: more than one CPU block
    x, r, p, ap = (_complex(rng, shape) for _ in range(4))
    if not contiguous:
        x, r, p, ap = (np.swapaxes(a, -1, -2).copy().swapaxes(-1, -2) for a in (x, r, p, ap))
    alpha = np.array([0.37, 0.0, -1.2], dtype=np.float32).reshape(3, 1, 1, 1)
    ex, er = x + alpha * p, r - alpha * ap
    dot = fused.real_dot(p, ap, 1)
    rr = fused.cg_update(x, r, p, ap, alpha, batch_ndim=1)
    assert rr.shape == dot.shape == (3, 1, 1, 1) and rr.dtype == dot.dtype == np.float64
    np.testing.assert_allclose(x, ex, atol=1e-5, rtol=0)
    np.testing.assert_allclose(r, er, atol=1e-5, rtol=0)
    rr_ref = [np.vdot(er[b].astype(np.complex128), er[b]).real for b in range(3)]
    dot_ref = [np.vdot(p[b].astype(np.complex128), ap[b]).real for b in range(3)]
    np.testing.assert_allclose(rr.ravel(), rr_ref, rtol=1e-5)
    np.testing.assert_allclose(dot.ravel(), dot_ref, rtol=1e-4, atol=1e-2)  # a sum of +- terms: cancellation


_SIM_CG_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import fused

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(5)
    c = lambda s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    n_batch, n = 3, 8300  # two thread blocks per system (grid-stride loops with a ragged end)
    x, r, p, ap = (c((n_batch, n)) for _ in range(4))
    a = np.array([0.4, 0.0, -0.7], dtype=np.float32)
    xc, rc, xg, rg = x.copy(), r.copy(), x.copy(), r.copy()
    rr_cpu, rr_gpu, dot_gpu = np.empty(n_batch), np.zeros(n_batch), np.zeros(n_batch)
    fused.cg_update_batched_cpu(xc, rc, p, ap, a, rr_cpu)
    fused.cg_update_batched_cuda(xg, rg, p, ap, a, rr_gpu)
    fused.real_dot_batched_cuda(p, ap, dot_gpu)
    dot_ref = np.array([np.vdot(p[b], ap[b]).real for b in range(n_batch)])
    print(np.abs(xg - xc).max(), np.abs(rg - rc).max(), np.abs(rr_gpu / rr_cpu - 1).max(),
          np.abs(dot_gpu - dot_ref).max() / np.abs(p).max() ** 2)
    """
)


def test_batched_cg_cuda_twins_match_cpu_under_simulator():
    """The numba.cuda batched CG update and per-system dot (block reductions, one atomic add per block)
    under NUMBA_ENABLE_CUDASIM=1, against the CPU kernel and NumPy."""
    out = simulated_output(_SIM_CG_SCRIPT)
    errors = [float(v) for v in out]
    assert len(errors) == 4 and max(errors) < 1e-5, errors
