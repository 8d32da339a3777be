"""Partial-Fourier reconstruction: fill the unacquired side of asymmetric k-space from Hermitian symmetry.

A real object has Hermitian-symmetric k-space; an MR image is real up to a slowly varying phase. When
only a little more than half of k-space is acquired along an axis (e.g. 5/8 of the ky lines), that
phase is estimated from the symmetric low-resolution centre and the missing side is recovered:

- POCS (Haacke et al., JMR 92:126, 1991): alternate between imposing the low-resolution phase in image
  space and restoring the acquired samples in k-space (per coil); converges to an image with the right
  phase whose acquired k-space is the data.
- Homodyne (Noll et al., IEEE TMI 10:154, 1991): weight the unpaired acquired side by 2 (with a ramp
  through the symmetric centre), demodulate the low-resolution phase and keep the real part.

The asymmetric extent comes from the mask and the k-space centre (``header.kspace_centre``); an axis
counts as partial when the samples on one side of the centre reach less than ``SYMMETRY_RATIO`` of the
other side's reach.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .coils import sampled_mask
from .kernels.backend import get_array_module, to_numpy
from .kernels.fft import fftc, ifftc

SYMMETRY_RATIO = 0.9


@dataclass(frozen=True)
class PartialAxis:
    """One asymmetric axis: k-space ``centre`` index, half-width ``half`` of the symmetric acquired band
    ``[centre - half, centre + half]``, and ``low_missing`` (True when the lines below it are missing)."""

    axis: int
    centre: int
    half: int
    low_missing: bool


def kspace_centre(shape: Sequence[int], header_centre: Sequence[int] | None) -> tuple[int, ...]:
    """Index of k = 0 per spatial axis: the header's (kz, ky, kx) centre, last ``len(shape)`` entries, or
    ``n // 2`` (centred FFT) when the header has none."""
    if header_centre is None:
        return tuple(n // 2 for n in shape)
    return tuple(int(c) for c in tuple(header_centre)[-len(shape):])


def partial_axes(mask, centre: Sequence[int]) -> list[PartialAxis]:
    """The asymmetrically sampled axes of a bool ``mask`` over the spatial dims, given the k-space centre."""
    mask = np.asarray(to_numpy(mask), dtype=bool)
    found = []
    for ax, c in enumerate(centre):
        lines = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        if not lines.size:
            continue
        below, above = c - int(lines[0]), int(lines[-1]) - c
        if min(below, above) < SYMMETRY_RATIO * max(below, above):
            found.append(PartialAxis(ax, int(c), max(min(below, above), 0), below < above))
    return found


def _band(n: int, p: PartialAxis):
    """Indices relative to the centre and the symmetric band along one axis (host arrays)."""
    k = np.arange(n) - p.centre
    return k, np.abs(k) <= p.half


def lowres_phase(kspace, axes: list[PartialAxis]):
    """Phase (coil, *spatial) of each coil's low-resolution image from the symmetric centre band, tapered
    by a Hann window along every partial axis so that the band edge does not ring into the phase."""
    xp = get_array_module(kspace)
    ndim = kspace.ndim - 1
    low = kspace
    for p in axes:
        n = kspace.shape[1 + p.axis]
        k, band = _band(n, p)
        window = np.where(band, 0.5 + 0.5 * np.cos(np.pi * k / (p.half + 1)), 0.0).astype(np.float32)
        low = low * xp.asarray(window.reshape((n,) + (1,) * (ndim - 1 - p.axis)))
    return xp.angle(ifftc(low, tuple(range(-ndim, 0))))


def pocs(kspace, mask=None, centre: Sequence[int] | None = None, n_iter: int = 10):
    """POCS partial-Fourier coil images (coil, *spatial) from k-space (coil, *spatial).

    ``mask``: acquired samples (None: the non-zero ones); ``centre``: k = 0 index per spatial axis (None:
    ``n // 2``). Without an asymmetric axis the zero-filled coil images come back unchanged.
    """
    xp = get_array_module(kspace)
    ndim = kspace.ndim - 1
    axes_fft = tuple(range(-ndim, 0))
    acquired = sampled_mask(kspace, mask)
    centre = kspace_centre(kspace.shape[1:], centre)
    axes = partial_axes(acquired, centre)
    image = ifftc(kspace, axes_fft)
    if not axes:
        return image
    phase = xp.exp(1j * lowres_phase(kspace, axes)).astype(xp.complex64)
    for _ in range(n_iter):
        estimate = fftc(xp.abs(image) * phase, axes_fft)
        image = ifftc(xp.where(acquired, kspace, estimate), axes_fft)
    return image


def homodyne(kspace, mask=None, centre: Sequence[int] | None = None):
    """Homodyne partial-Fourier coil images (coil, *spatial), real-valued up to the removed phase.

    The unpaired acquired side is weighted by 2 and the symmetric band by a linear ramp from 0 to 2, which
    restores the missing side's energy by conjugate symmetry; the low-resolution phase is then removed and
    the real part kept. Without an asymmetric axis the zero-filled coil images come back unchanged.
    """
    xp = get_array_module(kspace)
    ndim = kspace.ndim - 1
    centre = kspace_centre(kspace.shape[1:], centre)
    axes = partial_axes(sampled_mask(kspace, mask), centre)
    if not axes:
        return ifftc(kspace, tuple(range(-ndim, 0)))
    weighted = kspace
    for p in axes:
        n = kspace.shape[1 + p.axis]
        k, band = _band(n, p)
        toward_acquired = k if p.low_missing else -k
        ramp = np.where(band, 1.0 + toward_acquired / (p.half + 1), np.where(toward_acquired > 0, 2.0, 0.0))
        weighted = weighted * xp.asarray(ramp.astype(np.float32).reshape((n,) + (1,) * (ndim - 1 - p.axis)))
    phase = lowres_phase(kspace, axes)
    image = ifftc(weighted, tuple(range(-ndim, 0))) * xp.exp(-1j * phase).astype(xp.complex64)
    return image.real.astype(xp.complex64)
