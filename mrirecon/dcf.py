"""Density compensation weights for non-Cartesian k-space: Pipe–Menon iteration and the radial ramp.

Weights are the k-space area each sample stands for, in Cartesian cells (cycles/FOV squared or cubed),
so that ``A^H (w * A x) ~ x`` for the orthonormal ``NUFFT``: a gridding reconstruction keeps the
image scale.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .kernels.backend import get_array_module
from .kernels.nufft import kernel_transform
from .nufft import nufft_plan


def ramp_dcf(coord: Any) -> Any:
    """Analytic weights of full-diameter radial spokes, 2D (spoke, readout, 2) or 3D kooshball (…, 3).

    A sample at radius |k| owns the ring (2D: pi |k| dk / n_spokes) or shell (3D: 2 pi k^2 dk / n_spokes)
    segment it shares with the other spokes; the centre sample owns the disc (ball) of radius dk/2
    shared by all spokes. ``dk`` is the readout spacing.
    """
    xp = get_array_module(coord)
    if coord.ndim != 3 or coord.shape[-1] not in (2, 3) or coord.shape[1] < 2:
        raise InputError("trajectory", f"ramp DCF needs a radial trajectory (spoke, readout, 2 or 3), got {tuple(coord.shape)}")
    n_spokes, ndim = coord.shape[0], coord.shape[-1]
    radius = xp.sqrt(xp.sum(coord.astype(xp.float64) ** 2, axis=-1))
    dk = float(xp.median(xp.abs(xp.diff(radius[0]))))
    if ndim == 2:
        w = math.pi * radius * dk / n_spokes
        centre = math.pi * (dk / 2) ** 2 / n_spokes
    else:
        w = 2 * math.pi * radius**2 * dk / n_spokes
        centre = 4 / 3 * math.pi * (dk / 2) ** 3 / n_spokes
    return xp.where(radius < dk / 2, centre, w).astype(xp.float32)


def pipe_menon_dcf(coord: Any, image_shape: Sequence[int], n_iter: int = 15, oversamp: float = 2.0, width: int = 4) -> Any:
    """Pipe–Menon weights (Pipe & Menon, MRM 41:179, 1999) for any trajectory (..., ndim) -> (...).

    Iterates w <- w / (C w) where C spreads the weights onto the oversampled grid with the NUFFT's
    Kaiser–Bessel kernel phi and interpolates back (a convolution with phi * phi): at convergence the
    weighted sampling density convolved with it is flat (1) wherever k-space is sampled. The result is
    rescaled from grid cells to Cartesian cells by the integral of phi * phi, (integral of phi)^2, and
    the oversampling. The default kernel (oversampling 2, width 4) spans 2 cycles/FOV: a wider one
    (1.25, 6: 4.8) smears the rim of k-space inwards (gridding NRMSE 0.22 instead of 0.08 on a 48^2
    phantom from 76 radial spokes, where the analytic ramp gives 0.08).
    """
    if n_iter < 1:
        raise InputError("dcf_iter", f"need at least one Pipe–Menon iteration, got {n_iter}")
    xp = get_array_module(coord)
    plan = nufft_plan(coord, image_shape, oversamp, width)
    w = xp.ones((plan.n_samples, 1), dtype=xp.complex64)
    for _ in range(n_iter):
        density = plan.interp(plan.spread(w)).real
        w = w / xp.maximum(density, np.float32(1e-12))
    area = 1.0
    for n, g in zip(plan.image_shape, plan.grid_shape):
        area *= float(kernel_transform(np.zeros(1), plan.width, plan.beta)[0]) ** 2 * n / g
    return (w.real[:, 0] * np.float32(area)).reshape(coord.shape[:-1]).astype(xp.float32)
