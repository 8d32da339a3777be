"""Kaiser–Bessel gridding kernels and the NUFFT plan built on them (CPU Numba + numba.cuda twins).

A type-2 NUFFT (image -> non-uniform samples) is: divide by the kernel's Fourier transform
(deapodisation), zero-pad onto an oversampled grid G = ceil(oversamp * N), FFT, then *interpolate*
every sample from the ``width``^d grid points around it with the Kaiser–Bessel kernel
``phi(u) = I0(beta * sqrt(1 - (2u / width)^2))`` (Beatty et al., IEEE TMI 24:799, 2005 for beta).
The adjoint runs the same steps backwards: *spread* each sample onto the grid, inverse FFT, crop,
deapodise. Image pixel r (centred index, r in [-N/2, N/2)) and sample k (cycles per FOV, k in
[-N/2, N/2)) are related by ``y(k) = prod(N)^(-1/2) sum_r x(r) exp(-2 pi i k.r / N)`` (orthonormal, so
k on the Cartesian grid gives the centred FFT of ``kernels.fft``).

Every grid is 3D internally (2D problems get a leading axis of size 1 that the kernels skip) and stored
coil-last, (G0 * G1 * G2, coil): one kernel tap reads or writes all coils in one cache line. The FFT
shifts are folded into the padding (the image is written at r mod G) and into the sample coordinates
(the kernels wrap indices mod G), so no ``fftshift`` copies run.

CPU spreading is thread-safe without atomics: the grid is cut into slabs along its first real axis and
each slab has the list of samples whose kernel footprint touches it (made once in the plan); a thread
owns a slab and writes only inside it. The GPU twins use one thread per sample (atomics when spreading).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import product
from typing import Any

import numba
import numpy as np
import scipy.fft
import scipy.special
from numba import cuda, njit, prange

from .backend import get_array_module
from .coil import _launch_gpu  # importing coil also sets OMP_WAIT_POLICY before Numba's pool starts
from .threads import cpu_threads

MAX_WIDTH = 16  # CUDA local arrays have a fixed size
_TABLE_DENSITY = 2048  # kernel table points per grid unit: linear-interpolation error < 1e-6 relative
_INTERP_BLOCK = 512  # samples per CPU work item when interpolating
_THREADS = 128  # CUDA threads per block


def kaiser_bessel_beta(width: int, oversamp: float) -> float:
    """Kaiser–Bessel shape parameter for a kernel of ``width`` grid points at ``oversamp`` (Beatty 2005)."""
    return math.pi * math.sqrt((width / oversamp) ** 2 * (oversamp - 0.5) ** 2 - 0.8)


def kernel_table(width: int, beta: float) -> np.ndarray:
    """phi(|u|) / phi(0) sampled every 1/_TABLE_DENSITY grid units on [0, width/2], then zeros (float32)."""
    n = int(width / 2 * _TABLE_DENSITY) + 2
    t = np.arange(n) / _TABLE_DENSITY
    arg = np.clip(1.0 - (2.0 * t / width) ** 2, 0.0, None)
    table = scipy.special.i0(beta * np.sqrt(arg)) / scipy.special.i0(beta)
    table[t >= width / 2] = 0.0
    return table.astype(np.float32)


def kernel_transform(nu: np.ndarray, width: int, beta: float) -> np.ndarray:
    """Continuous Fourier transform of phi / phi(0) at ``nu`` cycles per grid unit (float64).

    FT{I0(beta sqrt(1 - (2u/W)^2))}(nu) = W sinh(z) / z with z = sqrt(beta^2 - (pi W nu)^2); z is
    imaginary (sinh -> sin) beyond the kernel's main lobe.
    """
    z2 = beta**2 - (math.pi * width * np.asarray(nu, dtype=np.float64)) ** 2
    z = np.sqrt(np.abs(z2))
    safe = np.where(z > 1e-12, z, 1.0)
    ratio = np.where(z2 >= 0, np.sinh(safe), np.sin(safe)) / safe
    return width * np.where(z > 1e-12, ratio, 1.0) / scipy.special.i0(beta)


def _footprint(u, m, n0, n1, n2, width, table, density, w, idx, count):
    """Kernel weights ``w[axis, j]``, wrapped grid indices ``idx[axis, j]`` and point counts ``count[axis]``
    of sample ``m`` (coordinates ``u[m]`` in grid units) on a grid of shape (n0, n1, n2).

    A size-1 axis (the extra axis of a 2D problem) has one point of weight 1. Compiled twice: for the
    CPU kernels (njit) and as a CUDA device function.
    """
    for axis in range(3):
        n = n0 if axis == 0 else (n1 if axis == 1 else n2)
        if n == 1:
            w[axis, 0] = 1.0
            idx[axis, 0] = 0
            count[axis] = 1
            continue
        x = u[m, axis]
        start = math.floor(x - 0.5 * width) + 1
        for j in range(width):
            g = start + j
            t = abs(x - g) * density
            i = int(t)
            f = t - i
            w[axis, j] = table[i] + f * (table[i + 1] - table[i])
            idx[axis, j] = g % n
        count[axis] = width


_footprint_cpu = njit(cache=True)(_footprint)
_footprint_gpu = cuda.jit(device=True)(_footprint)


@njit(parallel=True, nogil=True, fastmath=True, cache=True)
def interp_cpu(grid, u, out, width, table, density, order, n0, n1, n2):
    """``out[m, c] = sum_g phi(u_m - g) grid[g, c]``: grid (G0 * G1 * G2, coil) row-major, u (M, 3) in
    grid units, out (M, coil). Coils are innermost: one kernel tap reads all coils from one cache line.

    Samples are visited in ``order`` (sorted by grid position: neighbours share cache lines).
    """
    n_coils = grid.shape[1]
    n_samples = order.shape[0]
    for block in prange((n_samples + _INTERP_BLOCK - 1) // _INTERP_BLOCK):
        w = np.empty((3, width), np.float32)
        idx = np.empty((3, width), np.int64)
        k = np.empty(3, np.int64)
        acc = np.empty(n_coils, np.complex64)
        for p in range(block * _INTERP_BLOCK, min((block + 1) * _INTERP_BLOCK, n_samples)):
            m = order[p]
            _footprint_cpu(u, m, n0, n1, n2, width, table, density, w, idx, k)
            acc[:] = 0
            for a in range(k[0]):
                for b in range(k[1]):
                    wab = w[0, a] * w[1, b]
                    base = (idx[0, a] * n1 + idx[1, b]) * n2
                    for d in range(k[2]):
                        wt = wab * w[2, d]
                        g = base + idx[2, d]
                        for c in range(n_coils):
                            acc[c] += grid[g, c] * wt
            for c in range(n_coils):
                out[m, c] = acc[c]


@njit(parallel=True, nogil=True, fastmath=True, cache=True)
def spread_cpu(values, u, grid, width, table, density, n0, n1, n2, slab_ptr, slab_samples, slab_lo, slab_hi, slab_axis):
    """``grid[g, c] += sum_m phi(u_m - g) values[m, c]`` (layouts as ``interp_cpu``; grid zeroed by the caller).

    Slab s covers grid indices [slab_lo[s], slab_hi[s]) along ``slab_axis`` (0 or 1) and lists the
    samples touching it in ``slab_samples[slab_ptr[s]:slab_ptr[s + 1]]``; slabs run in parallel and
    each writes only its own indices, so no two threads write one grid point.
    """
    n_coils = grid.shape[1]
    for s in prange(slab_ptr.shape[0] - 1):
        w = np.empty((3, width), np.float32)
        idx = np.empty((3, width), np.int64)
        k = np.empty(3, np.int64)
        lo0, hi0, lo1, hi1 = 0, n0, 0, n1
        if slab_axis == 0:
            lo0, hi0 = slab_lo[s], slab_hi[s]
        else:
            lo1, hi1 = slab_lo[s], slab_hi[s]
        for p in range(slab_ptr[s], slab_ptr[s + 1]):
            m = slab_samples[p]
            _footprint_cpu(u, m, n0, n1, n2, width, table, density, w, idx, k)
            for a in range(k[0]):
                g0 = idx[0, a]
                if g0 < lo0 or g0 >= hi0:
                    continue
                for b in range(k[1]):
                    g1 = idx[1, b]
                    if g1 < lo1 or g1 >= hi1:
                        continue
                    wab = w[0, a] * w[1, b]
                    base = (g0 * n1 + g1) * n2
                    for d in range(k[2]):
                        wt = wab * w[2, d]
                        g = base + idx[2, d]
                        for c in range(n_coils):
                            grid[g, c] += values[m, c] * wt


@cuda.jit
def _interp_cuda(grid, u, out, width, table, density, order, n0, n1, n2):
    p = cuda.grid(1)
    if p >= order.shape[0]:
        return
    w = cuda.local.array((3, MAX_WIDTH), numba.float32)
    idx = cuda.local.array((3, MAX_WIDTH), numba.int64)
    k = cuda.local.array(3, numba.int64)
    _footprint_gpu(u, order[p], n0, n1, n2, width, table, density, w, idx, k)
    for c in range(grid.shape[1]):
        acc = numba.complex64(0)
        for a in range(k[0]):
            for b in range(k[1]):
                wab = w[0, a] * w[1, b]
                base = (idx[0, a] * n1 + idx[1, b]) * n2
                for d in range(k[2]):
                    acc += grid[base + idx[2, d], c] * (wab * w[2, d])
        out[order[p], c] = acc


@cuda.jit
def _spread_cuda(values, u, grid_f32, width, table, density, order, n0, n1, n2):
    """Atomic spreading into ``grid_f32``: the complex64 grid (G, coil) viewed as float32 (G, 2 * coil)."""
    p = cuda.grid(1)
    if p >= order.shape[0]:
        return
    w = cuda.local.array((3, MAX_WIDTH), numba.float32)
    idx = cuda.local.array((3, MAX_WIDTH), numba.int64)
    k = cuda.local.array(3, numba.int64)
    _footprint_gpu(u, order[p], n0, n1, n2, width, table, density, w, idx, k)
    for a in range(k[0]):
        for b in range(k[1]):
            wab = w[0, a] * w[1, b]
            base = (idx[0, a] * n1 + idx[1, b]) * n2
            for d in range(k[2]):
                wt = wab * w[2, d]
                g = base + idx[2, d]
                for c in range(values.shape[1]):
                    v = values[order[p], c]
                    cuda.atomic.add(grid_f32, (g, 2 * c), v.real * wt)
                    cuda.atomic.add(grid_f32, (g, 2 * c + 1), v.imag * wt)


def interp_cuda(grid: Any, u: Any, out: Any, width: int, table: Any, density: float, order: Any, n0: int, n1: int, n2: int, stream: Any = 0) -> None:
    """GPU twin of ``interp_cpu`` (CuPy/numba device arrays; NumPy under the CUDA simulator)."""
    _interp_cuda[(order.shape[0] + _THREADS - 1) // _THREADS, _THREADS, stream](
        grid, u, out, width, table, density, order, n0, n1, n2
    )


def spread_cuda(values: Any, u: Any, grid: Any, width: int, table: Any, density: float, order: Any, n0: int, n1: int, n2: int, stream: Any = 0) -> None:
    """GPU twin of ``spread_cpu``: adds into the complex64 ``grid`` (G, coil) with atomics."""
    grid_f32 = grid.view(np.float32)
    _spread_cuda[(order.shape[0] + _THREADS - 1) // _THREADS, _THREADS, stream](
        values, u, grid_f32, width, table, density, order, n0, n1, n2
    )


def _blocks(image_shape: tuple[int, ...], grid_shape: tuple[int, ...]) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Pairs (image slices, grid slices) that place centred image index r at grid index r mod G."""
    per_axis = []
    for n, g in zip(image_shape, grid_shape):
        h = n // 2  # image index h is r = 0
        per_axis.append([(slice(h, n), slice(0, n - h)), (slice(0, h), slice(g - h, g))])
    for combo in product(*per_axis):
        yield tuple(c[0] for c in combo), tuple(c[1] for c in combo)


def _fftn(x: Any, axes: tuple[int, ...], inverse: bool) -> Any:
    """Unnormalised forward FFT / unnormalised inverse (sum, no 1/n) over ``axes``; no shifts."""
    xp = get_array_module(x)
    if xp is np:
        fn = scipy.fft.ifftn if inverse else scipy.fft.fftn
        return fn(x, axes=axes, norm="forward" if inverse else "backward", workers=cpu_threads(), overwrite_x=True)
    fn = xp.fft.ifftn if inverse else xp.fft.fftn
    return fn(x, axes=axes, norm="forward" if inverse else "backward")


class NufftPlan:
    """Everything a NUFFT of one trajectory needs, computed once: grid coordinates, kernel table,
    deapodisation, sample order and (CPU) spreading slabs; the Toeplitz kernel on first use.

    ``coord``: (M, ndim) sample positions in cycles/FOV (NumPy, float); ``image_shape``: (N0, [N1,] Nd).
    ``xp``: the array module the plan's arrays live in (numpy or cupy).
    """

    def __init__(self, coord: np.ndarray, image_shape: tuple[int, ...], oversamp: float, width: int, xp: Any = np):
        ndim = len(image_shape)
        if width > MAX_WIDTH or width < 2:
            raise ValueError(f"kernel width {width} outside [2, {MAX_WIDTH}]")
        self.xp = xp
        self.image_shape = tuple(int(n) for n in image_shape)
        self.ndim = ndim
        self.oversamp, self.width = float(oversamp), int(width)
        self.grid_shape = tuple(_grid_size(n, oversamp) for n in self.image_shape)
        self.beta = kaiser_bessel_beta(width, oversamp)
        self.n_samples = int(coord.shape[0])

        # Sample positions in grid units, 3D (a leading zero column for 2D).
        u = np.zeros((self.n_samples, 3), dtype=np.float64)
        u[:, 3 - ndim:] = np.asarray(coord, dtype=np.float64) * (np.array(self.grid_shape) / np.array(self.image_shape))
        self._grid3 = (1,) * (3 - ndim) + self.grid_shape
        starts = np.floor(u - 0.5 * width).astype(np.int64) + 1
        starts %= np.array(self._grid3)
        order = np.lexsort((starts[:, 2], starts[:, 1], starts[:, 0]))  # row-major grid order
        self.slab_axis = 3 - ndim  # first real axis: 0 in 3D, 1 in 2D
        if xp is np:  # the GPU spreads with atomics and needs no slabs
            self.slabs = _slabs(starts[order, self.slab_axis], order, self._grid3[self.slab_axis], width)

        # Deapodisation: 1 / FT(phi) per axis at r / G, with the orthonormal 1/sqrt(prod N).
        deapod = np.ones((), dtype=np.float64)
        for n, g in zip(self.image_shape, self.grid_shape):
            r = np.arange(n) - n // 2
            deapod = np.multiply.outer(deapod, 1.0 / kernel_transform(r / g, width, self.beta))
        deapod /= math.sqrt(math.prod(self.image_shape))

        self.u = xp.asarray(u)
        self.order = xp.asarray(order.astype(np.int64))
        self.table = xp.asarray(kernel_table(width, self.beta))
        self.deapod = xp.asarray(deapod.astype(np.float32))
        self._toeplitz = None
        self._toeplitz_weights = None
        self._coord = coord

    # -- the two halves on the oversampled grid (coil axis last) -----------------------------
    def interp(self, grid: Any) -> Any:
        """Samples (M, coil) from an oversampled grid (*grid_shape, coil)."""
        xp = get_array_module(grid)
        n_coils = grid.shape[-1]
        g = xp.ascontiguousarray(grid, dtype=xp.complex64).reshape(-1, n_coils)
        out = xp.empty((self.n_samples, n_coils), dtype=xp.complex64)
        args = (g, self.u, out, self.width, self.table, np.float32(_TABLE_DENSITY), self.order, *self._grid3)
        if xp is np:
            interp_cpu(*args)
        else:
            _launch_gpu(xp, interp_cuda, *args)
        return out

    def spread(self, values: Any) -> Any:
        """Oversampled grid (*grid_shape, coil) from samples (M, coil)."""
        xp = get_array_module(values)
        v = xp.ascontiguousarray(values, dtype=xp.complex64)
        n_coils = v.shape[1]
        grid = xp.zeros((math.prod(self.grid_shape), n_coils), dtype=xp.complex64)
        density = np.float32(_TABLE_DENSITY)
        if xp is np:
            with numba.parallel_chunksize(1):  # slabs differ in load (dense k-space centre): hand out one at a time
                spread_cpu(
                    v, self.u, grid, self.width, self.table, density, *self._grid3, *self.slabs, self.slab_axis
                )
        else:
            _launch_gpu(xp, spread_cuda, v, self.u, grid, self.width, self.table, density, self.order, *self._grid3)
        return grid.reshape(self.grid_shape + (n_coils,))

    # -- NUFFT ---------------------------------------------------------------------------------
    def forward(self, image: Any) -> Any:
        """Type-2 NUFFT: image (coil, *image_shape) -> samples (coil, M), complex64."""
        xp = get_array_module(image)
        scaled = xp.moveaxis(image * self.deapod, 0, -1)
        grid = xp.zeros(self.grid_shape + (image.shape[0],), dtype=xp.complex64)
        for src, dst in _blocks(self.image_shape, self.grid_shape):
            grid[dst] = scaled[src]
        grid = _fftn(grid, tuple(range(self.ndim)), inverse=False)
        return self.interp(grid).T

    def adjoint(self, values: Any) -> Any:
        """Type-1 NUFFT (adjoint of ``forward``): samples (coil, M) -> image (coil, *image_shape)."""
        xp = get_array_module(values)
        grid = _fftn(self.spread(values.T), tuple(range(self.ndim)), inverse=True)
        image = xp.empty(self.image_shape + (values.shape[0],), dtype=xp.complex64)
        for src, dst in _blocks(self.image_shape, self.grid_shape):
            image[src] = grid[dst]
        return xp.moveaxis(image, -1, 0) * self.deapod

    # -- normal operator by Toeplitz embedding -------------------------------------------------
    def toeplitz_kernel(self) -> Any:
        """Real spectrum (2 * image_shape) with A^H A x = crop(IFFT(K * FFT(pad_2N(x)))).

        The point-spread function p(d) = sum_k exp(2 pi i k.d / N), d in [-N, N), is an adjoint NUFFT
        of ones onto the doubled image (coordinates 2k on a 2N grid), made once and cached.
        """
        if self._toeplitz is None:
            xp = self.xp
            double = tuple(2 * n for n in self.image_shape)
            big = NufftPlan(2.0 * np.asarray(self._coord), double, self.oversamp, self.width, xp)
            psf = big.adjoint(xp.ones((1, self.n_samples), dtype=xp.complex64))[0]
            psf *= np.float32(math.sqrt(math.prod(double)))
            for axis in range(self.ndim):  # d = -N: outside the needed [-(N-1), N-1] and unpaired; K stays real
                psf[(slice(None),) * axis + (0,)] = 0
            wrapped = xp.zeros(double, dtype=xp.complex64)
            for src, dst in _blocks(double, double):
                wrapped[dst] = psf[src]
            spectrum = _fftn(wrapped, tuple(range(self.ndim)), inverse=False).real / math.prod(self.image_shape)
            self._toeplitz = spectrum.astype(xp.float32)
        return self._toeplitz

    def toeplitz_weights(self) -> Any:
        """``toeplitz_kernel() / prod(2 * image_shape)``, C-contiguous float32, cached: the spectrum to
        multiply by between an unnormalised FFT and an unnormalised inverse FFT (a plain sum), so that
        no pass of its own scales the result (``kernels.toeplitz.toeplitz_convolve``)."""
        if self._toeplitz_weights is None:
            kernel = self.toeplitz_kernel()
            scaled = kernel / np.float32(math.prod(kernel.shape))
            self._toeplitz_weights = self.xp.ascontiguousarray(scaled, dtype=self.xp.float32)
        return self._toeplitz_weights

    def normal(self, image: Any) -> Any:
        """A^H A image for image (coil, *image_shape) by Toeplitz embedding (two FFTs on the 2N grid)."""
        xp = get_array_module(image)
        kernel = self.toeplitz_kernel()
        double = kernel.shape
        padded = xp.zeros((image.shape[0],) + double, dtype=xp.complex64)
        for src, dst in _blocks(self.image_shape, double):
            padded[(slice(None),) + dst] = image[(slice(None),) + src]
        axes = tuple(range(1, self.ndim + 1))
        conv = _fftn(_fftn(padded, axes, inverse=False) * kernel, axes, inverse=True) / np.float32(math.prod(double))
        out = xp.empty(image.shape, dtype=xp.complex64)
        for src, dst in _blocks(self.image_shape, double):
            out[(slice(None),) + src] = conv[(slice(None),) + dst]
        return out


def _grid_size(n: int, oversamp: float) -> int:
    """Oversampled grid length: >= oversamp * n, even, with small prime factors (fast FFT)."""
    g = scipy.fft.next_fast_len(math.ceil(oversamp * n))
    while g % 2:
        g = scipy.fft.next_fast_len(g + 1)
    return g


def _slabs(starts: np.ndarray, order: np.ndarray, n: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slabs along one grid axis of length ``n`` and, for each, the samples whose footprint
    [start, start + width) (mod n) touches it; ``starts`` are the footprint starts in ``order``.

    About 8 slabs per thread (load balance over the dense k-space centre), each at least 2 * width
    thick so that a sample lands in at most two.
    """
    threads = numba.get_num_threads()
    thickness = max(2 * width, -(-n // (8 * threads)))
    lo = np.arange(0, n, thickness, dtype=np.int64)
    hi = np.minimum(lo + thickness, n)
    lists = []
    for a0, a1 in zip(lo, hi):
        touches = ((a0 - starts) % n < width) | ((starts - a0) % n < (a1 - a0))
        lists.append(order[touches])
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    samples = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
    return ptr, samples, lo, hi
