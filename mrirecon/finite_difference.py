"""Periodic finite differences (the discrete gradient of total variation) as a linear operator."""
from __future__ import annotations

from collections.abc import Sequence

from .kernels.backend import get_array_module
from .linop import LinearOperator


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
