"""Daubechies wavelet kernels and the ``Wavelet`` operator: filter facts, PyWavelets agreement,
perfect reconstruction and adjointness at every level, odd sizes, 2D and 3D, CPU/GPU twins."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from mrirecon.kernels.wavelet import DAUBECHIES, daubechies, level_shapes, max_level, wavedec
from mrirecon.wavelet import Wavelet

ORDERS = sorted(DAUBECHIES)


def _crandn(rng, shape) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("order", ORDERS)
def test_filters_are_orthonormal_with_vanishing_moments(order):
    lo, hi = map(np.asarray, daubechies(order))
    assert len(lo) == 2 * order
    assert lo.sum() == pytest.approx(np.sqrt(2), abs=1e-14)
    for k in range(order):  # double-shift orthonormality: sum_i h[i] h[i + 2k] = delta_k
        assert np.dot(lo[: len(lo) - 2 * k], lo[2 * k :]) == pytest.approx(float(k == 0), abs=1e-14)
        assert np.dot(lo[: len(lo) - 2 * k], hi[2 * k :]) == pytest.approx(0.0, abs=1e-14)
    i = np.arange(len(hi))
    for p in range(order):  # N vanishing moments of the wavelet
        assert np.dot(i**p, hi) == pytest.approx(0.0, abs=1e-9 * max(1, (len(hi) ** p)))


@pytest.mark.parametrize("order", ORDERS)
def test_coefficients_match_pywavelets_periodization(order, rng):
    pywt = pytest.importorskip("pywt")
    assert np.allclose(daubechies(order)[0], pywt.Wavelet(f"db{order}").rec_lo, atol=1e-15)
    for shape, levels in (((32, 64), 3), ((16, 8, 32), 2)):
        x = _crandn(rng, shape)
        ours = wavedec(x, daubechies(order), len(shape), levels)
        with warnings.catch_warnings():  # pywt warns when a band is shorter than the filter
            warnings.simplefilter("ignore", UserWarning)
            ref = pywt.wavedecn(x, f"db{order}", mode="periodization", level=levels)
        keys = ["".join(k) for k in itertools.product("ad", repeat=len(shape))][1:]
        expected = [ref[levels - lev][k] for lev in range(levels) for k in keys] + [ref[0]]
        assert len(ours) == len(expected)
        for a, b in zip(ours, expected):
            np.testing.assert_allclose(a, b, atol=1e-12)  # measured 2e-15


CASES = [  # (shape, ndim, wave): even (unitary) and odd (padded) sizes, 1D, 2D, 3D, batch dims
    ((64, 64), 2, "db4"),
    ((48, 80), 2, "db2"),
    ((45, 37), 2, "db4"),
    ((230, 180), 2, "db4"),
    ((9, 16, 13), 3, "db3"),
    ((16, 16, 16), 3, "db1"),
    ((3, 33, 20), 2, "db8"),
    ((101,), 1, "db6"),
]


@pytest.mark.parametrize("shape,ndim,wave", CASES)
def test_perfect_reconstruction_and_adjoint_at_every_level(shape, ndim, wave, rng):
    top = max_level(min(shape[-ndim:]), int(wave[2:])) + 1
    for levels in range(1, top + 1):
        w = Wavelet(shape, ndim=ndim, wave=wave, levels=levels)
        x = _crandn(rng, shape)
        c = _crandn(rng, w.oshape)
        wx = w(x)
        # W^H W = I (float64 round-off: measured <= 3e-15)
        np.testing.assert_allclose(w.H(wx), x, atol=1e-12)
        # <W x, c> = <x, W^H c>
        lhs, rhs = np.vdot(wx, c), np.vdot(x, w.H(c))
        assert abs(lhs - rhs) <= 1e-12 * abs(lhs)
        # energy is preserved (isometry)
        assert np.linalg.norm(wx) == pytest.approx(np.linalg.norm(x), rel=1e-12)
        if w.unitary:
            assert w.oshape[-1] == np.prod(shape[-ndim:])
            np.testing.assert_allclose(w(w.H(c)), c, atol=1e-12)  # W W^H = I as well
        else:
            assert w.oshape[-1] > np.prod(shape[-ndim:])  # padded: more coefficients than pixels


def test_unitary_flag_and_default_levels():
    pywt = pytest.importorskip("pywt")
    assert Wavelet((64, 64)).unitary  # 3 levels of db4 on 64: 64 / 8 is even
    assert not Wavelet((230, 180)).unitary  # 230 / 2 = 115 is odd
    for shape in ((64, 64), (230, 180), (16, 100, 40)):
        assert Wavelet(shape).levels == pywt.dwt_max_level(min(shape), 8)
    assert level_shapes((230, 180), 2, 3) == [(230, 180), (115, 90), (58, 45), (29, 23)]


def test_complex64_stays_complex64_and_batch_axes_are_independent(rng):
    x = _crandn(rng, (3, 40, 24)).astype(np.complex64)
    w = Wavelet(x.shape, ndim=2, levels=2)
    c = w(x)
    assert c.dtype == np.complex64 and w.H(c).dtype == np.complex64
    single = Wavelet(x.shape[1:], levels=2)
    for i in range(3):
        np.testing.assert_allclose(c[i], single(x[i]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(w.H(c), x, atol=1e-5)  # float32 round-off: measured 1.2e-6


def test_sparsifies_piecewise_smooth_images():
    """A property, not a number: db4 packs a smooth image's energy into few coefficients."""
    yy, xx = np.mgrid[:64, :64] / 64
    image = np.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) * 8)

    def top_5_percent(values: np.ndarray) -> float:
        v = np.sort(np.abs(values).ravel())[::-1]
        return float(np.sum(v[: v.size // 20] ** 2) / np.sum(v**2))

    # measured: the largest 5 % of the coefficients hold 99.989 % of the energy, of the pixels 23 %
    assert top_5_percent(Wavelet(image.shape)(image)) > 0.9998
    assert top_5_percent(image) < 0.24


@pytest.mark.parametrize(
    "kwargs,match",
    [({"wave": "db9"}, "unknown wavelet"), ({"wave": "haar"}, "unknown wavelet"), ({"levels": 0}, "levels"),
     ({"ndim": 3}, "ndim")],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Wavelet((32, 32), **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(64, 64), (45, 37), (9, 16, 13)])
def test_gpu_matches_cpu(shape, rng):
    import cupy as cp

    w = Wavelet(shape)
    x = _crandn(rng, shape).astype(np.complex64)
    c = w(x)
    c_gpu = w(cp.asarray(x))
    assert isinstance(c_gpu, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(c_gpu), c, atol=1e-5)
    np.testing.assert_allclose(cp.asnumpy(w.H(c_gpu)), w.H(c), atol=1e-5)
