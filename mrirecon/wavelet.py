"""Multi-level orthogonal Daubechies wavelet transform as a linear operator (sparsifying transform for CS).

``Wavelet(shape, ndim, wave, levels)`` maps an array (*batch, *spatial) to its coefficients, all bands
flattened into one trailing axis (*batch, n_coefficients). When every level sees even lengths (each
transformed axis divisible by 2**levels) the operator is unitary: ``W^H W = W W^H = I``. Otherwise a
level pads an odd length with one zero, the coefficient vector is slightly longer than the image, and
the operator is an isometry: ``W^H W = I`` and ``W^H`` is the exact adjoint, while ``W W^H`` is the
projection onto the range. ``shift`` makes it ``W S`` with ``S`` a circular shift of the image (cycle
spinning: ``shifted`` gives the same transform at another shift, for free on even sizes).
Runs on NumPy or CuPy (``kernels/wavelet.py``).
"""
from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence

from .kernels.backend import get_array_module
from .kernels.wavelet import (
    daubechies,
    level_shapes,
    level_shifts,
    max_level,
    wavedec,
    waverec,
)
from .linop import LinearOperator


def parse_wave(wave: str) -> int:
    """Order of a Daubechies wavelet name ``"db1"`` ... ``"db8"``; ValueError for anything else."""
    m = re.fullmatch(r"db([1-8])", wave)
    if m is None:
        raise ValueError(f"unknown wavelet {wave!r}: use 'db1' ... 'db8'")
    return int(m.group(1))


class Wavelet(LinearOperator):
    """Orthogonal Daubechies wavelet transform of the last ``ndim`` axes (all axes when None).

    ``levels`` None picks the most levels whose coarsest band is still at least one filter long
    (PyWavelets' rule, for the shortest transformed axis). ``shift`` (one int per transformed axis)
    transforms ``roll(x, shift)`` instead of ``x``; None is no shift.
    """

    def __init__(
        self,
        shape: Sequence[int],
        ndim: int | None = None,
        wave: str = "db4",
        levels: int | None = None,
        shift: Sequence[int] | None = None,
    ):
        shape = tuple(int(s) for s in shape)
        ndim = len(shape) if ndim is None else int(ndim)
        if not 1 <= ndim <= len(shape):
            raise ValueError(f"Wavelet: ndim {ndim} does not fit shape {shape}")
        order = parse_wave(wave)
        if levels is None:
            levels = max_level(min(shape[-ndim:]), order)
        if levels < 1:
            raise ValueError(f"Wavelet: levels must be >= 1, got {levels}")
        self.filters = daubechies(order)
        self.ndim, self.levels, self.wave = ndim, int(levels), wave
        self.shift = level_shifts(shift, ndim)
        self.shapes = level_shapes(shape, ndim, self.levels)
        batch = shape[: len(shape) - ndim]
        # per level: 2^ndim - 1 detail bands of the next (halved, padded) shape; then the coarsest band
        band_sizes = []
        for sub in self.shapes[1:]:
            band_sizes += [math.prod(sub[len(batch) :])] * (2**ndim - 1)
        band_sizes.append(math.prod(self.shapes[-1][len(batch) :]))
        self.band_sizes = tuple(band_sizes)
        super().__init__(batch + (sum(band_sizes),), shape, f"Wavelet({wave}, {self.levels} levels)")

    def shifted(self, shift: Sequence[int]) -> Wavelet:
        """The same transform of ``roll(x, shift)`` (bands, sizes and shapes unchanged)."""
        out = copy.copy(self)
        out.shift = level_shifts(shift, self.ndim)
        return out

    @property
    def unitary(self) -> bool:
        """True when no level pads (every transformed axis divisible by 2**levels): W W^H = I too."""
        return all(s % 2**self.levels == 0 for s in self.ishape[-self.ndim :])

    def _apply(self, x):
        xp = get_array_module(x)
        batch = self.oshape[:-1]
        bands = wavedec(x, self.filters, self.ndim, self.levels, self.shift)
        return xp.concatenate([b.reshape(batch + (-1,)) for b in bands], axis=-1)

    def _adjoint(self, y):
        batch = self.oshape[:-1]
        bands = []
        start = 0
        n_detail = 2**self.ndim - 1
        for i, size in enumerate(self.band_sizes):
            shape = self.shapes[min(i // n_detail + 1, self.levels)]
            bands.append(y[..., start : start + size].reshape(batch + shape[len(batch) :]))
            start += size
        return waverec(bands, self.filters, self.ndim, self.shapes, self.shift)

