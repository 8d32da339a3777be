"""Periodic finite differences (the discrete gradient of total variation) as a linear operator."""
from __future__ import annotations

from collections.abc import Sequence

from .kernels.backend import get_array_module
from .kernels.fused import tv_dual_update, tv_kernel_fits
from .linop import LinearOperator
from .prox import project_linf_ball


class FiniteDifference(LinearOperator):
    """Backward differences with periodic boundary along the last ``ndim`` axes (all when None).

    ``x (*shape) -> g (ndim, *shape)`` with ``g[i] = x - roll(x, 1, axis_i)``; the adjoint is
    ``sum_i u[i] - roll(u[i], -1, axis_i)`` (a negative divergence). ``||G||^2 <= 4 ndim``.
    The periodic boundary makes ``G`` circulant, as SigPy's ``FiniteDifference``.
    """

    def __init__(self, shape: Sequence[int], ndim: int | None = None):
        shape = tuple(int(s) for s in shape)
        ndim = len(shape) if ndim is None else int(ndim)
        if not 1 <= ndim <= len(shape):
            raise ValueError(f"FiniteDifference: ndim {ndim} does not fit shape {shape}")
        super().__init__((ndim,) + shape, shape)
        self.axes = tuple(range(len(shape) - ndim, len(shape)))

    def _apply(self, x):
        xp = get_array_module(x)
        return xp.stack([x - xp.roll(x, 1, axis=ax) for ax in self.axes])

    def _adjoint(self, y):
        xp = get_array_module(y)
        out = xp.zeros(self.ishape, dtype=y.dtype)
        for i, ax in enumerate(self.axes):
            out += y[i] - xp.roll(y[i], -1, axis=ax)
        return out

    def linf_dual(self, bound: float, group: int | None = None) -> LinfDual:
        """PDHG dual block of ``bound ||G x||_1`` (``solvers.pdhg`` with prox None); ``group=0``: isotropic."""
        return LinfDual(self, bound, group)


class LinfDual:
    """PDHG dual block of ``f(G x) = bound ||G x||_1`` (TV), one fused step (``kernels.fused.tv_dual_update``).

    ``dual_step(v, x, sigma)``: ``v <- proj(v + sigma G x)`` onto ``{|v_i| <= bound}`` in place (the prox
    of ``sigma f*``, ``prox.project_linf_ball``; ``group=0`` projects the difference vector of each
    voxel, isotropic TV), returns ``G^H v``: from the kernel in a reused image buffer (valid until the
    next step) where it fits (``tv_kernel_fits``), else from the unfused ``G``, projection and ``G^H``.
    """

    def __init__(self, op: FiniteDifference, bound: float, group: int | None = None):
        if group not in (None, 0):
            raise ValueError(f"LinfDual: group must be None or 0 (the difference axis), got {group}")
        self.op = op
        self.oshape = op.oshape
        self.bound = float(bound)
        self.grouped = group == 0
        self._out = None

    def dual_step(self, v, x, sigma: float):
        """Update the dual ``v`` in place for the primal point ``x``; return ``G^H v``."""
        xp = get_array_module(x)
        if self.bound <= 0:
            v[...] = 0
            return xp.zeros_like(x)
        if self._out is None:
            self._out = xp.empty_like(x)
        if tv_kernel_fits(v, x, self.op.axes, self._out):
            return tv_dual_update(v, x, sigma, self.bound, self.grouped, self.op.axes, out=self._out)
        v += sigma * self.op(x)
        v[...] = project_linf_ball(v, self.bound, 0 if self.grouped else None)
        return self.op.H(v)
