"""Compressed sensing: finite differences, proximal maps, FISTA and PDHG against closed-form solutions,
and the ``l1wavelet`` / ``tv`` methods on the simulated R=4 phantom (2D) and a small 3D volume."""
from __future__ import annotations

import numpy as np
import pytest

from mrirecon import methods
from mrirecon.coils import espirit_maps
from mrirecon.errors import InputError
from mrirecon.finite_difference import FiniteDifference
from mrirecon.linop import Multiply
from mrirecon.methods.l1wavelet import sense_model
from mrirecon.methods.params import CoilMapParams
from mrirecon.prox import project_linf_ball, prox_l2_conjugate, soft_threshold
from mrirecon.reconstruction import recon
from mrirecon.solvers import fista, pdhg, power_iteration


def _nrmse(x: np.ndarray, truth: np.ndarray) -> float:
    """Magnitude NRMSE after the least-squares scale (as in test_methods: zerofill is unscaled RSS)."""
    x, y = np.abs(x).ravel(), np.abs(truth).ravel()
    a = np.dot(x, y) / np.dot(x, x)
    return float(np.linalg.norm(a * x - y) / np.linalg.norm(y))


def _crandn(rng, shape) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


# -- operator and proximal maps ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(12, 9), (5, 6, 7)])
def test_finite_difference_values_and_adjoint(shape, rng):
    g = FiniteDifference(shape)
    assert g.oshape == (len(shape),) + shape
    x, u = _crandn(rng, shape), _crandn(rng, g.oshape)
    gx = g(x)
    np.testing.assert_allclose(gx[-1][..., 1:], x[..., 1:] - x[..., :-1])  # backward differences
    np.testing.assert_allclose(gx[-1][..., 0], x[..., 0] - x[..., -1])  # periodic wrap
    assert abs(np.vdot(gx, u) - np.vdot(x, g.H(u))) < 1e-12 * abs(np.vdot(gx, u))
    np.testing.assert_allclose(g(np.full(shape, 3.0 + 1j)), 0)  # constants have no gradient



def test_finite_difference_norm_bound():
    """||G||^2 <= 4 ndim (used to normalise TV's steps), attained by the alternating-sign image."""
    shape = (8, 6, 4)
    g = FiniteDifference(shape)
    checker = (-1.0) ** np.indices(shape).sum(axis=0)
    np.testing.assert_allclose(g.N(checker), 12 * checker)
    assert power_iteration(g.N, shape, n_iter=100) <= 12 + 1e-9


def test_soft_threshold_is_the_prox_of_the_l1_norm(rng):
    v = _crandn(rng, (200,))
    t = 0.8
    out = soft_threshold(v, t)
    # closed form per element: magnitude shrinks by t, phase kept, zero below t
    mag = np.abs(v)
    np.testing.assert_allclose(out, np.where(mag > t, (mag - t) / np.maximum(mag, 1e-30) * v, 0), atol=1e-15)
    # it minimises t ||x||_1 + ||x - v||^2 / 2: any perturbation costs more
    cost = lambda x: t * np.abs(x).sum() + 0.5 * np.linalg.norm(x - v) ** 2  # noqa: E731
    for _ in range(20):
        assert cost(out) <= cost(out + 1e-3 * _crandn(rng, v.shape))
    # Moreau: v = prox_{t|.|}(v) + prox_{(t|.|)^*}(v), the second the projection onto |x| <= t
    np.testing.assert_allclose(out + project_linf_ball(v, t), v, atol=1e-15)
    assert np.abs(project_linf_ball(v, t)).max() <= t + 1e-15
    assert soft_threshold(v, 0.0) is v and not project_linf_ball(v, 0.0).any()


def test_group_soft_threshold_shrinks_vectors(rng):
    v = _crandn(rng, (3, 50))
    out = soft_threshold(v, 1.0, axis=0)
    norm = np.linalg.norm(v, axis=0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), np.maximum(norm - 1.0, 0), atol=1e-12)
    kept = norm > 1
    np.testing.assert_allclose(out[:, kept] / np.linalg.norm(out[:, kept], axis=0), v[:, kept] / norm[kept])
    assert np.linalg.norm(project_linf_ball(v, 1.0, axis=0), axis=0).max() <= 1 + 1e-12


# -- solvers against a closed form ---------------------------------------------------------------------
@pytest.fixture
def diagonal_lasso(rng):
    """min_x ||d x - y||^2 / 2 + lam ||x||_1 with diagonal d: x_i = soft(d_i y_i, lam) / d_i^2."""
    d = rng.uniform(0.3, 2.0, 64)
    y = _crandn(rng, 64)
    lam = 0.7
    return Multiply((64,), d), y, lam, soft_threshold(d * y, lam) / d**2


def test_fista_solves_the_lasso(diagonal_lasso):
    a, y, lam, expected = diagonal_lasso
    step = 1 / power_iteration(a.N, (64,), n_iter=100)
    x = fista(lambda v: a.N(v) - a.H(y), lambda t, v: soft_threshold(v, t * lam), np.zeros(64, complex), step, 1000)
    np.testing.assert_allclose(x, expected, atol=1e-10)  # measured 5.5e-13 (condition number 44)


def test_pdhg_solves_the_lasso(diagonal_lasso):
    a, y, lam, expected = diagonal_lasso
    ident = Multiply((64,), np.ones(64))
    tau = 1 / power_iteration(lambda v: a.N(v) + v, (64,), n_iter=100)
    x = pdhg(
        [a, ident],
        [lambda s, v: prox_l2_conjugate(s, v, y), lambda s, v: project_linf_ball(v, lam)],
        np.zeros(64, complex),
        tau,
        max_iter=1000,
    )
    np.testing.assert_allclose(x, expected, atol=1e-12)  # measured 3.6e-15


# -- methods on the simulated phantom ---------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_maps(phantom_r4):
    """ESPIRiT maps of the phantom once for the module (each method otherwise estimates its own)."""
    return espirit_maps(phantom_r4[2].data, calib=24, kernel=6, thresh=0.02, crop=0.95)


def test_methods_are_listed_with_documented_parameters():
    infos = {m.name: m for m in methods.list_methods()}
    for name in ("l1wavelet", "tv"):
        params = {p.name: p for p in infos[name].params}
        assert "relative to the data" in params["lam"].doc and "max|A^H y|" in params["lam"].doc
        assert params["relative"].default is True and params["max_iter"].default == 100
        assert all(p.doc for p in params.values())
    assert infos["l1wavelet"].params[0].default == 3e-4 and infos["tv"].params[0].default == 0.002
    assert "Lustig" in infos["l1wavelet"].reference and "Chambolle" in infos["tv"].reference


@pytest.mark.parametrize(
    "name,params,limit",
    [
        # measured: zero-filled 0.412, SENSE 0.108 (test_methods)
        ("l1wavelet", {}, 0.085),  # measured 0.0809 (db4, 4 levels, lam 3e-4; 0.1210 with lam 1e-3)
        ("l1wavelet", {"wave": "db1", "levels": 3, "lam": 1e-3}, 0.025),  # measured 0.0226: Haar fits piecewise constants
        ("tv", {}, 0.011),  # measured 0.0096 (anisotropic, lam 0.002): TV fits piecewise constants
        ("tv", {"isotropic": True}, 0.016),  # measured 0.0144
    ],
)
def test_beats_zerofill_on_phantom_r4(phantom_r4, phantom_maps, name, params, limit):
    image, _, ksp = phantom_r4
    out = recon(ksp, name, maps=phantom_maps, **params)
    assert out.data.dtype == np.complex64 and out.data.shape == image.shape
    assert _nrmse(out.data, image) < limit
    assert _nrmse(recon(ksp, "zerofill").data, image) > 0.41  # measured 0.412: a margin of > 3x


def test_relative_lam_follows_the_data_scale(phantom_r4, phantom_maps):
    """k-space x 1000 gives the image x 1000 with relative lam; relative=False takes lam as lam_abs."""
    ksp = phantom_r4[2]
    big = type(ksp)(ksp.data * 1000, ksp.dims, ksp.header, ksp.mask)
    a, y = sense_model(ksp, "test", CoilMapParams(maps=phantom_maps))
    scale = float(np.abs(a.H(y)).max())
    for name, lam in (("l1wavelet", 3e-4), ("tv", 0.002)):  # the defaults
        ref = recon(ksp, name, maps=phantom_maps, max_iter=10).data
        out = recon(big, name, maps=phantom_maps, max_iter=10).data
        assert np.abs(out / 1000 - ref).max() < 1e-5 * np.abs(ref).max()  # float32: measured 3.2e-6 (l1wavelet), 2.1e-7 (tv)
        absolute = recon(ksp, name, maps=phantom_maps, max_iter=10, lam=lam * scale, relative=False).data
        np.testing.assert_array_equal(absolute, ref)  # the same lam_abs: identical arithmetic


def test_tv_3d(phantom_3d_r3):
    image, maps, ksp = phantom_3d_r3
    out = recon(ksp, "tv", maps=maps, max_iter=60)
    assert out.dims == ("z", "y", "x") and out.data.shape == image.shape
    # measured: TV 0.0746, l1wavelet 0.311 (db4 has one level on 16 slices), zero-filled 0.551
    assert _nrmse(out.data, image) < 0.08
    assert _nrmse(recon(ksp, "l1wavelet", maps=maps, max_iter=60).data, image) < 0.32


@pytest.mark.parametrize(
    "name,params,match",
    [
        ("l1wavelet", {"wave": "db12"}, "unknown wavelet"),
        ("l1wavelet", {"levels": 0}, "levels must be >= 1"),
        ("tv", {"lam": -1.0}, "must be >= 0"),
        ("tv", {"step_ratio": 0.0}, "step_ratio must be > 0"),
        ("tv", {"isotropic": "yes"}, "must be bool"),
        ("l1wavelet", {"maps": np.ones((8, 64, 64), np.complex64)}, "coil maps have shape"),
    ],
)
def test_bad_parameters_are_input_errors(phantom_r4, phantom_maps, name, params, match):
    with pytest.raises(InputError, match=match):
        recon(phantom_r4[2], name, **{"maps": phantom_maps, **params})


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["l1wavelet", "tv"])
def test_gpu_matches_cpu(phantom_r4, phantom_maps, name):
    import cupy as cp

    ksp = phantom_r4[2]
    cpu = recon(ksp, name, maps=phantom_maps, device="cpu")
    gpu = recon(ksp.to("cuda"), name, maps=cp.asarray(phantom_maps), device="cuda")
    assert isinstance(gpu.data, cp.ndarray)
    err = np.linalg.norm(cp.asnumpy(gpu.data) - cpu.data) / np.linalg.norm(cpu.data)
    assert err < 1e-3  # complex64 FFTs and reductions in another order, over 100 iterations
