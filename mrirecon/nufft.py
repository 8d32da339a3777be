"""The non-uniform FFT as a ``LinearOperator``: forward, adjoint and a Toeplitz-embedded normal operator.

``NUFFT(coord, image_shape, batch_shape)`` maps images (*batch, *image_shape) to samples
(*batch, *coord.shape[:-1]); batch dims (coils) share one plan. ``coord`` is in cycles/FOV
(k in [-N/2, N/2) per axis), the last axis ordered like the image axes ((ky, kx) or (kz, ky, kx)).
The transform is orthonormal: on Cartesian positions it equals the centred FFT (``linop.FFT``).

Accuracy (relative error against a direct non-uniform DFT, measured on random trajectories):
``"default"`` = oversampling 1.25, kernel width 6 (3e-4 to 5e-4); ``"high"`` = oversampling 2,
width 7 (8e-7). ``oversamp``/``width`` override either. Plans (sample sort, spreading slabs,
deapodisation, Toeplitz kernel) are cached by trajectory, shape and settings, so that every slice
and every iteration of a reconstruction reuses them.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .kernels.backend import device_of, get_array_module, to_numpy
from .kernels.fft import fftc, ifftc
from .kernels.nufft import NufftPlan
from .kernels.toeplitz import crop_combine, expand_into_grid, toeplitz_convolve
from .linop import LinearOperator

ACCURACY = {"default": (1.25, 6), "high": (2.0, 7)}  # (oversampling, kernel width)
_PLAN_CACHE: OrderedDict[tuple, NufftPlan] = OrderedDict()
_PLAN_CACHE_SIZE = 8


def nufft_plan(coord: Any, image_shape: Sequence[int], oversamp: float, width: int) -> NufftPlan:
    """The plan for ``coord`` (..., ndim) on ``image_shape``, from the cache when the same trajectory,
    shape, settings and device were planned before (least recently used plans are dropped)."""
    xp = get_array_module(coord)
    host = np.ascontiguousarray(to_numpy(coord), dtype=np.float64).reshape(-1, coord.shape[-1])
    key = (
        hashlib.sha1(host.tobytes()).hexdigest(),
        host.shape,
        tuple(int(n) for n in image_shape),
        float(oversamp),
        int(width),
        device_of(coord),
    )
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        plan = NufftPlan(host, tuple(image_shape), oversamp, width, xp)
        _PLAN_CACHE[key] = plan
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    else:
        _PLAN_CACHE.move_to_end(key)
    return plan


class NUFFT(LinearOperator):
    """Non-uniform FFT: image (*batch, *image_shape) -> samples (*batch, *coord.shape[:-1]).

    ``accuracy``: "default" or "high" (see the module doc); ``oversamp``/``width`` override it.
    ``toeplitz``: the normal operator A^H A runs as one convolution on the 2N grid (exact up to the
    NUFFT accuracy, faster than interp + spread when there are more samples than grid points).
    """

    def __init__(
        self,
        coord: Any,
        image_shape: Sequence[int],
        batch_shape: Sequence[int] = (),
        *,
        accuracy: str = "default",
        oversamp: float | None = None,
        width: int | None = None,
        toeplitz: bool = True,
    ):
        if accuracy not in ACCURACY:
            raise InputError("accuracy", f"unknown NUFFT accuracy {accuracy!r} (known: {', '.join(ACCURACY)})")
        image_shape = tuple(int(n) for n in image_shape)
        ndim = coord.shape[-1]
        if ndim != len(image_shape) or ndim not in (2, 3):
            raise InputError(
                "trajectory", f"trajectory has {ndim} coordinates per sample but the image shape is {image_shape} (need 2D or 3D)"
            )
        default_os, default_width = ACCURACY[accuracy]
        oversamp = default_os if oversamp is None else float(oversamp)
        width = default_width if width is None else int(width)
        if not 1.0 < oversamp <= 4.0:
            raise InputError("oversamp", f"NUFFT oversampling must be in (1, 4], got {oversamp}")
        xp = get_array_module(coord)
        if not bool(xp.isfinite(coord).all()):
            raise InputError("trajectory", "trajectory contains NaN or Inf")
        half = xp.asarray(np.array(image_shape, dtype=np.float64) / 2)
        if bool((xp.abs(coord) > half + 1e-6).any()):
            raise InputError("trajectory", f"trajectory leaves k-space [-N/2, N/2] of image {image_shape}: units are cycles/FOV")
        sample_shape = tuple(coord.shape[:-1])
        batch_shape = tuple(int(b) for b in batch_shape)
        super().__init__(batch_shape + sample_shape, batch_shape + image_shape, "NUFFT")
        try:
            self.plan = nufft_plan(coord, image_shape, oversamp, width)
        except ValueError as exc:
            raise InputError("width", str(exc)) from None
        self.batch_shape, self.image_shape, self.sample_shape = batch_shape, image_shape, sample_shape
        self.toeplitz = toeplitz
        self._n_batch = math.prod(batch_shape)

    def _flat_images(self, x: Any) -> Any:
        return x.reshape((self._n_batch,) + self.image_shape)

    def _apply(self, x: Any) -> Any:
        return self.plan.forward(self._flat_images(x)).reshape(self.oshape)

    def _adjoint(self, y: Any) -> Any:
        return self.plan.adjoint(y.reshape(self._n_batch, -1)).reshape(self.ishape)

    def _normal(self, x: Any) -> Any:
        if not self.toeplitz:
            return self._adjoint(self._apply(x))
        return self.plan.normal(self._flat_images(x)).reshape(self.ishape)


class ToeplitzSenseNormal(LinearOperator):
    """``S^H (A^H A) S`` for non-Cartesian SENSE with ``A`` a coil-batched ``NUFFT``: image -> image, fused.

    Equal to ``Sense(maps).H @ NUFFT.N @ Sense(maps)`` with the Toeplitz normal (up to float32
    rounding), in three passes over one (coil, *2N) complex64 grid that is allocated once per operator
    and reused (``kernels/toeplitz.py``): the expand writes ``maps * x`` into the grid's corner and the
    zero padding in the same pass; pruned FFTs, the kernel multiply (FFT scales folded into the stored
    spectrum, ``NufftPlan.toeplitz_weights``) and the pruned inverse run in place; the combine reads
    the corner (crop and combine fused). 2D and 3D. The grid makes an operator unsafe to call from two
    threads at once (each task builds its own). ``prune=False`` runs the full FFTs (for tests).
    Measured per call on 2 shared cores (min of 15, quiet moment): 8 coils 256^2 31.4 ms unfused,
    12.4 ms fused unpruned, 8.5 ms fused (the pruned FFT pair alone 7.2 ms); 8 coils 64^3: 285 ms
    unfused, 151 ms unpruned, 91 ms fused.
    """

    def __init__(self, nufft: NUFFT, maps: Any, *, prune: bool = True):
        if len(nufft.batch_shape) != 1 or tuple(maps.shape) != nufft.ishape:
            raise InputError(None, f"coil maps have shape {tuple(maps.shape)}, need (coil, *image) = {nufft.ishape}")
        super().__init__(nufft.image_shape, nufft.image_shape, "ToeplitzSenseNormal")
        xp = get_array_module(maps)
        self.plan, self.image_shape, self.prune = nufft.plan, nufft.image_shape, prune
        self.maps = xp.ascontiguousarray(maps, dtype=xp.complex64)
        self._grid = None

    def buffer(self) -> Any:
        """The reused (coil, *2N) complex64 grid (contents undefined between calls)."""
        if self._grid is None:
            xp = get_array_module(self.maps)
            double = tuple(2 * n for n in self.image_shape)
            self._grid = xp.empty((self.maps.shape[0],) + double, dtype=xp.complex64)
        return self._grid

    def _apply(self, x: Any) -> Any:
        grid = expand_into_grid(x, self.maps, self.buffer())
        grid = toeplitz_convolve(grid, self.plan.toeplitz_weights(), self.image_shape, self.prune)
        return crop_combine(grid, self.maps)

    _adjoint = _apply  # Hermitian


def stack_partitions(coord: Any, image_shape: Sequence[int]) -> np.ndarray | None:
    """Grid row (kz + Nz//2) of each partition when ``coord`` (partition, ..., 3) is a stack: one
    integer kz per partition, inside the image's kz range; None for any other trajectory."""
    if coord.ndim < 3 or coord.shape[-1] != 3 or len(image_shape) != 3:
        return None
    kz = np.asarray(to_numpy(coord[..., 0]), dtype=np.float64).reshape(coord.shape[0], -1)
    nz = int(image_shape[0])
    if not (kz == kz[:, :1]).all() or not np.array_equal(kz[:, 0], np.round(kz[:, 0])):
        return None
    rows = kz[:, 0].astype(np.int64) + nz // 2
    return rows if ((rows >= 0) & (rows < nz)).all() else None


class StackedNUFFT(LinearOperator):
    """Stack-of-stars/spirals NUFFT: image (*batch, nz, ny, nx) -> samples (*batch, partition, *plane).

    A centred FFT along z, then partition p's 2D NUFFT (its own in-plane trajectory) on the kz row
    it samples; the normal operator is the per-row 2D (Toeplitz) normal between the z FFTs. Equal to
    ``NUFFT`` on the 3D coordinates (both orthonormal), but exact along kz, with width^2 instead of
    width^3 kernel taps per sample. Measured (32 x 64 spokes x 256 on 32 x 128^2, 8 coils, 2 shared
    cores, ``scripts/bench_nufft.py``): forward 0.85 s vs 1.38 s, normal 0.84 s vs 2.2 s, adjoint
    2.1 s vs 1.8 s (32 small 2D spreads cost more than one 3D spread).
    """

    def __init__(
        self, coord: Any, image_shape: Sequence[int], batch_shape: Sequence[int] = (), *, accuracy: str = "default",
        toeplitz: bool = True,
    ):
        image_shape = tuple(int(n) for n in image_shape)
        rows = stack_partitions(coord, image_shape)
        if rows is None:
            raise InputError("trajectory", "not a stack: need (partition, ..., 3) with one integer kz per partition")
        batch_shape = tuple(int(b) for b in batch_shape)
        self.rows, self.image_shape, self.batch_shape = rows, image_shape, batch_shape
        self.sample_shape = tuple(coord.shape[:-1])
        self.planes = [NUFFT(coord[p, ..., 1:], image_shape[1:], batch_shape, accuracy=accuracy, toeplitz=toeplitz)
                       for p in range(coord.shape[0])]
        super().__init__(batch_shape + self.sample_shape, batch_shape + image_shape, "StackedNUFFT")

    def _per_row(self, x: Any, op: str) -> Any:
        """ifft_z of the rows' 2D ``op`` ("_normal") applied to fft_z(x), summed where partitions share a row."""
        hybrid = fftc(x, (-3,))
        xp = get_array_module(x)
        out = xp.zeros_like(hybrid)
        for row, plane in zip(self.rows, self.planes):
            out[..., row, :, :] += getattr(plane, op)(hybrid[..., row, :, :])
        return ifftc(out, (-3,))

    def _apply(self, x: Any) -> Any:
        hybrid = fftc(x, (-3,))
        xp = get_array_module(x)
        axis = len(self.batch_shape)
        return xp.stack([plane._apply(hybrid[..., row, :, :]) for row, plane in zip(self.rows, self.planes)], axis=axis)

    def _adjoint(self, y: Any) -> Any:
        xp = get_array_module(y)
        hybrid = xp.zeros(self.ishape, dtype=xp.complex64)
        axis = len(self.batch_shape)
        for p, (row, plane) in enumerate(zip(self.rows, self.planes)):
            hybrid[..., row, :, :] += plane._adjoint(xp.take(y, p, axis=axis))
        return ifftc(hybrid, (-3,))

    def _normal(self, x: Any) -> Any:
        return self._per_row(x, "_normal")
