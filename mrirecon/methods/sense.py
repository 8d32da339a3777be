"""CG-SENSE on ESPIRiT coil maps: min_x ||M F S x - y||^2 + lam_abs ||x||^2, solved by conjugate gradients."""
from __future__ import annotations

from typing import Any

from ..coils import centred_box, espirit_maps, sampled_mask
from ..data import KSpace
from ..errors import InputError
from ..kernels.backend import get_array_module
from ..linop import FFT, Sampling, Sense
from ..solvers import conjugate_gradient
from . import register, require_cartesian


def _espirit_for(ksp: KSpace, calib: int, kernel: int, thresh: float, crop: float):
    """ESPIRiT maps from the separate calibration scan when there is one, else from the data's centre."""
    xp = get_array_module(ksp.data)
    if ksp.calibration is None:
        return espirit_maps(ksp.data, calib=calib, kernel=kernel, thresh=thresh, crop=crop, mask=ksp.mask)
    cal = xp.asarray(ksp.calibration, dtype=xp.complex64)
    if cal.shape[0] != ksp.n_coils or cal.ndim != ksp.data.ndim or any(
        c > n for c, n in zip(cal.shape[1:], ksp.spatial_shape)
    ):
        raise InputError(
            ksp.header.source or None,
            f"calibration data {tuple(cal.shape)} does not fit k-space {tuple(ksp.data.shape)} (coil, *spatial)",
        )
    padded = xp.zeros(ksp.data.shape, dtype=xp.complex64)
    padded[(slice(None),) + centred_box(ksp.spatial_shape, cal.shape[1:])] = cal
    return espirit_maps(padded, calib=calib, kernel=kernel, thresh=thresh, crop=crop)


@register(
    "sense",
    summary="CG-SENSE with ESPIRiT coil maps (Tikhonov-regularised least squares)",
    reference="Pruessmann et al., MRM 46:638 (2001); Uecker et al., MRM 71:990 (2014)",
)
def sense(
    ksp: KSpace,
    *,
    lam: float = 0.01,
    max_iter: int = 30,
    tol: float = 1e-4,
    maps: Any = None,
    calib: int = 24,
    kernel: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
) -> Any:
    """SENSE image (*spatial), 2D or 3D Cartesian, any undersampling pattern.

    Without a mask, samples that are zero in every coil count as not acquired.

    lam: Tikhonov weight relative to the data: the absolute weight is lam * max_r sum_c |S_c(r)|^2,
        the bound of the largest eigenvalue of A^H A (1 for ESPIRiT maps).
    max_iter: conjugate-gradient iterations.
    tol: stop early when the CG residual falls below tol * ||A^H y||.
    maps: coil sensitivities (coil, *spatial); None estimates them with ESPIRiT.
    calib: ESPIRiT calibration box edge (shrunk to the fully sampled centre).
    kernel: ESPIRiT kernel edge.
    thresh: ESPIRiT singular-value threshold relative to the largest.
    crop: ESPIRiT eigenvalue threshold; maps are zero below it.
    """
    require_cartesian(ksp, "sense")
    xp = get_array_module(ksp.data)
    y = ksp.data
    if maps is None:
        maps = _espirit_for(ksp, calib, kernel, thresh, crop)
    maps = xp.asarray(maps, dtype=xp.complex64)
    if tuple(maps.shape) != tuple(y.shape):
        raise InputError(None, f"coil maps have shape {tuple(maps.shape)}, k-space has {tuple(y.shape)}")
    a = Sampling(y.shape, sampled_mask(y, ksp.mask)) @ FFT(y.shape, ndim=len(ksp.spatial_dims)) @ Sense(maps)
    lam_abs = lam * float(xp.max(xp.sum(maps.real**2 + maps.imag**2, axis=0)))
    normal = a.N
    return conjugate_gradient(lambda v: normal(v) + lam_abs * v, a.H(y), max_iter=max_iter, tol=tol)
