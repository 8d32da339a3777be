"""CG-SENSE on ESPIRiT, Walsh or Inati coil maps: min_x ||M F S x - y||^2 + lam_abs ||x||^2, solved by conjugate gradients."""
from __future__ import annotations

from typing import Any

from ..coils import max_coil_power, sampled_mask, task_maps
from ..data import KSpace
from ..linop import FFT, Sampling, Sense, SenseNormal
from ..solvers import conjugate_gradient
from . import register, require_cartesian
from .params import CoilMapParams


@register(
    "sense",
    summary="CG-SENSE with ESPIRiT, Walsh or Inati coil maps (Tikhonov-regularised least squares)",
    reference="Pruessmann et al., MRM 46:638 (2001); Uecker et al., MRM 71:990 (2014); Walsh et al., MRM 43:682 (2000)",
)
def sense(
    ksp: KSpace,
    *,
    lam: float = 0.01,
    max_iter: int = 30,
    tol: float = 1e-4,
    coils: CoilMapParams = CoilMapParams(),
) -> Any:
    """SENSE image (*spatial), 2D or 3D Cartesian, any undersampling pattern.

    Without a mask, samples that are zero in every coil count as not acquired.

    lam: Tikhonov weight relative to the data: the absolute weight is lam * max_r sum_c |S_c(r)|^2,
        the bound of the largest eigenvalue of A^H A (1 for ESPIRiT maps).
    max_iter: conjugate-gradient iterations.
    tol: stop early when the CG residual falls below tol * ||A^H y||.
    coils: coil maps: maps, coil_maps, calib, kernel, thresh, crop (``CoilMapParams``).
    """
    require_cartesian(ksp, "sense")
    y = ksp.data
    maps = task_maps(ksp, coils, "sense")
    mask = sampled_mask(y, ksp.mask)
    a = Sampling(y.shape, mask) @ FFT(y.shape, ndim=len(ksp.spatial_dims)) @ Sense(maps)
    lam_abs = lam * max_coil_power(maps)
    # CG runs where the FFT centring is folded into maps and mask (no shift copies per iteration)
    normal = SenseNormal.of(a, lam_abs)  # shares the model's folded maps and coil buffer
    return normal.centre(conjugate_gradient(normal, normal.uncentre(a.H(y)), max_iter=max_iter, tol=tol))
