"""Fused element-wise updates of the iterative solvers: one memory pass where NumPy needs several.

- ``l2_dual_update``: PDHG's dual step for the data term ``||z - y||^2 / 2`` of Cartesian SENSE,
  ``u <- (u + sigma (w z - y)) / (1 + sigma)`` and then ``z <- w u`` (the input of ``A^H u``), on
  coil-sized arrays: one pass instead of about six.
- ``cg_update``: the conjugate-gradient step ``x += alpha p``, ``r -= alpha Ap`` and ``|r|^2``, also
  batched (one ``alpha`` and one ``|r|^2`` per independent system, kept on the device); ``real_dot``:
  ``Re <u, v>`` per system.
- ``tv_dual_update``: TV's dual step, periodic backward differences of ``x``, ``v <- proj(v + sigma G x)``
  onto ``{|v| <= bound}`` (per element or per voxel group) and ``G^H v``, for 2D and 3D images.

Each has a Numba CPU kernel. ``l2_dual_update`` (the coil-sized one) and the batched ``cg_update`` and
``real_dot`` have numba.cuda twins;
``cg_update`` falls back to xp array code (NumPy or CuPy) for arrays the kernel does not take; for
``tv_dual_update`` the caller checks ``tv_kernel_fits`` and otherwise composes the unfused steps
(``finite_difference.LinfDual``: the difference operator and ``prox.project_linf_ball``).
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float64, njit, prange

from .backend import get_array_module
from .coil import _coil_block, _launch_gpu  # importing coil also sets OMP_WAIT_POLICY before Numba's pool starts

_BLOCK = 8192  # elements per CPU work item
_THREADS = 256  # CUDA threads per block


# -- PDHG data-term dual step --------------------------------------------------------------------
@njit(fastmath=False, cache=True)
def _l2_dual_row(u: np.ndarray, z: np.ndarray, y: np.ndarray, weight: np.ndarray, s, scale) -> None:
    # one contiguous 1D run: LLVM vectorises this loop (the 2D-indexed form stayed scalar, 3x slower)
    for i in range(u.shape[0]):
        w = weight[i]
        v = (u[i] + s * (w * z[i] - y[i])) * scale
        u[i] = v
        z[i] = w * v


@njit(parallel=True, nogil=True, fastmath=False, cache=True)
def l2_dual_update_cpu(u: np.ndarray, z: np.ndarray, y: np.ndarray, weight: np.ndarray, sigma: float) -> None:
    """``u <- (u + sigma (w z - y)) / (1 + sigma)``, ``z <- w u`` for flat (coil, n) arrays, (n,) weights (CPU)."""
    n_coils, n = u.shape
    s = np.float32(sigma)
    scale = np.float32(1.0 / (1.0 + sigma))
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for k in prange(n_coils * n_blocks):
        c = k // n_blocks
        start = (k - c * n_blocks) * _BLOCK
        stop = min(start + _BLOCK, n)
        _l2_dual_row(u[c, start:stop], z[c, start:stop], y[c, start:stop], weight[start:stop], s, scale)


@cuda.jit
def _l2_dual_cuda(u, z, y, weight, sigma, scale):
    k = cuda.grid(1)
    n = weight.shape[0]
    if k < u.shape[0] * n:
        c = k // n
        i = k - c * n
        w = weight[i]
        v = (u[c, i] + sigma * (w * z[c, i] - y[c, i])) * scale
        u[c, i] = v
        z[c, i] = w * v


def l2_dual_update_cuda(sigma: float, u, z, y, weight, stream=0) -> None:
    """GPU twin of ``l2_dual_update_cpu`` (CuPy/numba device arrays; NumPy under the CUDA simulator)."""
    s, scale = np.float32(sigma), np.float32(1.0 / (1.0 + sigma))
    blocks = (u.shape[0] * u.shape[1] + _THREADS - 1) // _THREADS
    _l2_dual_cuda[blocks, _THREADS, stream](u, z, y, weight, s, scale)


def l2_dual_update(u, z, y, weight, sigma: float) -> None:
    """In place: ``u <- (u + sigma (w z - y)) / (1 + sigma)`` then ``z <- w u``.

    ``u``, ``z``, ``y``: C-contiguous complex64 arrays (coil, *spatial); ``weight``: real float32 (*spatial),
    C-contiguous. This is the prox of ``sigma f*`` for ``f(v) = ||v - y||^2 / 2`` applied to
    ``u + sigma w z`` (the dual step of ``A = w F S`` with ``z = F S x``), followed by the weighting
    that starts ``A^H u``.
    """
    xp = get_array_module(u)
    shape = (u.shape[0], weight.size)
    flat = [a.reshape(shape) for a in (u, z, y)] + [weight.reshape(-1)]
    if xp is np:
        l2_dual_update_cpu(*flat, float(sigma))
    else:
        _launch_gpu(xp, l2_dual_update_cuda, float(sigma), *flat)


# -- conjugate gradients ---------------------------------------------------------------------------
@njit(fastmath={"reassoc"}, cache=True)
def _cg_row(x: np.ndarray, r: np.ndarray, p: np.ndarray, ap: np.ndarray, a) -> float:
    # contiguous 1D run; reassociation lets LLVM vectorise the |r|^2 sum (only its rounding order changes)
    total = 0.0
    for i in range(x.shape[0]):
        x[i] += a * p[i]
        ri = r[i] - a * ap[i]
        r[i] = ri
        total += ri.real * ri.real + ri.imag * ri.imag
    return total


@njit(parallel=True, nogil=True, fastmath=False, cache=True)
def cg_update_batched_cpu(x: np.ndarray, r: np.ndarray, p: np.ndarray, ap: np.ndarray, a: np.ndarray, rr: np.ndarray) -> None:
    """Per system ``b``: ``x[b] += a[b] p[b]``, ``r[b] -= a[b] ap[b]`` over (batch, n) arrays, ``rr[b] = sum |r[b]|^2``
    (CPU; ``a`` of their real dtype, ``rr`` float64). Each work item sums one block; the blocks add up per system."""
    n_batch, n = x.shape
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    partial = np.empty(n_batch * n_blocks, dtype=np.float64)
    for k in prange(n_batch * n_blocks):
        b, start, stop = _coil_block(k, n_blocks, n)
        partial[k] = _cg_row(x[b, start:stop], r[b, start:stop], p[b, start:stop], ap[b, start:stop], a[b])
    for b in range(n_batch):
        rr[b] = partial[b * n_blocks:(b + 1) * n_blocks].sum()


def cg_update_cpu(x: np.ndarray, r: np.ndarray, p: np.ndarray, ap: np.ndarray, a) -> float:
    """``x += a p``, ``r -= a ap`` over flat arrays (``a`` of their real dtype); returns ``sum |r|^2`` (CPU)."""
    rr = np.empty(1, dtype=np.float64)
    cg_update_batched_cpu(x[None], r[None], p[None], ap[None], np.full(1, a), rr)
    return float(rr[0])


@cuda.jit(device=True)
def _block_sum_add(value, out, b):
    """Sum ``value`` over the thread block (shared-memory tree) and add the block's total to ``out[b]``."""
    cache = cuda.shared.array(_THREADS, dtype=float64)
    t = cuda.threadIdx.x
    cache[t] = value
    cuda.syncthreads()
    step = _THREADS // 2
    while step > 0:
        if t < step:
            cache[t] += cache[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        cuda.atomic.add(out, b, cache[0])


@cuda.jit
def _cg_batched_cuda(x, r, p, ap, a, rr):
    # grid: blocks along x stride over one system's elements, blockIdx.y is the system
    b = cuda.blockIdx.y
    ab = a[b]
    total = 0.0
    for i in range(cuda.grid(1), x.shape[1], cuda.gridsize(1)):
        x[b, i] += ab * p[b, i]
        ri = r[b, i] - ab * ap[b, i]
        r[b, i] = ri
        total += ri.real * ri.real + ri.imag * ri.imag
    _block_sum_add(total, rr, b)


@cuda.jit
def _real_dot_cuda(u, v, out):
    b = cuda.blockIdx.y
    total = 0.0
    for i in range(cuda.grid(1), u.shape[1], cuda.gridsize(1)):
        total += u[b, i].real * v[b, i].real + u[b, i].imag * v[b, i].imag
    _block_sum_add(total, out, b)


def _reduce_blocks(n: int) -> int:
    """Thread blocks per system of a CUDA reduction over ``n`` elements: ~16 elements per thread, at most 1024."""
    return max(1, min(1024, n // (16 * _THREADS)))


def cg_update_batched_cuda(x, r, p, ap, a, rr, stream=0) -> None:
    """GPU twin of ``cg_update_batched_cpu``: one launch for all systems; ``rr`` (float64) must start at zero."""
    _cg_batched_cuda[(_reduce_blocks(x.shape[1]), x.shape[0]), _THREADS, stream](x, r, p, ap, a, rr)


def real_dot_batched_cuda(u, v, out, stream=0) -> None:
    """``out[b] += sum Re(conj(u[b]) v[b])`` over (batch, n) complex arrays, one launch (``out`` float64)."""
    _real_dot_cuda[(_reduce_blocks(u.shape[1]), u.shape[0]), _THREADS, stream](u, v, out)


def _batch_shape(x, batch_ndim: int) -> tuple[int, ...]:
    """Per-system scalars' shape: the batch axes, then ones that broadcast over each system's axes."""
    return tuple(x.shape[:batch_ndim]) + (1,) * (x.ndim - batch_ndim)


def real_dot(u, v, batch_ndim: int):
    """``Re <u, v>`` per system: the leading ``batch_ndim`` axes index independent systems. A float64 array
    of shape (*batch, 1, ...) on ``u``'s device (no host transfer): one kernel launch on a GPU."""
    xp = get_array_module(u)
    shape = _batch_shape(u, batch_ndim)
    n_batch = int(np.prod(shape))
    if xp is not np and _kernel_ready((u, v), (np.complex64, np.complex128)):
        out = xp.zeros(n_batch, dtype=xp.float64)
        _launch_gpu(xp, real_dot_batched_cuda, u.reshape(n_batch, -1), v.reshape(n_batch, -1), out)
        return out.reshape(shape)
    u2, v2 = u.reshape(n_batch, -1), v.reshape(n_batch, -1)
    out = np.array([np.vdot(u2[b], v2[b]).real for b in range(n_batch)]) if xp is np else (u2.conj() * v2).real.sum(axis=1)
    return out.astype(xp.float64).reshape(shape)


def _cg_update_xp(x, r, p, ap, alpha, batch_ndim: int = 0):
    xp = get_array_module(x)
    x += alpha * p
    r -= alpha * ap
    if batch_ndim:
        return real_dot(r, r, batch_ndim)
    return float(xp.vdot(r.ravel(), r.ravel()).real)


def cg_update(x, r, p, ap, alpha, batch_ndim: int = 0):
    """In place ``x += alpha p`` and ``r -= alpha ap``; returns ``||r||^2`` (a real ``alpha``).

    ``batch_ndim > 0``: the leading axes index independent systems, ``alpha`` is a real array of shape
    (*batch, 1, ...) (one step per system, e.g. 0 for a converged one) and the result a float64 array of
    that shape on the arrays' device (no host transfer; one kernel launch on a GPU).
    The Numba kernels take C-contiguous NumPy arrays of one complex dtype (the CUDA twin: CuPy arrays);
    anything else (real dtypes, other layouts) runs the xp twin.
    """
    arrays = (x, r, p, ap)
    xp = get_array_module(x)
    ready = _kernel_ready(arrays, (np.complex64, np.complex128))
    if batch_ndim == 0:
        if xp is np and ready:
            return float(cg_update_cpu(*(a.reshape(-1) for a in arrays), _real(x, alpha)))
        return _cg_update_xp(x, r, p, ap, alpha)
    if not ready:
        return _cg_update_xp(x, r, p, ap, alpha, batch_ndim)
    shape = _batch_shape(x, batch_ndim)
    n_batch = int(np.prod(shape))
    flat = [a.reshape(n_batch, -1) for a in arrays]
    a = xp.ascontiguousarray(xp.asarray(alpha).reshape(n_batch), dtype=np.finfo(x.dtype).dtype)
    if xp is np:
        rr = np.empty(n_batch, dtype=np.float64)
        cg_update_batched_cpu(*flat, a, rr)
    else:
        rr = xp.zeros(n_batch, dtype=xp.float64)
        _launch_gpu(xp, cg_update_batched_cuda, *flat, a, rr)
    return rr.reshape(shape)


# -- TV dual step -------------------------------------------------------------------------------
@njit(fastmath=False, cache=True)
def _ascent_line(v: np.ndarray, x: np.ndarray, x_prev: np.ndarray, s) -> None:
    # v += s (x - x_prev) along one contiguous line (a difference across lines)
    for i in range(v.shape[0]):
        v[i] += s * (x[i] - x_prev[i])


@njit(fastmath=False, cache=True)
def _ascent_inline(v: np.ndarray, x: np.ndarray, s) -> None:
    # v += s (x - roll(x, 1)) along one line (the difference within it, periodic)
    n = v.shape[0]
    v[0] += s * (x[0] - x[n - 1])
    for i in range(1, n):
        v[i] += s * (x[i] - x[i - 1])


@njit(fastmath=False, cache=True)
def _clip_line(v: np.ndarray, b) -> None:
    # v *= b / max(|v|, b) per element (projection onto |v| <= b)
    for i in range(v.shape[0]):
        m = np.sqrt(v[i].real * v[i].real + v[i].imag * v[i].imag)
        v[i] *= b / max(m, b)


@njit(fastmath=False, cache=True)
def _descent_line(out: np.ndarray, v: np.ndarray, v_next: np.ndarray) -> None:
    # out += v - v_next along one line (the adjoint of a difference across lines)
    for i in range(out.shape[0]):
        out[i] += v[i] - v_next[i]


@njit(fastmath=False, cache=True)
def _descent_inline(out: np.ndarray, v: np.ndarray) -> None:
    # out = v - roll(v, -1) along one line (the adjoint of the difference within it)
    n = out.shape[0]
    for i in range(n - 1):
        out[i] = v[i] - v[i + 1]
    out[n - 1] = v[n - 1] - v[0]


@njit(parallel=True, nogil=True, fastmath=False, cache=True)
def tv_dual_update_cpu(v: np.ndarray, x: np.ndarray, sigma: float, bound: float, grouped: bool, out: np.ndarray) -> None:
    """TV dual step on a (n0, n1, n2) image; the last ``v.shape[0]`` (1-3) axes are differentiated (CPU).

    ``v[a] <- proj(v[a] + sigma (x - roll(x, 1, axis)))`` for the differentiated axes, then
    ``out = sum_a v[a] - roll(v[a], -1, axis)``. ``grouped``: project the vector over ``a`` per voxel.
    Works line by line (contiguous runs along the last axis), which LLVM vectorises.
    """
    k = v.shape[0]
    n0, n1, n2 = x.shape
    first = 3 - k  # the first differentiated axis
    s, b = sigma, bound
    for row in prange(n0 * n1):
        i0 = row // n1
        i1 = row - i0 * n1
        xl = x[i0, i1]
        if first == 0:
            _ascent_line(v[0, i0, i1], xl, x[i0 - 1 if i0 > 0 else n0 - 1, i1], s)
        if first <= 1:
            _ascent_line(v[k - 2, i0, i1], xl, x[i0, i1 - 1 if i1 > 0 else n1 - 1], s)
        _ascent_inline(v[k - 1, i0, i1], xl, s)
        if grouped:
            norm2 = np.zeros(n2, dtype=x.real.dtype)
            for a in range(k):
                va = v[a, i0, i1]
                for i in range(n2):
                    norm2[i] += va[i].real * va[i].real + va[i].imag * va[i].imag
            for i in range(n2):
                norm2[i] = b / max(np.sqrt(norm2[i]), b)
            for a in range(k):
                va = v[a, i0, i1]
                for i in range(n2):
                    va[i] *= norm2[i]
        else:
            for a in range(k):
                _clip_line(v[a, i0, i1], b)
    for row in prange(n0 * n1):
        i0 = row // n1
        i1 = row - i0 * n1
        ol = out[i0, i1]
        _descent_inline(ol, v[k - 1, i0, i1])
        if first == 0:
            _descent_line(ol, v[0, i0, i1], v[0, i0 + 1 if i0 < n0 - 1 else 0, i1])
        if first <= 1:
            _descent_line(ol, v[k - 2, i0, i1], v[k - 2, i0, i1 + 1 if i1 < n1 - 1 else 0])


def tv_kernel_fits(v, x, axes: tuple[int, ...], out=None) -> bool:
    """Whether ``tv_dual_update``'s kernel takes these arrays: NumPy, C-contiguous, one complex dtype, a 2D
    or 3D ``x`` differentiated along its trailing ``axes``."""
    trailing = tuple(a % x.ndim for a in axes) == tuple(range(x.ndim - len(axes), x.ndim))
    arrays = (v, x) if out is None else (v, x, out)
    return (get_array_module(x) is np and x.ndim in (2, 3) and trailing
            and _kernel_ready(arrays, (np.complex64, np.complex128)))


def tv_dual_update(v, x, sigma: float, bound: float, grouped: bool, axes: tuple[int, ...], out=None):
    """In place ``v <- proj(v + sigma G x)``; returns ``G^H v`` (into ``out`` when given). CPU kernel only:
    the arrays must pass ``tv_kernel_fits``.

    ``G`` are periodic backward differences along ``axes`` of ``x`` (``v`` has shape (len(axes), *x.shape));
    ``proj`` the projection onto ``|v| <= bound`` per element, or per voxel over the differences when
    ``grouped`` (isotropic TV). ``bound > 0``.
    """
    if out is None:
        out = np.empty_like(x)
    shape3 = (1,) * (3 - x.ndim) + x.shape
    tv_dual_update_cpu(
        v.reshape((len(axes),) + shape3), x.reshape(shape3), _real(x, sigma), _real(x, bound), bool(grouped), out.reshape(shape3)
    )
    return out


def _real(x, value: float):
    """``value`` as a scalar of ``x``'s real dtype, so that the kernels compute in ``x``'s precision."""
    return np.finfo(x.dtype).dtype.type(value)


def _kernel_ready(arrays, dtypes) -> bool:
    """True when all arrays share one of ``dtypes`` and are C-contiguous (what the Numba kernels take)."""
    dtype = arrays[0].dtype
    return dtype in dtypes and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)
