"""``recon(ksp, method, **params) -> Image``: the one call that turns k-space into an image.

It validates the method and its parameters, checks the k-space, moves the data to the device once,
runs the method on every batch entry (slice, echo, ...), crops to the header's recon matrix and
attaches geometry and provenance. The result comes back on the device the input came from.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from . import __version__
from .data import Image, KSpace, Provenance
from .errors import InputError
from .kernels.backend import get_array_module, resolve_device, to_device, to_numpy
from .methods import get_method


def crop_box(shape: tuple[int, ...], recon_matrix: tuple[int, int, int]) -> tuple[slice, ...]:
    """Centred crop of the spatial ``shape`` ((z,) y, x) to the recon matrix, where it is smaller.

    The default header matrix (1, 1, 1) means "not set" and crops nothing. The centre pixel (n//2,
    where a centred FFT puts the origin) stays the centre pixel (m//2).
    """
    if tuple(recon_matrix) == (1, 1, 1):
        return (slice(None),) * len(shape)
    target = tuple(recon_matrix)[-len(shape):]
    return tuple(
        slice(n // 2 - m // 2, n // 2 - m // 2 + m) if 0 < m < n else slice(None) for n, m in zip(shape, target)
    )


def _input_sha256(ksp: KSpace) -> str:
    """The source file's checksum when the reader recorded it, else the checksum of the k-space samples."""
    if ksp.header.source_sha256:
        return ksp.header.source_sha256
    return hashlib.sha256(np.ascontiguousarray(to_numpy(ksp.data)).tobytes()).hexdigest()


def _recordable(value: Any) -> Any:
    """Parameter value as provenance keeps it: scalars as they are, arrays as a short description."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    shape = getattr(value, "shape", None)
    return f"<array {tuple(shape)} {value.dtype}>" if shape is not None else repr(value)


def _task(ksp: KSpace, index: tuple[int, ...]) -> KSpace:
    """One batch entry as a ``("coil", *spatial)`` KSpace (calibration follows, see ``KSpace.select``)."""
    return ksp.select(**dict(zip(ksp.batch_dims, (int(i) for i in index))))


def _synchronize(xp) -> None:
    """Wait for queued GPU work so that timings cover it (NumPy has nothing queued)."""
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        cuda.get_current_stream().synchronize()


def recon(ksp: KSpace, method: str = "sense", *, device: str = "auto", **params: Any) -> Image:
    """Reconstruct ``ksp`` with a registered ``method`` (see ``list_methods()``) on ``device``.

    ``device``: "auto" (GPU when there is one), "cpu", "cuda" or "cuda:N". ``params`` are the method's
    parameters; those not given take the method's defaults and all are recorded in the provenance.
    Raises ``InputError`` for an unknown method or parameter, a wrongly typed value, non-finite
    k-space or an unavailable device.
    """
    t_start = time.perf_counter()
    info = get_method(method)
    used = info.bind(params)
    ksp.check_finite()
    try:
        target = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError(None, str(exc)) from None
    home = ksp.device
    sha = _input_sha256(ksp)

    t0 = time.perf_counter()
    work = ksp.to(target)
    xp = get_array_module(work.data)
    t_in = time.perf_counter() - t0

    spatial = work.spatial_shape
    crop = crop_box(spatial, ksp.header.recon_matrix)
    out_spatial = tuple(len(range(*c.indices(n))) for c, n in zip(crop, spatial))
    batch_shape = work.data.shape[: len(work.batch_dims)]
    out = xp.empty(batch_shape + out_spatial, dtype=xp.complex64)
    t0 = time.perf_counter()
    for index in np.ndindex(*batch_shape):
        out[index] = info.fn(_task(work, index), **used)[crop]
    _synchronize(xp)
    t_method = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = to_device(out, home)
    t_out = time.perf_counter() - t0

    image_dims = work.batch_dims + (("z",) if len(spatial) == 3 else ()) + ("y", "x")
    provenance = Provenance(
        method=method,
        parameters={k: _recordable(v) for k, v in used.items()},
        software_version=__version__,
        input_sha256=sha,
        device=target,
        timings_s={
            "transfer_in": t_in,
            "method": t_method,
            "transfer_out": t_out,
            "total": time.perf_counter() - t_start,
        },
    )
    return Image(data, image_dims, geometry=ksp.header.geometry, provenance=provenance, header=ksp.header)
