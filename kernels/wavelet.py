"""Orthogonal Daubechies wavelet transforms with periodic extension, on NumPy or CuPy arrays alike.

The filters are Daubechies' published scaling coefficients (``db1`` = Haar ... ``db8``, normalised to
sum sqrt(2); Daubechies, *Ten Lectures on Wavelets*, SIAM 1992, table 6.1). With periodic extension a
one-level transform of an even-length signal is orthogonal (its adjoint is its inverse). Odd lengths are
zero-padded by one sample before a level; the pad makes a level an isometry (``W^H W = I``), not a
unitary map. The sample alignment is that of PyWavelets' ``mode="periodization"``, so its coefficients
serve as an independent reference in the tests. A circular ``shift`` of the signal before the first
level (cycle spinning) costs nothing on even lengths: it only moves the periodic read offset.

One level along one axis runs as a kernel on the array viewed as (pre, n, post): Numba on the CPU
(rows of ``post`` contiguous values when post > 1, a periodically extended row buffer per row when the
axis is the last one) and a numba.cuda twin (one thread per output value) for CuPy arrays.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
from numba import cuda, njit, prange

from .backend import get_array_module
from .coil import _launch_gpu  # imported first: it sets Numba's passive OpenMP wait
from .threads import limit_cpu_threads

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


@njit(parallel=True, nogil=True, cache=True)
def _dwt_rows_cpu(x, lo, hi, offset, a, d):
    """One level along axis 1 of (pre, n, post), post > 1: whole contiguous rows of ``post`` values."""
    pre, n, post = x.shape
    half = a.shape[1]
    for job in prange(pre * half):
        p = job // half
        k = job - p * half
        ar, dr = a[p, k], d[p, k]
        xr = x[p, (2 * k - offset) % n]
        for q in range(post):
            ar[q] = lo[0] * xr[q]
            dr[q] = hi[0] * xr[q]
        for i in range(1, lo.shape[0]):
            xr = x[p, (2 * k + i - offset) % n]
            for q in range(post):
                ar[q] += lo[i] * xr[q]
                dr[q] += hi[i] * xr[q]


@njit(parallel=True, nogil=True, cache=True)
def _dwt_last_cpu(x, lo, hi, offset, comp, a, d):
    """One level along the last axis of real (pre, n * comp) rows (``comp`` = 2 for complex as float pairs).

    Polyphase: the even and odd samples of the periodic extension are copied once into contiguous
    buffers, so that every tap is a unit-stride multiply-add over the whole output row (vectorised).
    """
    pre = x.shape[0]
    n = x.shape[1] // comp
    half = n // 2
    h2 = lo.shape[0] // 2
    width = half * comp
    for p in prange(pre):
        even = np.empty((half + h2) * comp, x.dtype)
        odd = np.empty((half + h2) * comp, x.dtype)
        for m in range(half + h2):
            je = (2 * m - offset) % n
            jo = (2 * m + 1 - offset) % n
            for r in range(comp):
                even[m * comp + r] = x[p, je * comp + r]
                odd[m * comp + r] = x[p, jo * comp + r]
        ar, dr = a[p], d[p]
        for q in range(width):
            ar[q] = lo[0] * even[q] + lo[1] * odd[q]
            dr[q] = hi[0] * even[q] + hi[1] * odd[q]
        for s in range(1, h2):
            base = s * comp
            for q in range(width):
                ar[q] += lo[2 * s] * even[q + base] + lo[2 * s + 1] * odd[q + base]
                dr[q] += hi[2 * s] * even[q + base] + hi[2 * s + 1] * odd[q + base]


@njit(parallel=True, nogil=True, cache=True)
def _idwt_rows_cpu(a, d, lo, hi, offset, x):
    """Adjoint of ``_dwt_rows_cpu``: each output row gathers its L/2 taps of a and of d."""
    pre, n, post = x.shape
    half = a.shape[1]
    for job in prange(pre * n):
        p = job // n
        j = job - p * n
        first = (j + offset) % 2  # the taps i that reach sample j have the parity of j + offset
        xr = x[p, j]
        k = ((j + offset - first) // 2) % half
        ar, dr = a[p, k], d[p, k]
        for q in range(post):
            xr[q] = lo[first] * ar[q] + hi[first] * dr[q]
        for i in range(first + 2, lo.shape[0], 2):
            k = ((j + offset - i) // 2) % half
            ar, dr = a[p, k], d[p, k]
            for q in range(post):
                xr[q] += lo[i] * ar[q] + hi[i] * dr[q]


@njit(parallel=True, nogil=True, cache=True)
def _idwt_last_cpu(a, d, lo, hi, offset, comp, x):
    """Adjoint of ``_dwt_last_cpu``: a and d of a row periodically extended once, then gathered.

    Sample j gets the taps i of the parity of j + offset, from a[(j + offset - i) / 2 mod half]. With
    the extensions ea[t] = a[(t - h2) mod half], sample 2m + r reads ea[m + c_r - s] at tap
    i = p_r + 2s, where p_r = (r + offset) % 2 and c_r = (r + offset - p_r) / 2 + h2 <= half + h2; so
    each parity r is unit-stride multiply-adds over the row, interleaved into x at the end.
    """
    pre = x.shape[0]
    n = x.shape[1] // comp
    half = n // 2
    h2 = lo.shape[0] // 2
    width = half * comp
    p0, p1 = offset % 2, (offset + 1) % 2
    c0, c1 = (offset - p0) // 2 + h2, (offset + 1 - p1) // 2 + h2
    for p in prange(pre):
        ea = np.empty((2 * half + h2) * comp, a.dtype)
        ed = np.empty((2 * half + h2) * comp, d.dtype)
        for t in range(2 * half + h2):
            src = ((t - h2) % half) * comp
            for r in range(comp):
                ea[t * comp + r] = a[p, src + r]
                ed[t * comp + r] = d[p, src + r]
        out0 = np.empty(width, x.dtype)
        out1 = np.empty(width, x.dtype)
        b0, b1 = c0 * comp, c1 * comp
        for q in range(width):
            out0[q] = lo[p0] * ea[q + b0] + hi[p0] * ed[q + b0]
            out1[q] = lo[p1] * ea[q + b1] + hi[p1] * ed[q + b1]
        for s in range(1, h2):
            b0, b1 = (c0 - s) * comp, (c1 - s) * comp
            for q in range(width):
                out0[q] += lo[p0 + 2 * s] * ea[q + b0] + hi[p0 + 2 * s] * ed[q + b0]
                out1[q] += lo[p1 + 2 * s] * ea[q + b1] + hi[p1 + 2 * s] * ed[q + b1]
        xr = x[p]
        for m in range(half):
            for r in range(comp):
                xr[2 * m * comp + r] = out0[m * comp + r]
                xr[(2 * m + 1) * comp + r] = out1[m * comp + r]


@cuda.jit
def _dwt_cuda_kernel(x, lo, hi, offset, a, d):
    pre, n, post = x.shape
    half = a.shape[1]
    g = cuda.grid(1)
    if g < pre * half * post:
        p = g // (half * post)
        k = (g // post) % half
        q = g % post
        acc_a = lo[0] * x[p, (2 * k - offset) % n, q]
        acc_d = hi[0] * x[p, (2 * k - offset) % n, q]
        for i in range(1, lo.shape[0]):
            v = x[p, (2 * k + i - offset) % n, q]
            acc_a += lo[i] * v
            acc_d += hi[i] * v
        a[p, k, q] = acc_a
        d[p, k, q] = acc_d


@cuda.jit
def _idwt_cuda_kernel(a, d, lo, hi, offset, x):
    pre, n, post = x.shape
    half = a.shape[1]
    g = cuda.grid(1)
    if g < pre * n * post:
        p = g // (n * post)
        j = (g // post) % n
        q = g % post
        first = (j + offset) % 2
        k = ((j + offset - first) // 2) % half
        acc = lo[first] * a[p, k, q] + hi[first] * d[p, k, q]
        for i in range(first + 2, lo.shape[0], 2):
            k = ((j + offset - i) // 2) % half
            acc += lo[i] * a[p, k, q] + hi[i] * d[p, k, q]
        x[p, j, q] = acc


_THREADS = 256  # CUDA threads per block


def _real_rows(*arrays) -> tuple[int, list]:
    """(values per sample, the (pre, n, 1) arrays as real (pre, n * values) rows): complex as float pairs."""
    if np.iscomplexobj(arrays[0]):
        return 2, [v[:, :, 0].view(v.real.dtype) for v in arrays]
    return 1, [v[:, :, 0] for v in arrays]


def dwt_cpu(x, lo, hi, offset: int, a, d) -> None:
    """One level of (pre, n, post) into (pre, n/2, post) ``a`` and ``d`` (CPU, C-contiguous arrays).

    ``a[p, k, q] = sum_i lo[i] x[p, (2k + i - offset) mod n, q]``, ``d`` likewise with ``hi``.
    """
    if x.shape[2] == 1:
        comp, real = _real_rows(x, a, d)
        _dwt_last_cpu(real[0], lo, hi, offset, comp, real[1], real[2])
    else:
        _dwt_rows_cpu(x, lo, hi, offset, a, d)


def idwt_cpu(a, d, lo, hi, offset: int, x) -> None:
    """Adjoint of ``dwt_cpu`` (its inverse): writes all of ``x`` (pre, n, post)."""
    if x.shape[2] == 1:
        comp, real = _real_rows(a, d, x)
        _idwt_last_cpu(real[0], real[1], lo, hi, offset, comp, real[2])
    else:
        _idwt_rows_cpu(a, d, lo, hi, offset, x)


def dwt_cuda(x, lo, hi, offset: int, a, d, stream=0) -> None:
    """GPU twin of ``dwt_cpu`` (CuPy/numba device arrays; NumPy under the CUDA simulator)."""
    _dwt_cuda_kernel[(a.size + _THREADS - 1) // _THREADS, _THREADS, stream](x, lo, hi, offset, a, d)


def idwt_cuda(a, d, lo, hi, offset: int, x, stream=0) -> None:
    """GPU twin of ``idwt_cpu``."""
    _idwt_cuda_kernel[(x.size + _THREADS - 1) // _THREADS, _THREADS, stream](a, d, lo, hi, offset, x)


def _as_rows(x, axis: int):
    """C-contiguous (pre, n, post) view of ``x`` around ``axis``, in a floating dtype."""
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x, dtype=xp.result_type(x.dtype, xp.float32))
    axis %= x.ndim
    return x.reshape(math.prod(x.shape[:axis]), x.shape[axis], -1), axis


def _taps(xp, filters: Filters, dtype):
    """The filters as arrays of the real dtype matching ``dtype`` (single precision stays single)."""
    real = np.float32 if np.dtype(dtype) in (np.float32, np.complex64) else np.float64
    return tuple(xp.asarray(np.asarray(f, dtype=real)) for f in filters)


_PARALLEL_MIN = 1 << 15  # values per level below which one CPU thread beats waking the others


def _launch(xp, cpu, gpu, *args) -> None:
    """Run the CPU kernel on NumPy arrays (one thread for small ones), the CUDA twin on CuPy arrays."""
    if xp is not np:
        _launch_gpu(xp, gpu, *args)
    elif args[0].size >= _PARALLEL_MIN or numba.get_num_threads() == 1:
        cpu(*args)
    else:
        with limit_cpu_threads(1):
            cpu(*args)


def dwt(x, filters: Filters, axis: int, shift: int = 0):
    """One level along ``axis`` (even length n) of ``roll(x, shift)``: (approximation, detail), n/2 long.

    ``a[k] = sum_i h[i] x[(2k + i - L/2 + 1 - shift) mod n]`` and the same with g for ``d``.
    """
    xp = get_array_module(x)
    rows, axis = _as_rows(x, axis)
    pre, n, post = rows.shape
    a = xp.empty((pre, n // 2, post), dtype=rows.dtype)
    d = xp.empty_like(a)
    lo, hi = _taps(xp, filters, rows.dtype)
    _launch(xp, dwt_cpu, dwt_cuda, rows, lo, hi, (len(filters[0]) // 2 - 1 + shift) % n, a, d)
    shape = x.shape[:axis] + (n // 2,) + x.shape[axis + 1 :]
    return a.reshape(shape), d.reshape(shape)


def idwt(a, d, filters: Filters, axis: int, shift: int = 0):
    """Adjoint (= inverse) of ``dwt`` with the same ``shift``."""
    xp = get_array_module(a)
    dtype = xp.result_type(a.dtype, d.dtype, xp.float32)
    rows_a, axis = _as_rows(a.astype(dtype, copy=False), axis)
    rows_d, _ = _as_rows(d.astype(dtype, copy=False), axis)
    pre, half, post = rows_a.shape
    n = 2 * half
    x = xp.empty((pre, n, post), dtype=dtype)
    lo, hi = _taps(xp, filters, dtype)
    _launch(xp, idwt_cpu, idwt_cuda, rows_a, rows_d, lo, hi, (len(filters[0]) // 2 - 1 + shift) % n, x)
    return x.reshape(a.shape[:axis] + (n,) + a.shape[axis + 1 :])


def level_shapes(shape: Sequence[int], ndim: int, levels: int) -> list[tuple[int, ...]]:
    """Shape of the approximation entering each level (input first) and of the coarsest band (last).

    Only the last ``ndim`` axes are transformed; each halves, rounding up (odd lengths are padded).
    """
    shapes = [tuple(int(s) for s in shape)]
    for _ in range(levels):
        prev = shapes[-1]
        shapes.append(prev[: len(prev) - ndim] + tuple(-(-s // 2) for s in prev[len(prev) - ndim :]))
    return shapes


def level_shifts(shift: Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """The per-axis circular shift of the first level (zeros when None); ValueError on a wrong length."""
    if shift is None:
        return (0,) * ndim
    shift = tuple(int(s) for s in shift)
    if len(shift) != ndim:
        raise ValueError(f"wavelet shift {shift} needs one value per transformed axis ({ndim})")
    return shift


def wavedec(x, filters: Filters, ndim: int, levels: int, shift: Sequence[int] | None = None) -> list:
    """Multi-level separable transform of the last ``ndim`` axes of ``roll(x, shift)``.

    Returns ``[d_1 (2^ndim - 1 bands), d_2, ..., d_levels, approx]`` flattened into one list: per level the
    bands of every low/high combination except all-low, in the order of ``itertools.product``
    with the last axis varying fastest; the coarsest approximation last. ``shift`` (one int per
    transformed axis, None: no shift) moves the periodic read offset of even axes; odd axes are rolled.
    """
    xp = get_array_module(x)
    axes = tuple(range(x.ndim - ndim, x.ndim))
    spin = level_shifts(shift, ndim)
    odd_spin = [(ax, s) for ax, s in zip(axes, spin) if s and x.shape[ax] % 2]
    if odd_spin:
        x = xp.roll(x, [s for _, s in odd_spin], axis=[ax for ax, _ in odd_spin])
    out = []
    approx = x
    for _ in range(levels):
        odd = [(0, approx.shape[ax] % 2) if ax in axes else (0, 0) for ax in range(approx.ndim)]
        even_spin = [0 if approx.shape[ax] % 2 else s for ax, s in zip(axes, spin)]
        bands = [xp.pad(approx, odd) if any(p for _, p in odd) else approx]
        for ax, s in zip(axes, even_spin):
            bands = [half for band in bands for half in dwt(band, filters, ax, s)]
        approx = bands[0]
        out.extend(bands[1:])
        spin = (0,) * ndim
    out.append(approx)
    return out


def waverec(
    coeffs: list, filters: Filters, ndim: int, shapes: list[tuple[int, ...]], shift: Sequence[int] | None = None
):
    """Adjoint of ``wavedec`` with the same ``shift`` (its inverse on the range); ``shapes`` from ``level_shapes``."""
    xp = get_array_module(coeffs[-1])
    n_bands = 2**ndim
    levels = len(shapes) - 1
    spin = level_shifts(shift, ndim)
    approx = coeffs[-1]
    for lev in range(levels - 1, -1, -1):
        bands = [approx, *coeffs[lev * (n_bands - 1) : (lev + 1) * (n_bands - 1)]]
        first = len(shapes[lev]) - ndim
        for ax in range(len(shapes[lev]) - 1, first - 1, -1):
            s = spin[ax - first] if lev == 0 and shapes[lev][ax] % 2 == 0 else 0
            bands = [idwt(bands[i], bands[i + 1], filters, ax, s) for i in range(0, len(bands), 2)]
        approx = bands[0][tuple(slice(0, s) for s in shapes[lev])]
    first = len(shapes[0]) - ndim
    odd_spin = [(ax, -s) for ax, s in enumerate(spin, start=first) if s and shapes[0][ax] % 2]
    if odd_spin:
        approx = xp.roll(approx, [s for _, s in odd_spin], axis=[ax for ax, _ in odd_spin])
    return approx
