"""GRAPPA method: fill the skipped lines (``mrirecon.grappa``), then combine the coil images."""
from __future__ import annotations

from typing import Any

from ..coils import espirit_maps, rss
from ..data import KSpace
from ..errors import InputError
from ..grappa import DEFAULT_LAMBDA
from ..grappa import grappa as grappa_fill
from ..kernels.backend import get_array_module
from ..kernels.fft import ifftc
from ..linop import Sense
from ..partial_fourier import pocs as pocs_images
from . import register, require_cartesian

COMBINES = ("rss", "sense")


@register(
    "grappa",
    summary="GRAPPA k-space interpolation (1D or ky-kz acceleration), RSS or coil-map combination",
    reference="Griswold et al., MRM 47:1202 (2002); Blaimer et al., MRM 55:16 (2006)",
)
def grappa(
    ksp: KSpace,
    *,
    kernel_y: int = 4,
    kernel_x: int = 5,
    kernel_z: int = 3,
    lam: float = DEFAULT_LAMBDA,
    combine: str = "rss",
    pocs_iter: int = 0,
) -> Any:
    """GRAPPA image (*spatial) from equispaced Cartesian k-space, 2D or 3D.

    Calibrates on the separate ACS lines (``KSpace.calibration``) when present, else on the fully sampled
    centre; the lattice of acquired lines (acceleration, first line) is read from the mask.

    kernel_y: kernel size along ky in acquired lines.
    kernel_x: kernel size along the readout kx in samples.
    kernel_z: kernel size along kz in acquired partitions (3D only).
    lam: Tikhonov weight relative to trace(A^H A) / n_columns of the calibration matrix.
    combine: "rss" (magnitude) or "sense" (complex, ESPIRiT maps from the GRAPPA-filled k-space).
    pocs_iter: POCS iterations for an unacquired partial-Fourier side after GRAPPA (0: leave it zero).
    """
    require_cartesian(ksp, "grappa")
    if combine not in COMBINES:
        raise InputError(None, f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    if lam < 0 or pocs_iter < 0:
        raise InputError(None, f"lam and pocs_iter must be >= 0, got lam={lam}, pocs_iter={pocs_iter}")
    xp = get_array_module(ksp.data)
    ndim = len(ksp.spatial_dims)
    kernel = (kernel_y, kernel_x) if ndim == 2 else (kernel_z, kernel_y, kernel_x)
    source = ksp.header.source or None
    filled, filled_mask = grappa_fill(ksp.data, ksp.mask, ksp.calibration, kernel, lam, source)
    axes = tuple(range(-ndim, 0))
    if pocs_iter:
        images = pocs_images(filled, filled_mask, ksp.header.kspace_centre, pocs_iter)
    else:
        images = ifftc(filled, axes)
    if combine == "rss":
        return rss(images, axis=0).astype(xp.complex64)
    maps = espirit_maps(filled, mask=filled_mask)
    weight = xp.sum(maps.real**2 + maps.imag**2, axis=0)
    return Sense(maps).H(images) / xp.maximum(weight, xp.float32(1e-6))
