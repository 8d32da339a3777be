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
from .kernels.nufft import NufftPlan
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
