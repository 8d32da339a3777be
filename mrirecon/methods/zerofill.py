"""Zero-filled reconstruction: inverse FFT of the acquired samples, root-sum-of-squares over coils."""
from __future__ import annotations

from typing import Any

from ..data import KSpace
from ..kernels.backend import get_array_module
from ..kernels.fft import fft_uncentred
from ..kernels.rss import rss_combine
from . import register, require_cartesian


@register(
    "zerofill",
    summary="Inverse FFT of the zero-filled k-space and root-sum-of-squares coil combination (magnitude)",
    reference="Roemer et al., MRM 16:192 (1990) for the RSS combination",
)
def zerofill(ksp: KSpace) -> Any:
    """The baseline every other method is compared with; no parameters.

    Returns the RSS magnitude as a complex64 array with zero phase (RSS discards the phase).
    Equal to ``rss(ifftc(data))`` without its shifts: the input ``ifftshift`` only multiplies each
    coil image by a unit-modulus phase ramp, which the magnitude removes, and the output ``fftshift``
    is a roll of the image that the fused RSS kernel applies as it writes. So one out-of-place,
    uncentred inverse FFT (the input stays intact) and one read of the coil images remain.
    """
    require_cartesian(ksp, "zerofill")
    xp = get_array_module(ksp.data)
    spatial = ksp.spatial_shape
    coil_images = fft_uncentred(ksp.data, tuple(range(-len(spatial), 0)), inverse=True, overwrite=False)
    return rss_combine(coil_images, dtype=xp.complex64, shift=tuple(n // 2 for n in spatial))
