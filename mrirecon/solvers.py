"""Iterative solvers that run on whatever array module the data lives in (NumPy or CuPy).

Operators are anything callable on an array: a ``LinearOperator`` (``A.N``) or a plain function.
Scalars (step sizes, residual norms) are pulled to the host once per iteration, vectors stay on the device;
batched conjugate gradients keep per-system scalars on the device too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .kernels.backend import get_array_module
from .kernels.fused import cg_update, real_dot

Operator = Callable[[Any], Any]


def _dot(a, b) -> complex:
    """<a, b> = sum conj(a) * b over all elements, as a Python complex."""
    xp = get_array_module(a)
    return complex(xp.vdot(a.ravel(), b.ravel()))


def conjugate_gradient(
    normal_op: Operator,
    rhs,
    x0=None,
    max_iter: int = 30,
    tol: float = 1e-6,
    callback: Callable[[int, Any, Any], None] | None = None,
    batch_ndim: int = 0,
    check_every: int = 5,
):
    """Solve ``N x = rhs`` for a Hermitian positive (semi-)definite ``N`` by conjugate gradients.

    Stops after ``max_iter`` iterations or when ``||r|| <= tol * ||rhs||``. ``callback(k, x, rel_res)``
    is called after iteration ``k`` (0-based) with the current iterate and relative residual.
    The iterate keeps the dtype of ``rhs`` (complex64 on the hot path).

    ``batch_ndim > 0``: the leading axes of ``rhs`` index independent systems (``normal_op`` acts on each
    on its own, e.g. a batched ``SenseNormal``), solved together: step sizes and residuals are per system
    and stay on the device (a GPU loop with ``tol == 0`` never waits for the host). A system whose
    residual reaches ``tol`` freezes (its step becomes 0), tested on the device every iteration, so each
    result equals its own single solve; whether all are frozen (the only host check) is asked every
    ``check_every`` iterations, which costs a frozen batch at most ``check_every - 1`` idle iterations
    but saves the host round trip of the other iterations. ``rel_res`` is then an array per system.
    """
    xp = get_array_module(rhs)
    if x0 is None:
        x = xp.zeros_like(rhs)
        r = rhs.copy()
    else:
        x = xp.array(x0, dtype=rhs.dtype, copy=True)
        r = rhs - normal_op(x)
    rhs_norm2 = _norm2(rhs, batch_ndim)
    if not batch_ndim and rhs_norm2 == 0.0:
        return x
    p = r.copy()
    rr = _norm2(r, batch_ndim)
    threshold = tol**2 * rhs_norm2
    real = np.finfo(rhs.dtype).dtype  # per-system steps in the iterate's precision, as a Python float acts
    active = (rr > threshold) & (rhs_norm2 > 0) if batch_ndim else True
    for k in range(max_iter):
        if batch_ndim:
            if tol > 0 and k % check_every == 0 and not bool(active.any()):
                break
        elif rr <= threshold:
            break
        ap = normal_op(p)
        alpha = _step(rr, _norm2(p, batch_ndim, ap), active, real)
        # x += alpha p, r -= alpha ap and |r|^2 in one pass (ap is only read: an operator may return its input)
        rr_new = cg_update(x, r, p, ap, alpha, batch_ndim)
        p *= _step(rr_new, rr, active, real)  # p <- r + beta p without a new array
        p += r
        if batch_ndim:  # a frozen system keeps its residual (and so stays frozen)
            rr = xp.where(active, rr_new, rr)
            active &= rr > threshold
        else:
            rr = rr_new
        if callback is not None:
            rel = xp.sqrt(rr / xp.where(rhs_norm2 > 0, rhs_norm2, 1.0)) if batch_ndim else float(np.sqrt(rr / rhs_norm2))
            callback(k, x, rel)
    return x


def _norm2(a, batch_ndim: int, b=None):
    """``Re <a, b>`` (``b = a`` when None): a Python float, or per system (``batch_ndim > 0``) a float64 device
    array of shape (*batch, 1, ...)."""
    b = a if b is None else b
    return real_dot(a, b, batch_ndim) if batch_ndim else _dot(a, b).real


def _step(num, den, active, dtype):
    """``num / den`` (a CG step size alpha or beta); per system an array of ``dtype``, 0 for the frozen
    systems (not ``active``). The Python float case only runs while its one system is active."""
    if isinstance(num, float):
        return num / den
    xp = get_array_module(num)
    return xp.where(active, num / xp.where(active, den, 1.0), 0.0).astype(dtype)


def power_iteration(
    op: Operator,
    shape: tuple[int, ...],
    n_iter: int = 30,
    seed: int = 0,
    xp: ModuleType = np,
    stop_at: float | None = None,
) -> float:
    """Largest eigenvalue of a Hermitian positive semi-definite ``op`` (e.g. ``A.N``) by power iteration.

    Starts from a seeded complex Gaussian vector (made on the host, so every device starts alike)
    and returns the Rayleigh quotient after ``n_iter`` steps; ``xp`` is the array module ``op`` works in.
    The quotient only grows from step to step (``op`` is positive semi-definite), so ``stop_at`` ends
    the iteration early once it reaches that value (e.g. near a known upper bound).
    Used to size gradient steps (1 / L) and to scale regularisation to the data.
    """
    rng = np.random.default_rng(seed)
    x = xp.asarray((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64))
    x /= float(xp.linalg.norm(x.ravel()))
    eig = 0.0
    for _ in range(n_iter):
        y = op(x)
        eig = _dot(x, y).real
        norm = float(xp.linalg.norm(y.ravel()))
        if norm == 0.0:
            return 0.0
        if stop_at is not None and eig >= stop_at:
            break
        x = y / norm
    return eig


def fista(
    gradient: Operator,
    prox: Callable[[float, Any], Any],
    x0,
    step: float,
    max_iter: int = 100,
    callback: Callable[[int, Any], None] | None = None,
):
    """Minimise ``f(x) + g(x)`` (f smooth, g with a cheap prox) by FISTA (Beck & Teboulle, 2009).

    ``gradient(x)`` is grad f, ``prox(t, v)`` the prox of ``t g``; ``step`` must be at most 1 / Lipschitz
    constant of grad f (e.g. ``1 / power_iteration(A.N, ...)`` for ``f = ||A x - y||^2 / 2``).
    Momentum ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` from ``t_0 = 1``. ``callback(k, x)`` after iteration k.
    The updates run in place on fresh arrays (``gradient``'s and ``prox``'s outputs are not written to).
    """
    x = x0.copy()
    z = x.copy()
    t = 1.0
    for k in range(max_iter):
        v = gradient(z) * -step  # a Python float: keeps complex64 iterates
        v += z
        x_new = prox(step, v)
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = x_new - x
        z *= (t - 1) / t_new
        z += x_new
        x, t = x_new, t_new
        if callback is not None:
            callback(k, x)
    return x


def pdhg(
    ops: Sequence[Any],
    dual_proxes: Sequence[Callable[[float, Any], Any] | None],
    x0,
    tau: float,
    sigma: float | Sequence[float] = 1.0,
    max_iter: int = 100,
    primal_prox: Callable[[float, Any], Any] | None = None,
    callback: Callable[[int, Any], None] | None = None,
):
    """Minimise ``g(x) + sum_i f_i(K_i x)`` by the primal-dual hybrid gradient (Chambolle & Pock, 2011).

    ``ops`` are the ``K_i`` (``LinearOperator``s: ``K(x)`` and ``K.H(u)``), ``dual_proxes[i](s, v)`` the prox
    of ``s f_i*`` (the convex conjugate), ``primal_prox(t, v)`` that of ``t g`` (None: g = 0). One dual
    variable per ``K_i``, all starting at zero, with its own step ``sigma[i]`` (a float: the same for
    all); extrapolation theta = 1. Converges when ``tau * ||sum_i sigma_i K_i^H K_i|| <= 1``
    (Pock & Chambolle, ICCV 2011, for the per-block steps). ``callback(k, x)`` after iteration k
    (``x`` is updated in place: copy it to keep it).
    A block with ``dual_proxes[i] = None`` is fused: ``ops[i]`` has ``oshape`` and
    ``dual_step(u, x, s)``, which sets ``u <- prox_{s f_i*}(u + s K_i x)`` in place and returns
    ``K_i^H u`` (e.g. ``linop.SenseDataDual``, ``FiniteDifference.linf_dual``).
    """
    xp = get_array_module(x0)
    sigmas = [float(sigma)] * len(ops) if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    x = x0.copy()
    x_ext = x.copy()
    x_old = xp.empty_like(x)
    duals = [xp.zeros(op.oshape, dtype=x.dtype) for op in ops]

    def dual_step(op, prox, u, s):
        if prox is None:
            return op.dual_step(u, x_ext, s)
        u[...] = prox(s, u + s * op(x_ext))
        return op.H(u)

    for k in range(max_iter):
        x_old[...] = x
        for op, prox, u, s in zip(ops, dual_proxes, duals, sigmas):
            x -= tau * dual_step(op, prox, u, s)
        if primal_prox is not None:
            x = primal_prox(tau, x)
        xp.multiply(x, 2, out=x_ext)  # x_ext = 2 x - x_old
        x_ext -= x_old
        if callback is not None:
            callback(k, x)
    return x
