"""Partial-Fourier methods: POCS and homodyne, per coil, then root-sum-of-squares."""
from __future__ import annotations

from typing import Any

from ..coils import rss
from ..data import KSpace
from ..kernels.backend import get_array_module
from ..partial_fourier import homodyne as homodyne_images
from ..partial_fourier import pocs as pocs_images
from . import register, require_cartesian


@register(
    "pocs",
    summary="POCS partial Fourier: low-resolution phase constraint per coil, then RSS (magnitude)",
    reference="Haacke et al., JMR 92:126 (1991)",
)
def pocs(ksp: KSpace, *, n_iter: int = 10) -> Any:
    """Partial-Fourier image (*spatial), 2D or 3D; the asymmetric axes come from the mask and the header's
    k-space centre. Fully sampled (symmetric) k-space gives the zero-filled RSS image.

    n_iter: POCS iterations (phase constraint + data consistency); 10 converges on the phantoms and brain.
    """
    require_cartesian(ksp, "pocs")
    xp = get_array_module(ksp.data)
    images = pocs_images(ksp.data, ksp.mask, ksp.header.kspace_centre, n_iter)
    return rss(images, axis=0).astype(xp.complex64)


@register(
    "homodyne",
    summary="Homodyne partial Fourier: ramp-weighted k-space, low-resolution phase removed, real part, RSS",
    reference="Noll et al., IEEE TMI 10:154 (1991)",
)
def homodyne(ksp: KSpace) -> Any:
    """Partial-Fourier image (*spatial) in one pass (no iterations); slightly less accurate than POCS
    where the phase varies quickly, but it never amplifies noise. No parameters.
    """
    require_cartesian(ksp, "homodyne")
    xp = get_array_module(ksp.data)
    images = homodyne_images(ksp.data, ksp.mask, ksp.header.kspace_centre)
    return rss(images, axis=0).astype(xp.complex64)
