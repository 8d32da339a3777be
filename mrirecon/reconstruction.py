"""``recon(ksp, method, **params) -> Image``: the one call that turns k-space into an image.

It validates the method and its parameters, checks the k-space, moves the data to the device once,
runs the method on every batch entry (slice, echo, ...), crops to the header's recon matrix and
attaches geometry and provenance. The result comes back on the device the input came from.

Before the method, each task can be pre-whitened (``mrirecon.noise``) and coil-compressed
(``mrirecon.compression``); both are coil-space matrices, applied to the task's data, calibration and
noise samples and to a ``maps`` parameter given by the caller, so user maps stay consistent.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from . import __version__
from .coils import apply_coil_matrix, transform_coils
from .compression import fit_compression
from .data import Image, KSpace, Provenance
from .errors import InputError
from .kernels.backend import device_of, get_array_module, resolve_device, to_device, to_numpy
from .kernels.threads import parallel_map
from .methods import MethodInfo, get_method
from .noise import whitener

PREPROCESSING = ("whiten", "coil_compression")  # recon() options that are not method parameters


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
    """One batch entry as a ``("coil", *spatial)`` KSpace (calibration follows, see ``KSpace.select``);
    ``ksp`` itself when it has no batch dims (nothing to select)."""
    if not index:
        return ksp
    return ksp.select(**dict(zip(ksp.batch_dims, (int(i) for i in index))))


def _per_entry_maps(maps: Any, ksp: KSpace) -> bool:
    """True when a ``maps`` parameter holds one set of coil maps per batch entry (*batch, coil, *spatial);
    ``InputError`` when it has batch dims that do not match the k-space's."""
    n_batch = len(ksp.batch_dims)
    if maps is None or not n_batch or getattr(maps, "ndim", 0) != ksp.data.ndim:
        return False
    if tuple(maps.shape[:n_batch]) != tuple(ksp.data.shape[:n_batch]):
        raise InputError(
            None, f"coil maps have shape {tuple(maps.shape)}: their batch dims do not match the k-space's "
            f"{dict(zip(ksp.batch_dims, ksp.data.shape))}"
        )
    return True


def _on_device(ksp: KSpace, device: str) -> KSpace:
    """``ksp`` on ``device``: itself when every array is there already (``KSpace.to`` would copy no
    array, only rebuild and re-validate the dataclass), else ``ksp.to(device)``."""
    arrays = (ksp.data, ksp.mask, ksp.trajectory, ksp.noise, ksp.calibration)
    if all(a is None or device_of(a) == device for a in arrays):
        return ksp
    return ksp.to(device)


def _solve_as_batch(batched: bool | None, info: MethodInfo, xp, n_entries: int) -> bool:
    """Whether ``recon`` runs the method's batched form on all entries at once (see its ``batched``)."""
    if info.batch_fn is None or n_entries < 2 or batched is False:
        return False
    return batched is True or xp is not np


def _synchronize(xp) -> None:
    """Wait for queued GPU work so that timings cover it (NumPy has nothing queued)."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def _check_preprocessing(whiten: Any, coil_compression: Any) -> None:
    """``InputError`` unless whiten is True/False/"auto" and coil_compression None or a positive int."""
    if not (whiten is True or whiten is False or whiten == "auto"):
        raise InputError(None, f"whiten must be True, False or 'auto', got {whiten!r}")
    if coil_compression is not None and (
        isinstance(coil_compression, bool) or not isinstance(coil_compression, int) or coil_compression < 1
    ):
        raise InputError(None, f"coil_compression must be a positive number of virtual coils, got {coil_compression!r}")


def bind_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``method``'s parameters with defaults filled in, plus the preprocessing options (``whiten``,
    ``coil_compression``) among ``params``, all checked: what a pipeline validates before any task runs.
    """
    pre = {k: params[k] for k in PREPROCESSING if k in params}
    used = get_method(method).bind({k: v for k, v in params.items() if k not in PREPROCESSING})
    _check_preprocessing(pre.get("whiten", "auto"), pre.get("coil_compression"))
    return {**used, **pre}


def _preprocessing(ksp: KSpace, whiten: bool | str, coil_compression: int | None) -> dict[str, Any]:
    """The checked preprocessing recipe as provenance records it: ``whiten`` when noise samples exist
    or whitening was asked for (resolved to a bool), ``coil_compression`` when set.
    """
    _check_preprocessing(whiten, coil_compression)
    if coil_compression is not None and coil_compression > ksp.n_coils:
        raise InputError(
            ksp.header.source or None, f"cannot compress {ksp.n_coils} coils to {coil_compression} virtual coils"
        )
    if whiten is True and ksp.noise is None:
        raise InputError(ksp.header.source or None, "whitening asked for but the k-space has no noise samples")
    recipe: dict[str, Any] = {}
    if ksp.noise is not None or whiten is True:
        recipe["whiten"] = whiten is True or (whiten == "auto" and ksp.noise is not None)
    if coil_compression is not None:
        recipe["coil_compression"] = coil_compression
    return recipe


def _preprocess(
    task: KSpace, whitening: Any, n_virtual: int | None, params: dict[str, Any]
) -> tuple[KSpace, dict[str, Any]]:
    """One task whitened (``whitening``: W or None) and compressed to ``n_virtual`` coils; a ``maps``
    parameter the caller gave goes through the same coil matrices.
    """
    if whitening is None and n_virtual is None:
        return task, params
    maps = params.get("maps")
    if maps is not None:
        maps = get_array_module(maps).asarray(maps)
        if maps.ndim != task.data.ndim or maps.shape[0] != task.n_coils:
            raise InputError(None, f"coil maps have shape {tuple(maps.shape)}, k-space has {tuple(task.data.shape)}")
    if whitening is not None:
        task = transform_coils(task, whitening)
        maps = None if maps is None else apply_coil_matrix(maps, whitening)
    if n_virtual is not None:
        matrix, _ = fit_compression(task, n_virtual)
        task = transform_coils(task, matrix)
        maps = None if maps is None else apply_coil_matrix(maps, matrix)
    return task, ({**params, "maps": maps} if "maps" in params else params)


def recon(
    ksp: KSpace,
    method: str = "sense",
    *,
    device: str = "auto",
    whiten: bool | str = "auto",
    coil_compression: int | None = None,
    batched: bool | None = None,
    **params: Any,
) -> Image:
    """Reconstruct ``ksp`` with a registered ``method`` (see ``list_methods()``) on ``device``.

    ``device``: "auto" (GPU when there is one), "cpu", "cuda" or "cuda:N". ``params`` are the method's
    parameters; those not given take the method's defaults and all are recorded in the provenance.
    ``whiten``: pre-whiten with the covariance of ``ksp.noise`` ("auto": when there are noise samples).
    ``coil_compression``: SVD-compress each task to this many virtual coils (after whitening).
    ``batched``: solve all batch entries at once when the method has a batched form (``register_batch``,
    e.g. ``sense``): None does so on a GPU (one large solve instead of many launch-bound small ones; on
    the CPU the entries run side by side instead), True also on the CPU, False never. Each preprocessed
    entry is the same either way, and so is the image.
    Raises ``InputError`` for an unknown method or parameter, a wrongly typed value, non-finite
    k-space, impossible preprocessing or an unavailable device.
    """
    t_start = time.perf_counter()
    info = get_method(method)
    used = info.bind(params)
    ksp.check_finite()
    recipe = _preprocessing(ksp, whiten, coil_compression)
    try:
        target = resolve_device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError(None, str(exc)) from None
    home = ksp.device
    sha = _input_sha256(ksp)

    t0 = time.perf_counter()
    work = _on_device(ksp, target)
    xp = get_array_module(work.data)
    t_in = time.perf_counter() - t0

    spatial = work.image_shape
    crop = crop_box(spatial, ksp.header.recon_matrix)
    out_spatial = tuple(len(range(*c.indices(n))) for c, n in zip(crop, spatial))
    batch_shape = work.data.shape[: len(work.batch_dims)]
    out = xp.empty(batch_shape + out_spatial, dtype=xp.complex64)
    t0 = time.perf_counter()
    w = whitener(work) if recipe.get("whiten") else None
    per_entry = _per_entry_maps(used.get("maps"), work)

    def prepare(index: tuple[int, ...]) -> tuple[KSpace, dict[str, Any]]:
        params_here = {**used, "maps": used["maps"][index]} if per_entry else used
        return _preprocess(_task(work, index), w, coil_compression, params_here)

    def run(index: tuple[int, ...]) -> None:
        task, task_params = prepare(index)
        out[index] = info(task, **task_params)[crop]

    entries = list(np.ndindex(*batch_shape))
    if _solve_as_batch(batched, info, xp, len(entries)):
        tasks, task_params = zip(*(prepare(index) for index in entries))
        out[...] = info.solve_batch(tasks, task_params)[(slice(None),) + crop].reshape(out.shape)
    elif xp is np:  # independent entries side by side, each on its share of the cores (kernels.threads)
        parallel_map(run, entries)
    else:
        for index in entries:
            run(index)
    _synchronize(xp)
    t_method = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = to_device(out, home)
    t_out = time.perf_counter() - t0

    image_dims = work.batch_dims + (("z",) if len(spatial) == 3 else ()) + ("y", "x")
    provenance = Provenance(
        method=method,
        parameters={k: _recordable(v) for k, v in {**used, **recipe}.items()},
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
