"""Cartesian sampling masks: Poisson disc, variable-density random and equispaced lines.

Every mask is a bool array of the requested shape (True = acquired) whose central calibration
(ACS) box is fully sampled; the centre of an axis of size ``n`` is index ``n // 2`` (centred FFT).
Random masks are deterministic for a given ``seed``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from ..errors import InputError
from .phantom import grid_coordinates

# Density fall-off of the Poisson-disc radius: r(rho) = scale * (1 + _POISSON_SLOPE * rho), rho the
# normalised distance from the k-space centre (1 at the middle of an edge). 2 gives a sample
# density about 9x lower at the edge than at the centre, a common compressed-sensing choice.
_POISSON_SLOPE = 2.0
_POISSON_TRIES = 30  # candidates per active point (Bridson's k)


def _as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """``n`` non-negative ints from one int or a sequence (argument ``name`` for the error)."""
    values = (int(value),) * n if np.isscalar(value) else tuple(int(v) for v in value)
    if len(values) != n or min(values) < 0:
        raise InputError(name, f"expected {n} non-negative integers, got {value!r}")
    return values


def _check_accel(accel: float) -> float:
    """``accel`` as a float >= 1, else ``InputError``."""
    if not np.isfinite(accel) or accel < 1:
        raise InputError("accel", f"acceleration must be >= 1, got {accel!r}")
    return float(accel)


def calibration_box(shape: Sequence[int], calib: Sequence[int]) -> tuple[slice, ...]:
    """Index of the centred calibration box: ``calib[i]`` samples around ``shape[i] // 2``."""
    box = []
    for n, c in zip(shape, calib):
        c = min(c, n)
        start = n // 2 - c // 2
        box.append(slice(start, start + c))
    return tuple(box)


def normalised_radius(shape: Sequence[int]) -> np.ndarray:
    """Distance of every grid point from the centre, each axis scaled to reach 1 at its edge.

    Axes of size 1 do not count (a ``(ny, 1)`` shape gives a 1D radius along ky).
    """
    r2 = np.zeros(tuple(shape), dtype=np.float64)
    for axis, k in enumerate(grid_coordinates(shape)):
        if k.size > 1:
            r2 += np.expand_dims(k**2, tuple(a for a in range(len(shape)) if a != axis))
    return np.sqrt(r2)


@numba.njit(cache=True)
def _poisson_disc(ny: int, nx: int, scale: float, slope: float, tries: int, seed: int) -> np.ndarray:
    """Bridson dart throwing in continuous k-space with a radius that grows away from the centre.

    A candidate q is accepted when its grid cell (q rounded) is free and no accepted point lies
    closer than r(q); so for every pair (p accepted before q) |p - q| >= r(q) before rounding.
    Working off-grid keeps the density smooth (on-grid packing jumps in steps at r = 1, sqrt 2, 2).
    """
    np.random.seed(seed)
    cy, cx = ny // 2, nx // 2
    hy, hx = ny / 2.0, nx / 2.0
    owner = np.full((ny, nx), -1, dtype=np.int64)  # index of the point rounded into each cell
    pos_y = np.empty(ny * nx, dtype=np.float64)
    pos_x = np.empty(ny * nx, dtype=np.float64)
    active = np.empty(ny * nx, dtype=np.int64)
    pos_y[0] = np.random.random() * (ny - 1)
    pos_x[0] = np.random.random() * (nx - 1)
    owner[int(np.round(pos_y[0])), int(np.round(pos_x[0]))] = 0
    active[0] = 0
    n_points, n_active = 1, 1
    while n_active > 0:
        i = np.random.randint(0, n_active)
        py, px = pos_y[active[i]], pos_x[active[i]]
        rp = scale * (1.0 + slope * np.sqrt(((py - cy) / hy) ** 2 + ((px - cx) / hx) ** 2))
        found = False
        for _ in range(tries):
            dist = rp * (1.0 + np.random.random())
            angle = 2.0 * np.pi * np.random.random()
            qy = py + dist * np.sin(angle)
            qx = px + dist * np.cos(angle)
            gy, gx = int(np.round(qy)), int(np.round(qx))
            if gy < 0 or gy >= ny or gx < 0 or gx >= nx or owner[gy, gx] >= 0:
                continue
            rq = scale * (1.0 + slope * np.sqrt(((qy - cy) / hy) ** 2 + ((qx - cx) / hx) ** 2))
            reach = int(np.ceil(rq)) + 1
            ok = True
            for yy in range(max(gy - reach, 0), min(gy + reach + 1, ny)):
                for xx in range(max(gx - reach, 0), min(gx + reach + 1, nx)):
                    j = owner[yy, xx]
                    if j >= 0 and (pos_y[j] - qy) ** 2 + (pos_x[j] - qx) ** 2 < rq * rq:
                        ok = False
                        break
                if not ok:
                    break
            if ok:
                pos_y[n_points], pos_x[n_points] = qy, qx
                owner[gy, gx] = n_points
                active[n_active] = n_points
                n_points += 1
                n_active += 1
                found = True
                break
        if not found:
            n_active -= 1
            active[i] = active[n_active]
    return owner >= 0


def poisson_disc_radius(shape: Sequence[int], scale: float) -> np.ndarray:
    """The exclusion radius (in grid steps) that ``poisson_disc_mask`` used at every grid point."""
    return scale * (1.0 + _POISSON_SLOPE * normalised_radius(shape))


def poisson_disc_scale(
    shape: Sequence[int], accel: float, calib: int | Sequence[int] = (24, 24), seed: int = 0
) -> float:
    """Radius scale that ``poisson_disc_mask(shape, accel, calib, seed)`` settles on (see ``poisson_disc_radius``)."""
    return _poisson_disc_search(*_poisson_args(shape, accel, calib), int(seed))[1]


def _poisson_args(
    shape: Sequence[int], accel: float, calib: int | Sequence[int]
) -> tuple[tuple[int, int], float, tuple[int, int]]:
    """Checked (shape, accel, calib) for the Poisson-disc functions."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InputError("poisson_disc_mask", f"shape must be 2D (ky, kx) or (kz, ky), got {shape}")
    accel = _check_accel(accel)
    calib = _as_tuple(calib, 2, "calib")
    if np.prod([min(c, n) for c, n in zip(calib, shape)]) * accel > np.prod(shape):
        raise InputError("calib", f"calibration box {calib} alone exceeds 1/{accel:g} of {shape}")
    return shape, accel, calib


def _poisson_disc_search(
    shape: Sequence[int], accel: float, calib: Sequence[int], seed: int
) -> tuple[np.ndarray, float]:
    ny, nx = shape
    box = calibration_box(shape, calib)
    if accel == 1:
        return np.ones(shape, dtype=bool), 0.0
    target = ny * nx / accel
    # Start from the packing law n ~ area / (1.5 r^2) (fitted on 320x320 at R = 2..8), r averaged as
    # (1 + slope*rho)^2 over the square ~ 1 + slope + slope^2 * 2/3; then secant steps in log-log.
    scale = np.sqrt(ny * nx / (1.5 * target * (1 + _POISSON_SLOPE + _POISSON_SLOPE**2 * 2 / 3)))
    best: tuple[float, np.ndarray, float] | None = None
    previous: tuple[float, float] | None = None
    for _ in range(12):
        mask = _poisson_disc(ny, nx, scale, _POISSON_SLOPE, _POISSON_TRIES, seed)
        mask[box] = True
        count = int(mask.sum())
        error = abs(count - target) / target
        if best is None or error < best[0]:
            best = (error, mask, scale)
        if error < 0.01:
            break
        # Log-log slope of count vs scale: -2 for a uniform packing, about -1.6 at R = 2 where the
        # centre saturates; -1.7 is the first-step guess, later steps use the measured secant.
        slope = -1.7
        if previous is not None and previous[1] != count and previous[0] != scale:
            slope = min(-0.5, (np.log(count) - np.log(previous[1])) / (np.log(scale) - np.log(previous[0])))
        previous = (scale, count)
        scale *= np.exp((np.log(target) - np.log(count)) / slope)
    return best[1], best[2]


def poisson_disc_mask(
    shape: Sequence[int], accel: float, calib: int | Sequence[int] = (24, 24), seed: int = 0
) -> np.ndarray:
    """Variable-density Poisson-disc mask over a 2D phase-encode plane ((ky, kx) or (kz, ky)).

    Samples keep a minimum distance that grows linearly with distance from the centre (denser
    centre, no clumps, no large holes: incoherent aliasing for compressed sensing). The radius
    scale is tuned so that the achieved acceleration (size / acquired, calibration included) is
    within 1 % of ``accel`` (the sample count falls roughly as scale**-2; secant steps on
    log(count) vs log(scale) get there in one to three draws).
    """
    return _poisson_disc_search(*_poisson_args(shape, accel, calib), int(seed))[0]


def variable_density_mask(
    shape: Sequence[int],
    accel: float,
    calib: int | Sequence[int] = 24,
    seed: int = 0,
    power: float = 2.0,
) -> np.ndarray:
    """Random mask with polynomial density (1 - rho)**power (rho: normalised distance from centre).

    Exactly ``round(size / accel)`` samples are drawn without replacement, the calibration box
    first; works for 1D ``(ky, 1)`` line patterns and 2D/3D phase-encode grids alike.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise InputError("variable_density_mask", f"shape must have positive sizes, got {shape}")
    accel = _check_accel(accel)
    calib = _as_tuple(calib, len(shape), "calib")
    mask = np.zeros(shape, dtype=bool)
    mask[calibration_box(shape, calib)] = True
    n_target = int(round(mask.size / accel))
    n_more = n_target - int(mask.sum())
    if n_more < 0:
        raise InputError("calib", f"calibration box {calib} alone exceeds 1/{accel:g} of {shape}")
    rho = normalised_radius(shape) / np.sqrt(sum(n > 1 for n in shape))  # 0 at centre, 1 at corner
    weight = np.clip(1.0 - rho, 0.0, None) ** power + 1e-6  # corners keep a tiny chance
    free = np.flatnonzero(~mask)
    p = weight.ravel()[free]
    chosen = np.random.default_rng(seed).choice(free, size=n_more, replace=False, p=p / p.sum())
    mask.ravel()[chosen] = True
    return mask


def equispaced_mask(
    shape: Sequence[int],
    accel: int | Sequence[int],
    calib: int | Sequence[int] = 24,
    axis: int | Sequence[int] = -2,
) -> np.ndarray:
    """Every ``accel``-th line along ``axis`` (the centre line included), full along the others.

    A tuple ``accel=(2, 2)`` undersamples several axes (e.g. kz and ky for 3D CAIPI-free
    parallel imaging); with an int ``axis`` these are the ``len(accel)`` axes ending at ``axis``.
    ``calib`` lines around each undersampled centre are fully sampled (a box in 2D).
    """
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise InputError("equispaced_mask", f"shape must have positive sizes, got {shape}")
    accels = (int(accel),) if np.isscalar(accel) else tuple(int(a) for a in accel)
    if min(accels) < 1:
        raise InputError("accel", f"acceleration must be >= 1, got {accel!r}")
    if np.isscalar(axis):
        axes = tuple(range(int(axis) - len(accels) + 1, int(axis) + 1))
    else:
        axes = tuple(int(a) for a in axis)
    if len(axes) != len(accels) or any(not -len(shape) <= a < len(shape) for a in axes):
        raise InputError("axis", f"axes {axis!r} do not fit accel {accel!r} and shape {shape}")
    axes = tuple(a % len(shape) for a in axes)
    calibs = _as_tuple(calib, len(axes), "calib")
    lines = np.ones(shape, dtype=bool)
    calib_full = [slice(None)] * len(shape)
    for a, r, c in zip(axes, accels, calibs):
        n = shape[a]
        keep = (np.arange(n) - n // 2) % r == 0
        lines &= np.expand_dims(keep, tuple(i for i in range(len(shape)) if i != a))
        calib_full[a] = calibration_box((n,), (c,))[0]
    lines[tuple(calib_full)] = True
    return lines
