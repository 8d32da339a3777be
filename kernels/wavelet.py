"""Orthogonal Daubechies wavelet transforms with periodic extension, on NumPy or CuPy arrays alike.

The filters are Daubechies' published scaling coefficients (``db1`` = Haar ... ``db8``, normalised to
sum sqrt(2); Daubechies, *Ten Lectures on Wavelets*, SIAM 1992, table 6.1). With periodic extension a
one-level transform of an even-length signal is orthogonal (its adjoint is its inverse). Odd lengths are
zero-padded by one sample before a level; the pad makes a level an isometry (``W^H W = I``), not a
unitary map. The sample alignment is that of PyWavelets' ``mode="periodization"``, so its coefficients
serve as an independent reference in the tests.

Everything is array slicing and multiply-adds in the input's array module (``xp``): no PyWavelets, which
runs on the CPU only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .backend import get_array_module

# Scaling filters h[0..2N-1] of the Daubechies wavelets with N vanishing moments.
DAUBECHIES: dict[int, tuple[float, ...]] = {
    1: (0.7071067811865476, 0.7071067811865476),
    2: (0.48296291314453416, 0.8365163037378079, 0.2241438680420134, -0.12940952255126037),
    3: (0.33267055295008263, 0.8068915093110925, 0.45987750211849154, -0.13501102001025458,
        -0.08544127388202666, 0.03522629188570953),
    4: (0.2303778133088965, 0.7148465705529157, 0.6308807679298589, -0.027983769416859854,
        -0.18703481171909309, 0.030841381835560764, 0.0328830116668852, -0.010597401785069032),
    5: (0.16010239797419293, 0.6038292697971896, 0.7243085284377729, 0.13842814590132074,
        -0.24229488706638203, -0.032244869584638375, 0.07757149384004572, -0.006241490212798274,
        -0.012580751999081999, 0.0033357252854737712),
    6: (0.11154074335010947, 0.49462389039845306, 0.7511339080210954, 0.31525035170919763,
        -0.22626469396543983, -0.12976686756726194, 0.09750160558732304, 0.027522865530305727,
        -0.03158203931748603, 0.0005538422011614961, 0.004777257510945511, -0.0010773010853084796),
    7: (0.07785205408500918, 0.3965393194819173, 0.7291320908462351, 0.4697822874051931,
        -0.14390600392856498, -0.22403618499387498, 0.07130921926683026, 0.08061260915108308,
        -0.03802993693501441, -0.01657454163066688, 0.01255099855609984, 0.0004295779729213665,
        -0.0018016407040474908, 0.00035371379997452024),
    8: (0.05441584224310401, 0.31287159091429995, 0.6756307362972898, 0.5853546836542067,
        -0.015829105256349306, -0.2840155429615469, 0.0004724845739132828, 0.12874742662047847,
        -0.017369301001807547, -0.044088253930794755, 0.013981027917398282, 0.008746094047405777,
        -0.004870352993451574, -0.00039174037337694705, 0.0006754494064505693, -0.00011747678412476953),
}

Filters = tuple[tuple[float, ...], tuple[float, ...]]


def daubechies(order: int) -> Filters:
    """(low-pass, high-pass) synthesis filters of ``db{order}``; the high-pass is g[i] = (-1)^i h[L-1-i]."""
    if order not in DAUBECHIES:
        raise ValueError(f"Daubechies order {order} not available (1..{max(DAUBECHIES)})")
    lo = DAUBECHIES[order]
    hi = tuple((-1) ** i * lo[len(lo) - 1 - i] for i in range(len(lo)))
    return lo, hi


def max_level(n: int, order: int) -> int:
    """Levels until the coarsest band is shorter than the filter (PyWavelets' ``dwt_max_level``), >= 1."""
    taps = 2 * order
    return max(1, int(np.floor(np.log2(n / (taps - 1))))) if n >= taps - 1 else 1


def _wrap_index(xp, n: int, length: int):
    """Indices of the periodic extension used by a level: sample m of it is x[(m - L/2 + 1) mod n]."""
    return (xp.arange(n + length - 2) - (length // 2 - 1)) % n


def dwt(x, filters: Filters, axis: int):
    """One level along ``axis`` (even length n): (approximation, detail), each n/2 long.

    ``a[k] = sum_i h[i] x[(2k + i - L/2 + 1) mod n]`` and the same with g for ``d``.
    """
    xp = get_array_module(x)
    lo, hi = filters
    n = x.shape[axis]
    ext = xp.moveaxis(xp.take(x, _wrap_index(xp, n, len(lo)), axis=axis), axis, -1)
    a = lo[0] * ext[..., 0 : n - 1 : 2]
    d = hi[0] * ext[..., 0 : n - 1 : 2]
    for i in range(1, len(lo)):
        tap = ext[..., i : i + n - 1 : 2]
        a = a + lo[i] * tap
        d = d + hi[i] * tap
    return xp.moveaxis(a, -1, axis), xp.moveaxis(d, -1, axis)


def idwt(a, d, filters: Filters, axis: int):
    """Adjoint (= inverse) of ``dwt``: spread each coefficient back over its taps, fold the extension."""
    xp = get_array_module(a)
    lo, hi = filters
    length = len(lo)
    a, d = xp.moveaxis(a, axis, -1), xp.moveaxis(d, axis, -1)
    n = 2 * a.shape[-1]
    # extension sample m goes to buffer index m + shift, which is congruent to its source m - L/2 + 1
    shift = -(length // 2 - 1) % n
    reps = -(-(shift + n + length - 2) // n)  # whole periods covering the shifted extension
    ext = xp.zeros(a.shape[:-1] + (reps * n,), dtype=xp.result_type(a, d))
    for i in range(length):
        ext[..., shift + i : shift + i + n - 1 : 2] += lo[i] * a + hi[i] * d
    return xp.moveaxis(ext.reshape(a.shape[:-1] + (reps, n)).sum(axis=-2), -1, axis)


def level_shapes(shape: Sequence[int], ndim: int, levels: int) -> list[tuple[int, ...]]:
    """Shape of the approximation entering each level (input first) and of the coarsest band (last).

    Only the last ``ndim`` axes are transformed; each halves, rounding up (odd lengths are padded).
    """
    shapes = [tuple(int(s) for s in shape)]
    for _ in range(levels):
        prev = shapes[-1]
        shapes.append(prev[: len(prev) - ndim] + tuple(-(-s // 2) for s in prev[len(prev) - ndim :]))
    return shapes


def wavedec(x, filters: Filters, ndim: int, levels: int) -> list:
    """Multi-level separable transform of the last ``ndim`` axes.

    Returns ``[d_1 (2^ndim - 1 bands), d_2, ..., d_levels, approx]`` flattened into one list: per level the
    bands of every low/high combination except all-low, in the order of ``itertools.product``
    with the last axis varying fastest; the coarsest approximation last.
    """
    xp = get_array_module(x)
    axes = tuple(range(x.ndim - ndim, x.ndim))
    out = []
    approx = x
    for _ in range(levels):
        odd = [(0, approx.shape[ax] % 2) if ax in axes else (0, 0) for ax in range(approx.ndim)]
        bands = [xp.pad(approx, odd) if any(p for _, p in odd) else approx]
        for ax in axes:
            bands = [half for band in bands for half in dwt(band, filters, ax)]
        approx = bands[0]
        out.extend(bands[1:])
    out.append(approx)
    return out


def waverec(coeffs: list, filters: Filters, ndim: int, shapes: list[tuple[int, ...]]):
    """Adjoint of ``wavedec`` (its inverse on the range); ``shapes`` from ``level_shapes``."""
    n_bands = 2**ndim
    levels = len(shapes) - 1
    approx = coeffs[-1]
    for lev in range(levels - 1, -1, -1):
        bands = [approx, *coeffs[lev * (n_bands - 1) : (lev + 1) * (n_bands - 1)]]
        first = len(shapes[lev]) - ndim
        for ax in range(len(shapes[lev]) - 1, first - 1, -1):
            bands = [idwt(bands[i], bands[i + 1], filters, ax) for i in range(0, len(bands), 2)]
        approx = bands[0][tuple(slice(0, s) for s in shapes[lev])]
    return approx

