"""GRAPPA: fill skipped Cartesian k-space lines from their acquired neighbours in all coils.

Griswold et al., MRM 47:1202 (2002); 2D (ky-kz) acceleration as in Blaimer et al., MRM 55:16 (2006).

The acquired phase-encoding lines lie on a lattice: every ``R_a``-th line along each accelerated axis
(``ky``; ``kz`` and ``ky`` for 3D), starting at an offset. Taking every ``R``-th sample of the k-space
from that offset gives the *lattice array*; each lattice point ``n`` owns the cell of ``prod(R) - 1``
skipped points ``offset + n R + delta`` (delta != 0). A GRAPPA kernel predicts every cell point, in
every coil, as a linear combination of a window of ``kernel`` lattice points (all coils) around ``n``.

Calibration trains the kernel on a fully sampled block (separate ACS or the centre of the data): each
sub-lattice of that block (one per shift in the cell) gives source windows and their known cell points;
the weights solve the Tikhonov-regularised least squares ``(A^H A + lam I) W = A^H B`` with
``lam = lam_rel * trace(A^H A) / n_columns``, so the same ``lam_rel`` suits any data scale.

Application multiplies the weights with the windows of the lattice array for every lattice point at once
(one small matrix product per window entry, accumulated; the same code on NumPy and CuPy). A skipped point
is filled only when every source sample of its window inside the matrix was acquired (k-space beyond the
matrix counts as zero), so unacquired partial-Fourier regions and asymmetric echoes stay empty (for POCS
later) instead of being filled from zeros; acquired samples are never changed.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .coils import fully_sampled_centre, sampled_mask
from .errors import InputError
from .kernels.backend import get_array_module, to_numpy

DEFAULT_KERNEL_2D = (4, 5)  # (ky, kx): 4 acquired lines, 5 readout samples
DEFAULT_KERNEL_3D = (3, 4, 5)  # (kz, ky, kx)
DEFAULT_LAMBDA = 0.01
MIN_LATTICE_FILL = 0.7  # fraction of the lattice that must be acquired (3D scans may cut the corners)
AXIS_NAMES = {2: ("ky", "kx"), 3: ("kz", "ky", "kx")}


@dataclass(frozen=True)
class Lattice:
    """Regular sampling of the phase-encoding axes: step ``accel`` and first line ``offset`` per spatial
    axis (the readout, last, always has step 1 and offset 0)."""

    accel: tuple[int, ...]
    offset: tuple[int, ...]

    @property
    def cell(self) -> list[tuple[int, ...]]:
        """Offsets ``delta`` of the skipped points in one lattice cell (``delta != 0``)."""
        return [d for d in itertools.product(*(range(r) for r in self.accel)) if any(d)]


@dataclass(frozen=True)
class GrappaWeights:
    """Calibrated GRAPPA weights: (coil * prod(kernel), n_cell * coil) on the data's device."""

    weights: Any
    accel: tuple[int, ...]
    kernel: tuple[int, ...]
    n_coils: int


def _kernel_centre(kernel: Sequence[int]) -> tuple[int, ...]:
    """Index of the window entry that sits on the lattice point owning the cell (the cell lies between it
    and the next entry, so an even kernel is symmetric about the cell)."""
    return tuple((k - 1) // 2 for k in kernel)


def _shifted(lattice, kernel: Sequence[int]) -> list:
    """Views of ``lattice`` (coil, *m), one per ``kernel`` window entry (C order), each (coil, *out) over
    the "valid" window positions: entry ``o`` of the window at position ``p`` is ``view_o[:, p]``."""
    out = [n - k + 1 for n, k in zip(lattice.shape[1:], kernel)]
    return [
        lattice[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(offs, out))]
        for offs in itertools.product(*(range(k) for k in kernel))
    ]


def _windows(lattice, kernel: Sequence[int]):
    """Source matrix (coil * prod(kernel), n_positions) of every full ``kernel`` window of ``lattice``."""
    xp = get_array_module(lattice)
    shifted = _shifted(lattice, kernel)
    return xp.stack(shifted, axis=1).reshape(lattice.shape[0] * len(shifted), -1)


def _sublattice(x, start: Sequence[int], count: Sequence[int], step: Sequence[int]):
    """``x`` (coil, *spatial) at ``start + i * step`` for ``i < count`` along every spatial axis."""
    return x[(slice(None),) + tuple(slice(a, a + n * r, r) for a, n, r in zip(start, count, step))]


def _axis_names(ndim: int) -> tuple[str, ...]:
    return AXIS_NAMES.get(ndim, tuple(f"axis {a}" for a in range(ndim)))


def _box(shape: Sequence[int]) -> str:
    return " x ".join(str(int(s)) for s in shape)


def _outer_and(vectors: list[np.ndarray]) -> np.ndarray:
    """Bool grid that is True where every per-axis bool vector is True (outer AND)."""
    n = len(vectors)
    shaped = [v.reshape((1,) * a + (-1,) + (1,) * (n - 1 - a)) for a, v in enumerate(vectors)]
    return functools.reduce(np.logical_and, shaped)


def sampling_lattice(mask, source: str | None = None) -> Lattice:
    """The regular line lattice of a Cartesian ``mask`` (bool over the spatial dims, readout last).

    Lines in the fully sampled centre (calibration) are ignored; the step along each phase-encoding axis
    is the greatest common divisor of the distances between the remaining acquired lines. ``InputError``
    when the mask is not whole lines on a lattice: samples that vary along the readout (2D random masks),
    or lattice lines mostly missing (random or variable-density phase encoding; up to
    ``1 - MIN_LATTICE_FILL`` may be missing, e.g. cut k-space corners in 3D).
    """
    mask = np.asarray(to_numpy(mask), dtype=bool)
    names = _axis_names(mask.ndim)
    phase = mask.any(axis=-1)  # acquired phase-encoding positions: (ky,) or (kz, ky)
    readout = mask.any(axis=tuple(range(mask.ndim - 1)))
    if phase.any() and mask[phase][:, readout].mean() < MIN_LATTICE_FILL:
        raise InputError(
            source,
            f"sampling varies along the readout ({names[-1]}): GRAPPA needs whole acquired lines on a regular "
            "lattice (use 'sense' or a compressed-sensing method)",
        )
    box = fully_sampled_centre(phase)  # the calibration block of the phase-encoding plane
    accel, offset, on_lattice, calib = [], [], [], []
    for ax, n in enumerate(phase.shape):
        lines = phase.any(axis=tuple(a for a in range(phase.ndim) if a != ax))
        index = np.arange(n)
        inside = (index >= n // 2 - box[ax] // 2) & (index < n // 2 - box[ax] // 2 + box[ax])
        outside = np.flatnonzero(lines & ~inside)
        step = int(np.gcd.reduce(np.diff(outside))) if outside.size > 1 else 1
        first = int(outside[0] % step) if outside.size else 0
        acquired = np.flatnonzero(lines)
        extent = (index >= acquired[0]) & (index <= acquired[-1]) if acquired.size else np.zeros(n, bool)
        accel.append(step)
        offset.append(first)
        on_lattice.append(((index - first) % step == 0) & extent)
        calib.append(inside)
    expected = _outer_and(on_lattice) & ~_outer_and(calib)
    if expected.any() and phase[expected].mean() < MIN_LATTICE_FILL:
        raise InputError(
            source,
            f"sampling of {' x '.join(names[:-1])} is not a regular lattice of lines: GRAPPA needs equispaced "
            "undersampling (use 'sense' or a compressed-sensing method)",
        )
    return Lattice(tuple(accel) + (1,), tuple(offset) + (0,))


def _check_fit(calib_shape: Sequence[int], accel: Sequence[int], kernel: Sequence[int], n_coils: int,
               source: str | None) -> None:
    """``InputError`` when the calibration block cannot train this kernel at this acceleration."""
    names = _axis_names(len(calib_shape))
    for name, n, r, k in zip(names, calib_shape, accel, kernel):
        if k > n:
            raise InputError(
                source,
                f"GRAPPA kernel {_box(kernel)} is larger than the calibration region {_box(calib_shape)} "
                f"along {name}",
            )
        jc = (k - 1) // 2
        span = jc * r + max((k - 1 - jc) * r, r - 1) + 1
        if span > n:
            raise InputError(
                source,
                f"acceleration {r} along {name} cannot be calibrated: a kernel of {k} lines spans {span} lines "
                f"but the calibration region has {n} (use more calibration lines or a smaller kernel)",
            )
    n_eq = 0
    for shift in itertools.product(*(range(r) for r in accel)):
        counts = [len(range(s + r - 1, n, r)) - k + 1 for s, r, n, k in zip(shift, accel, calib_shape, kernel)]
        n_eq += math.prod(max(c, 0) for c in counts)
    n_unknowns = n_coils * math.prod(kernel)
    if n_eq < n_unknowns:
        raise InputError(
            source,
            f"calibration region {_box(calib_shape)} gives {n_eq} equations for {n_unknowns} GRAPPA weights per "
            f"target at acceleration {_box(accel[:-1])}: too small (use more calibration lines or a smaller kernel)",
        )


def grappa_calibrate(calib, accel: Sequence[int], kernel: Sequence[int], lam: float = DEFAULT_LAMBDA,
                     source: str | None = None) -> GrappaWeights:
    """Train GRAPPA weights on a fully sampled block ``calib`` (coil, *spatial) for lattice steps ``accel``
    (one per spatial axis, readout 1) and a ``kernel`` window of lattice points (one size per axis).

    ``lam`` is the Tikhonov weight relative to ``trace(A^H A) / n_columns``. The Gram matrix is formed on
    the data's device; the small solve runs on the host in double precision.
    """
    xp = get_array_module(calib)
    accel, kernel = tuple(int(r) for r in accel), tuple(int(k) for k in kernel)
    n_coils, *shape = calib.shape
    if len(accel) != len(shape) or len(kernel) != len(shape):
        raise InputError(source, f"kernel {kernel} and acceleration {accel} need one entry per spatial axis {shape}")
    if min(kernel) < 1:
        raise InputError(source, f"GRAPPA kernel sizes must be >= 1, got {_box(kernel)}")
    _check_fit(shape, accel, kernel, n_coils, source)
    lattice = Lattice(accel, (0,) * len(shape))
    jc = _kernel_centre(kernel)
    gram = xp.zeros((n_coils * math.prod(kernel),) * 2, dtype=xp.complex64)
    rhs = xp.zeros((gram.shape[0], n_coils * len(lattice.cell)), dtype=xp.complex64)
    for shift in itertools.product(*(range(r) for r in accel)):
        m = [len(range(s + r - 1, n, r)) for s, r, n in zip(shift, accel, shape)]  # complete cells only
        if any(mi < k for mi, k in zip(m, kernel)):
            continue
        src = _windows(_sublattice(calib, shift, m, accel), kernel)
        inner = (slice(None),) + tuple(slice(c, c + mi - k + 1) for c, mi, k in zip(jc, m, kernel))
        targets = xp.concatenate([
            _sublattice(calib, tuple(s + d for s, d in zip(shift, delta)), m, accel)[inner].reshape(n_coils, -1)
            for delta in lattice.cell
        ])
        src_h = src.conj()
        gram += src_h @ src.T
        rhs += src_h @ targets.T
    gram_h = to_numpy(gram).astype(np.complex128)
    reg = lam * float(np.trace(gram_h).real) / gram_h.shape[0]
    weights = np.linalg.solve(gram_h + reg * np.eye(gram_h.shape[0]), to_numpy(rhs).astype(np.complex128))
    return GrappaWeights(xp.asarray(weights.astype(np.complex64)), accel, kernel, n_coils)


def grappa_apply(kspace, mask, weights: GrappaWeights, lattice: Lattice):
    """Fill the skipped points of ``kspace`` (coil, *spatial) on ``lattice`` with calibrated ``weights``.

    Returns ``(filled, filled_mask)``: acquired samples unchanged, a skipped point filled only where every
    source of its window inside the matrix was acquired; ``filled_mask`` marks acquired + filled samples.
    """
    xp = get_array_module(kspace)
    n_coils, *shape = kspace.shape
    if weights.n_coils != n_coils or weights.accel != lattice.accel:
        raise InputError(
            None,
            f"GRAPPA weights for {weights.n_coils} coils at acceleration {_box(weights.accel)} do not fit "
            f"k-space with {n_coils} coils sampled at {_box(lattice.accel)}",
        )
    kernel, jc = weights.kernel, _kernel_centre(weights.kernel)
    acquired = sampled_mask(kspace, mask)
    # A lattice that does not start at line 0 gets one virtual point before the matrix, whose cell covers
    # the first lines.
    lead = tuple(int(o > 0) for o in lattice.offset)
    take = (slice(None),) + tuple(slice(o, None, r) for o, r in zip(lattice.offset, lattice.accel))
    pad = ((0, 0),) + tuple((c + e, k - 1 - c) for c, e, k in zip(jc, lead, kernel))
    lattice_data = xp.pad(kspace[take], pad)
    # Beyond the matrix k-space is taken as zero (as everywhere in Cartesian imaging), so those sources count
    # as known; unacquired samples inside the matrix (partial Fourier, asymmetric echo) block a fill.
    lattice_mask = xp.pad(acquired[None][take].astype(xp.float32), pad, constant_values=1.0)
    m = tuple(n - k + 1 for n, k in zip(lattice_data.shape[1:], kernel))  # lattice points incl. virtual ones
    complete = sum(_shifted(lattice_mask, kernel))[0] == math.prod(kernel)
    # One (cell * coil, coil) product per window entry, accumulated: memory stays at the output's size.
    per_entry = weights.weights.reshape(n_coils, math.prod(kernel), -1)
    estimate = xp.zeros((per_entry.shape[2], math.prod(m)), dtype=xp.complex64)
    for entry, view in enumerate(_shifted(lattice_data, kernel)):
        estimate += per_entry[:, entry, :].T @ view.reshape(n_coils, -1)
    estimate = estimate.reshape((len(lattice.cell), n_coils) + m)
    filled = kspace.copy()
    filled_mask = acquired.copy()
    for i, delta in enumerate(lattice.cell):
        where, within = [], []
        for o, d, r, e, n in zip(lattice.offset, delta, lattice.accel, lead, shape):
            first = o + d - e * r  # line of the first lattice point's cell (virtual point included)
            skip = int(first < 0)
            rows = range(first + skip * r, n, r)
            where.append(slice(rows.start, None, r))
            within.append(slice(skip, skip + len(rows)))
        where, within = tuple(where), tuple(within)
        fill = complete[within] & ~acquired[where]
        target = (slice(None),) + where
        filled[target] = xp.where(fill, estimate[i][(slice(None),) + within], kspace[target])
        filled_mask[where] |= fill
    return filled, filled_mask


def calibration_data(kspace, mask=None, calibration=None, source: str | None = None):
    """The fully sampled block to train on: the separate ACS ``calibration`` (coil, *spatial) when given,
    else the fully sampled centre of ``kspace`` (from ``mask``, or the non-zero samples)."""
    xp = get_array_module(kspace)
    n_coils, *shape = kspace.shape
    if calibration is not None:
        cal = xp.asarray(calibration, dtype=xp.complex64)
        if cal.ndim != kspace.ndim or cal.shape[0] != n_coils:
            raise InputError(
                source,
                f"calibration data {tuple(cal.shape)} does not fit k-space {tuple(kspace.shape)} (coil, *spatial)",
            )
        return cal
    box = fully_sampled_centre(to_numpy(sampled_mask(kspace, mask)))
    if min(box[:-1], default=0) < 2:
        raise InputError(
            source,
            "GRAPPA needs calibration data: there are no separate ACS lines and no fully sampled k-space centre "
            f"(largest fully sampled centre: {_box(box)})",
        )
    lo = [n // 2 - b // 2 for n, b in zip(shape, box)]
    return kspace[(slice(None),) + tuple(slice(a, a + b) for a, b in zip(lo, box))]


def grappa(kspace, mask=None, calibration=None, kernel: Sequence[int] | None = None,
           lam: float = DEFAULT_LAMBDA, source: str | None = None):
    """GRAPPA-filled k-space of ``kspace`` (coil, *spatial), 2D or 3D, with its lattice found from the mask.

    ``calibration``: separate ACS block (coil, *spatial); None uses the data's fully sampled centre.
    ``kernel``: window size per spatial axis in lattice points (default (4, 5) in 2D, (3, 4, 5) in 3D).
    Returns ``(filled, filled_mask)`` as ``grappa_apply``.
    """
    ndim = kspace.ndim - 1
    if ndim not in (2, 3):
        raise InputError(source, f"GRAPPA needs 2D or 3D Cartesian k-space (coil, *spatial), got {tuple(kspace.shape)}")
    kernel = tuple(kernel) if kernel is not None else (DEFAULT_KERNEL_2D if ndim == 2 else DEFAULT_KERNEL_3D)
    if len(kernel) != ndim:
        raise InputError(source, f"GRAPPA kernel {_box(kernel)} needs one size per spatial axis ({ndim})")
    acquired = sampled_mask(kspace, mask)
    lattice = sampling_lattice(acquired, source)
    if lattice.accel == (1,) * ndim:  # nothing skipped on a lattice: nothing to fill
        return kspace, acquired
    cal = calibration_data(kspace, acquired, calibration, source)
    weights = grappa_calibrate(cal, lattice.accel, kernel, lam, source)
    return grappa_apply(kspace, acquired, weights, lattice)
