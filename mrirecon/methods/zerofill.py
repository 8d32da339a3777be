"""Zero-filled reconstruction: inverse FFT of the acquired samples, root-sum-of-squares over coils."""
from __future__ import annotations

from typing import Any

from ..coils import rss
from ..data import KSpace
from ..kernels.backend import get_array_module
from ..kernels.fft import ifftc
from . import register, require_cartesian


@register(
    "zerofill",
    summary="Inverse FFT of the zero-filled k-space and root-sum-of-squares coil combination (magnitude)",
    reference="Roemer et al., MRM 16:192 (1990) for the RSS combination",
)
def zerofill(ksp: KSpace) -> Any:
    """The baseline every other method is compared with; no parameters.

    Returns the RSS magnitude as a complex64 array with zero phase (RSS discards the phase).
    """
    require_cartesian(ksp, "zerofill")
    xp = get_array_module(ksp.data)
    coil_images = ifftc(ksp.data, tuple(range(-len(ksp.spatial_dims), 0)))
    return rss(coil_images, axis=0).astype(xp.complex64)
