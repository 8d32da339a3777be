"""Proximal maps for the regularisers of compressed sensing, on NumPy or CuPy arrays alike.

``prox_{t g}(v) = argmin_x g(x) + ||x - v||^2 / (2 t)``. Complex values shrink in magnitude and keep
their phase. ``axis`` groups values (e.g. the gradient directions of isotropic TV) into one vector.
"""
from __future__ import annotations

from .kernels.backend import get_array_module


def _magnitude(x, axis: int | None):
    xp = get_array_module(x)
    if axis is None:
        return xp.abs(x)
    return xp.sqrt(xp.sum(x.real**2 + x.imag**2, axis=axis, keepdims=True))


def soft_threshold(x, thresh: float, axis: int | None = None):
    """Prox of ``thresh * ||x||_1`` (per element, or of the group norm over ``axis``): |x| shrinks by thresh."""
    if thresh <= 0:
        return x
    xp = get_array_module(x)
    mag = _magnitude(x, axis)
    return x * (1 - thresh / xp.maximum(mag, thresh))


def project_linf_ball(x, bound: float, axis: int | None = None):
    """Projection onto ``{|x_i| <= bound}`` (group norms over ``axis``): the prox of the conjugate of
    ``bound * ||.||_1``, i.e. ``x - soft_threshold(x, bound, axis)`` by Moreau's identity."""
    xp = get_array_module(x)
    if bound <= 0:
        return xp.zeros_like(x)
    return x * (bound / xp.maximum(_magnitude(x, axis), bound))


def prox_l2_conjugate(sigma: float, v, y):
    """Prox of ``sigma f*`` for the data term ``f(z) = ||z - y||^2 / 2``: ``(v - sigma y) / (1 + sigma)``."""
    return (v - sigma * y) / (1 + sigma)
