"""Operator algebra: adjoint identities <A x, y> = <x, A^H y> for every operator and composition."""
from __future__ import annotations

import numpy as np
import pytest

from mrirecon.linop import FFT, Identity, LinearOperator, Multiply, Sampling, Sense


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _adjoint_gap(op: LinearOperator, rng: np.random.Generator) -> float:
    """|<A x, y> - <x, A^H y>| / (||A x|| ||y||): complex64 round-off only for a correct adjoint."""
    x, y = _complex(rng, op.ishape), _complex(rng, op.oshape)
    ax, ahy = op(x), op.H(y)
    assert ax.dtype == np.complex64 and ahy.dtype == np.complex64
    lhs = np.vdot(ax.astype(np.complex128), y.astype(np.complex128))
    rhs = np.vdot(x.astype(np.complex128), ahy.astype(np.complex128))
    return abs(lhs - rhs) / (np.linalg.norm(ax) * np.linalg.norm(y))


def _operators(rng: np.random.Generator) -> dict[str, LinearOperator]:
    c, ny, nx, nz = 4, 12, 10, 6
    maps2 = _complex(rng, (c, ny, nx))
    maps3 = _complex(rng, (c, nz, ny, nx))
    mask2 = rng.random((ny, nx)) < 0.4
    mask3 = rng.random((nz, ny, nx)) < 0.4
    full2 = Sampling((c, ny, nx), mask2) @ FFT((c, ny, nx), ndim=2) @ Sense(maps2)
    full3 = Sampling((c, nz, ny, nx), mask3) @ FFT((c, nz, ny, nx), ndim=3) @ Sense(maps3)
    weights = _complex(rng, (ny, nx))
    return {
        "identity": Identity((ny, nx)),
        "fft2d": FFT((c, ny, nx), ndim=2),
        "fft3d": FFT((nz, ny, nx), ndim=3),
        "sampling": Sampling((c, ny, nx), mask2),
        "multiply": Multiply((ny, nx), weights),
        "multiply_broadcast": Multiply((c, ny, nx), weights),
        "sense2d": Sense(maps2),
        "sense3d": Sense(maps3),
        "full_sense2d": full2,
        "full_sense3d": full3,
        "normal2d": full2.N,
        "normal3d": full3.N,
        "scaled": (0.5 - 2j) * full2,
        "sum": Multiply((ny, nx), weights) + 3.0 * Identity((ny, nx)),
        "adjoint_of_composition": full2.H,
    }


@pytest.mark.parametrize("name", list(_operators(np.random.default_rng(0))))
def test_adjoint_identity(name, rng):
    op = _operators(np.random.default_rng(0))[name]
    # complex64 round-off: measured largest gap 1.4e-8 over all operators; a wrong adjoint (e.g. a
    # missing conj or a flipped FFT sign) gives O(1).
    assert _adjoint_gap(op, rng) < 1e-7


def test_fft_is_unitary_and_centred(rng):
    x = _complex(rng, (3, 16, 12))
    f = FFT(x.shape, ndim=2)
    np.testing.assert_allclose(np.linalg.norm(f(x)), np.linalg.norm(x), rtol=1e-5)
    np.testing.assert_allclose(f.H(f(x)), x, atol=1e-5)
    delta = np.zeros((16, 12), np.complex64)
    delta[8, 6] = 1.0  # a centred delta has a flat spectrum
    np.testing.assert_allclose(FFT(delta.shape)(delta), np.full((16, 12), 1 / np.sqrt(16 * 12)), atol=1e-6)


def test_algebra_matches_explicit_products(rng):
    c, ny, nx = 3, 8, 6
    maps = _complex(rng, (c, ny, nx))
    mask = rng.random((ny, nx)) < 0.5
    s, f, m = Sense(maps), FFT((c, ny, nx)), Sampling((c, ny, nx), mask)
    x = _complex(rng, (ny, nx))
    a = m @ f @ s
    np.testing.assert_allclose(a(x), m(f(s(x))), atol=1e-6)
    np.testing.assert_allclose(a.N(x), a.H(a(x)), atol=1e-5)
    np.testing.assert_allclose(a.H.H(x), a(x), atol=1e-6)
    np.testing.assert_allclose(((2 - 1j) * a)(x), (2 - 1j) * a(x), atol=1e-5)
    sense_images = maps * x
    np.testing.assert_allclose(s(x), sense_images, atol=1e-6)
    np.testing.assert_allclose(s.H(sense_images), (np.conj(maps) * sense_images).sum(0), atol=1e-5)
    np.testing.assert_allclose((s.H @ s + 2.0 * Identity((ny, nx)))(x), s.N(x) + 2 * x, atol=1e-5)


def test_shapes_are_checked(rng):
    s = Sense(_complex(rng, (3, 8, 6)))
    with pytest.raises(ValueError, match="Sense: input has shape"):
        s(np.zeros((8, 7), np.complex64))
    with pytest.raises(ValueError, match="cannot compose"):
        FFT((3, 8, 7)) @ s
    with pytest.raises(ValueError, match="cannot add"):
        s + Sense(_complex(rng, (2, 8, 6)))


@pytest.mark.parametrize("shape", [(4, 12, 10), (3, 9, 7), (2, 6, 5, 8)])
def test_sense_normal_matches_centred_normal(rng, shape):
    """SenseNormal (centring folded into maps and mask) equals P' (A^H A + lam I) P'^H, every size."""
    from mrirecon.linop import SenseNormal

    maps = _complex(rng, shape)
    mask = rng.random(shape[1:]) < 0.4
    a = Sampling(shape, mask) @ FFT(shape, ndim=len(shape) - 1) @ Sense(maps)
    op = SenseNormal(maps, mask, lam=0.3)
    x = _complex(rng, shape[1:])
    expected = op.uncentre(a.N(x) + 0.3 * x)
    out = op(op.uncentre(x))
    assert out.dtype == np.complex64
    # complex64 round-off: measured max abs difference 2.4e-6 at entries O(10); a missed shift gives O(1)
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=0)
    np.testing.assert_array_equal(op.centre(op.uncentre(x)), x)
    assert _adjoint_gap(op, rng) < 1e-7


@pytest.mark.parametrize("shape, readout", [((4, 12, 10), -1), ((3, 9, 7), -2), ((2, 6, 5, 8), -1), ((2, 6, 5, 8), -3),
                                            ((3, 7, 6), None)])
def test_sense_normal_skips_the_fft_along_a_fully_sampled_axis(rng, shape, readout):
    """With the mask constant along an axis (a fully sampled readout; None: every axis) the normal
    transforms only the other axes, and still equals A^H A + lam I built from the full forward and adjoint."""
    from mrirecon.linop import SenseNormal

    maps = _complex(rng, shape)
    spatial = shape[1:]
    if readout is None:
        mask = np.ones(spatial, dtype=bool)
    else:
        pattern = rng.random(tuple(1 if k == len(spatial) + readout else n for k, n in enumerate(spatial))) < 0.5
        mask = np.broadcast_to(pattern, spatial)
    a = Sampling(shape, mask) @ FFT(shape, ndim=len(spatial)) @ Sense(maps)
    op = SenseNormal(maps, mask, lam=0.3)
    skipped = range(-len(spatial), 0) if readout is None else (readout,)
    assert op.model.normal_axes == tuple(k for k in range(-len(spatial), 0) if k not in skipped)
    x = _complex(rng, spatial)
    expected = op.uncentre(a.H(a(x)) + 0.3 * x)  # forward and adjoint: FFTs over every axis
    np.testing.assert_allclose(op(op.uncentre(x)), expected, atol=2e-5, rtol=0)
    assert _adjoint_gap(op, rng) < 1e-7


@pytest.mark.parametrize("shape", [(4, 12, 10), (3, 9, 7), (2, 6, 5, 8)])
@pytest.mark.parametrize("shared_mask", [True, False])
def test_batched_cartesian_sense_equals_per_entry_operators(rng, shape, shared_mask):
    """CartesianSense / SenseNormal over 3 entries (maps per entry, a mask per entry or shared, lam per
    entry): a correct adjoint, and forward, adjoint and normal equal to the per-entry operators."""
    from mrirecon.linop import CartesianSense, SenseNormal

    n = 3
    maps = _complex(rng, (n,) + shape)
    mask = rng.random(shape[1:] if shared_mask else (n,) + shape[1:]) < 0.4
    lam = np.array([0.0, 0.3, 1.5], dtype=np.float32).reshape((n,) + (1,) * (len(shape) - 1))
    a = CartesianSense(maps, mask, batch_ndim=1)
    assert a.ishape == (n,) + shape[1:] and a.oshape == (n,) + shape
    assert _adjoint_gap(a, rng) < 1e-7
    normal = SenseNormal(maps, mask, lam=lam, batch_ndim=1)
    assert _adjoint_gap(normal, rng) < 1e-7
    x, y = _complex(rng, a.ishape), _complex(rng, a.oshape)
    ax, ahy, nu = a(x), a.H(y), normal(normal.uncentre(x))
    for b in range(n):
        single = CartesianSense(maps[b], mask if shared_mask else mask[b])
        single_normal = SenseNormal(maps[b], mask if shared_mask else mask[b], lam=float(lam.ravel()[b]))
        # the same kernels and FFT sizes per entry: measured bit-identical; the tolerance covers FFT batching
        np.testing.assert_allclose(ax[b], single(x[b]), atol=1e-5, rtol=0)
        np.testing.assert_allclose(ahy[b], single.H(y[b]), atol=1e-5, rtol=0)
        np.testing.assert_allclose(normal.centre(nu)[b], single_normal.centre(single_normal(single_normal.uncentre(x[b]))), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(normal.uncentre(x)[b], single_normal.uncentre(x[b]))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4, 12, 10), (3, 9, 7)])
def test_batched_cartesian_sense_on_cupy_matches_numpy(rng, shape):
    import cupy as cp

    from mrirecon.linop import CartesianSense, SenseNormal

    n = 3
    maps, x, y = _complex(rng, (n,) + shape), _complex(rng, (n,) + shape[1:]), _complex(rng, (n,) + shape)
    mask = rng.random((n,) + shape[1:]) < 0.4
    lam = np.array([0.0, 0.3, 1.5], dtype=np.float32).reshape(n, 1, 1)
    cpu, gpu = CartesianSense(maps, mask, 1), CartesianSense(cp.asarray(maps), cp.asarray(mask), 1)
    np.testing.assert_allclose(cp.asnumpy(gpu(cp.asarray(x))), cpu(x), atol=1e-4)
    np.testing.assert_allclose(cp.asnumpy(gpu.H(cp.asarray(y))), cpu.H(y), atol=1e-4)
    n_cpu = SenseNormal(maps, mask, lam, batch_ndim=1)
    n_gpu = SenseNormal(cp.asarray(maps), cp.asarray(mask), cp.asarray(lam), batch_ndim=1)
    np.testing.assert_allclose(cp.asnumpy(n_gpu(cp.asarray(x))), n_cpu(x), atol=1e-4)
