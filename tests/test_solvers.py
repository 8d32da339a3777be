"""Conjugate gradients and power iteration against dense NumPy linear algebra."""
from __future__ import annotations

import numpy as np
import pytest

from mrirecon.solvers import conjugate_gradient, power_iteration


def _hpd(rng: np.random.Generator, n: int, cond: float) -> np.ndarray:
    """Random Hermitian positive definite matrix with eigenvalues spread over [1, cond]."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n)))
    return (q * np.geomspace(1.0, cond, n)) @ q.conj().T


def test_cg_solves_hpd_system(rng):
    a = _hpd(rng, 40, 100.0)
    b = (rng.standard_normal(40) + 1j * rng.standard_normal(40)).astype(np.complex64)
    a64 = a.astype(np.complex64)
    residuals = []
    x = conjugate_gradient(lambda v: a64 @ v, b, max_iter=200, tol=1e-6, callback=lambda k, x, r: residuals.append(r))
    assert x.dtype == np.complex64
    exact = np.linalg.solve(a, b.astype(np.complex128))
    # complex64 arithmetic, condition number 100: measured relative error 7.2e-7
    assert np.linalg.norm(x - exact) / np.linalg.norm(exact) < 2e-6
    assert residuals[-1] <= 1e-6 < residuals[0]
    assert len(residuals) < 200  # stopped on tol, not on max_iter


def test_cg_warm_start_and_iteration_limit(rng):
    a = _hpd(rng, 30, 10.0).astype(np.complex64)
    b = (rng.standard_normal(30) + 1j * rng.standard_normal(30)).astype(np.complex64)
    exact = np.linalg.solve(a.astype(np.complex128), b)
    calls = []
    x = conjugate_gradient(lambda v: a @ v, b, x0=exact.astype(np.complex64), max_iter=50, callback=lambda *c: calls.append(c))
    assert calls == [] and np.allclose(x, exact, atol=1e-5)  # the start already solves it
    x3 = conjugate_gradient(lambda v: a @ v, b, max_iter=3, tol=0.0)
    # 3 steps on condition number 10: measured relative residual 0.199 (0 would mean solved)
    assert 0.15 < np.linalg.norm(a @ x3 - b) / np.linalg.norm(b) < 0.25
    assert not conjugate_gradient(lambda v: a @ v, np.zeros(30, np.complex64)).any()


@pytest.mark.parametrize("n", [5, 30])
def test_power_iteration_matches_eigvalsh(rng, n):
    a = _hpd(rng, n, 50.0)
    expected = np.linalg.eigvalsh(a).max()
    a64 = a.astype(np.complex64)
    est = power_iteration(lambda v: a64 @ v, (n,), n_iter=200, seed=3)
    # eigenvalues 50 vs 43.7 (n=30): 200 steps converge to complex64 precision; measured <= 7.7e-8
    assert est == pytest.approx(expected, rel=5e-7)
    assert power_iteration(lambda v: a64 @ v, (n,), n_iter=200, seed=3) == est  # seeded: reproducible


def _batched_system(rng: np.random.Generator, conds: tuple[float, ...], n: int = 24):
    """Stacked HPD matrices (one condition number each), their complex64 right-hand sides and the
    batched operator ``v -> A_b v_b``, computed as the single solves compute it."""
    mats = np.stack([_hpd(rng, n, c) for c in conds]).astype(np.complex64)
    rhs = (rng.standard_normal((len(conds), n)) + 1j * rng.standard_normal((len(conds), n))).astype(np.complex64)
    return mats, rhs, lambda v: np.stack([m @ vb for m, vb in zip(mats, v)])  # the single solves' products


@pytest.mark.parametrize("tol, max_iter", [(0.0, 6), (1e-3, 40)])
def test_batched_cg_equals_single_solves(rng, tol, max_iter):
    """Systems of different conditioning stop at different iterations (tol > 0: each freezes at its own
    tolerance); every batched result equals its own single solve. (tol = 0 stops before the best
    conditioned system reaches round-off, where CG steps amplify rounding differences.)"""
    conds = (2.0, 30.0, 300.0)
    mats, rhs, op = _batched_system(rng, conds)
    rhs[1] = 0  # a zero right-hand side: zero solution, the others unaffected
    iterations, singles = [], []
    for a, b in zip(mats, rhs):
        calls: list = []
        singles.append(conjugate_gradient(a.__matmul__, b, max_iter=max_iter, tol=tol, callback=lambda *c, calls=calls: calls.append(c)))
        iterations.append(len(calls))
    batched = conjugate_gradient(op, rhs, max_iter=max_iter, tol=tol, batch_ndim=1)
    assert batched.dtype == np.complex64
    if tol:
        assert iterations[0] < iterations[2] < 40 and iterations[1] == 0  # different convergence per system
    # measured: bit-identical on the CPU (the same row kernels per system); rtol leaves room for other orders
    for x, single in zip(batched, singles):
        np.testing.assert_allclose(x, single, rtol=1e-5, atol=1e-5 * max(np.abs(single).max(), 1e-30))
    assert not batched[1].any()


def test_batched_cg_checks_the_host_every_few_iterations(rng):
    """tol = 0: never stops early (no host check); tol > 0: stops within ``check_every`` iterations after
    the slowest system froze, with a per-system relative residual in the callback."""
    mats, rhs, op = _batched_system(rng, (2.0, 5.0))
    counted = []

    def counting(v):
        counted.append(1)
        return op(v)

    conjugate_gradient(counting, rhs, max_iter=30, tol=0.0, batch_ndim=1)
    assert len(counted) == 30
    slowest = 0
    for a, b in zip(mats, rhs):
        calls: list = []
        conjugate_gradient(a.__matmul__, b, max_iter=30, tol=1e-3, callback=lambda *c, calls=calls: calls.append(c))
        slowest = max(slowest, len(calls))
    counted.clear()
    residuals = []
    conjugate_gradient(counting, rhs, max_iter=30, tol=1e-3, batch_ndim=1, check_every=4,
                       callback=lambda k, x, rel: residuals.append(rel))
    assert slowest <= len(counted) < slowest + 4 and len(counted) < 30
    assert residuals[-1].shape == (2, 1) and (residuals[-1] <= 1e-3).all()
