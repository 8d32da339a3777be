"""MRD v1 HDF5 writer: an XML header and one acquisition per acquired k-space line.

Used by ``mrirecon phantom`` and for round-trip tests; the files open with the ``ismrmrd`` package.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..data import Geometry, KSpace, KSpaceHeader
from ..errors import OutputError
from ..kernels.backend import to_numpy
from .mrd import ACQ_DTYPE, ACQ_HEADER_DTYPE, flag_value
from .mrd_xml import build_mrd_xml

_WRITER_COUNTERS = {"slice": "slice", "echo": "contrast", "repetition": "repetition", "time": "repetition",
                    "set": "set", "phase": "phase"}


def _channel_mask(n_coils: int) -> np.ndarray:
    """MRD channel_mask words (16 x uint64): bit c set for each active channel c."""
    words = np.zeros(16, dtype=np.uint64)
    for c in range(n_coils):
        words[c // 64] |= np.uint64(1 << (c % 64))
    return words


def _acquisitions(lines: np.ndarray, counters: dict[str, np.ndarray], flags: np.ndarray, geometry: Geometry,
                  slice_index: np.ndarray, sample_time_us: float, traj: np.ndarray | None = None) -> np.ndarray:
    """Rows of the MRD table for ``lines`` (n, coil, samples); counters/flags are per row.

    ``traj`` (n, samples, dims) float32, coordinates in MRD order (kx, ky[, kz]), fills each row's ``traj``.
    """
    n, n_coils, n_samples = lines.shape
    heads = np.zeros(n, dtype=ACQ_HEADER_DTYPE)
    heads["version"] = 1
    heads["flags"] = flags
    heads["number_of_samples"] = n_samples
    heads["available_channels"] = n_coils
    heads["active_channels"] = n_coils
    heads["channel_mask"] = _channel_mask(n_coils)
    heads["center_sample"] = n_samples // 2
    heads["trajectory_dimensions"] = 0 if traj is None else traj.shape[-1]
    heads["sample_time_us"] = sample_time_us
    positions = geometry.position
    heads["position"] = positions[np.minimum(slice_index, positions.shape[0] - 1)]
    heads["read_dir"] = geometry.read_dir
    heads["phase_dir"] = geometry.phase_dir
    heads["slice_dir"] = geometry.slice_dir
    for name, values in counters.items():
        heads["idx"][name] = values
    rows = np.empty(n, dtype=ACQ_DTYPE)
    rows["head"] = heads
    samples = np.ascontiguousarray(lines, dtype=np.complex64).view(np.float32).reshape(n, -1)
    empty = np.zeros(0, dtype=np.float32)
    flat_traj = None if traj is None else np.ascontiguousarray(traj, dtype=np.float32).reshape(n, -1)
    data_col, traj_col = rows["data"], rows["traj"]
    for i in range(n):
        data_col[i] = samples[i]
        traj_col[i] = empty if flat_traj is None else flat_traj[i]
    return rows


def _noise_tables(ksp: KSpace, geometry: Geometry, dwell: float, chunk: int) -> list[np.ndarray]:
    """Noise-scan acquisitions holding ``ksp.noise`` (coil, n) in pieces of ``chunk`` samples."""
    if ksp.noise is None:
        return []
    noise = to_numpy(ksp.noise).astype(np.complex64)
    return [_acquisitions(noise[None, :, i: i + chunk], {}, np.array([flag_value("noise")]), geometry, np.zeros(1, int), dwell)
            for i in range(0, noise.shape[1], chunk)]


def _batch_indices(bshape: tuple[int, ...]) -> np.ndarray:
    """(len(bshape), prod(bshape)) index of every batch entry along each batch dim, C order."""
    n_b = int(np.prod(bshape, dtype=np.int64))
    return np.array(np.unravel_index(np.arange(n_b), bshape)).reshape(len(bshape), n_b) if bshape else np.zeros((0, 1), int)


def _slice_flags(batch: np.ndarray) -> np.ndarray:
    """First/last-in-slice flags where the batch entry of consecutive rows changes; last-in-measurement at the end."""
    flags = np.zeros(batch.size, dtype=np.uint64)
    flags[np.r_[True, batch[1:] != batch[:-1]]] |= flag_value("first_in_slice")
    flags[np.r_[batch[1:] != batch[:-1], True]] |= flag_value("last_in_slice")
    flags[-1] |= flag_value("last_in_measurement")
    return flags


def _write_non_cartesian(path: Path, ksp: KSpace, group: str) -> None:
    """Non-Cartesian ``ksp`` (*batch, coil, *sample_dims): one acquisition per readout (the last sample
    dim) with its ``traj`` in cycles/FOV ordered (kx, ky[, kz]); the encoded space is the recon matrix,
    so the reader's unit conversion is the identity. kspace_encode_step_1 numbers the readouts."""
    data = to_numpy(ksp.data).astype(np.complex64, copy=False)
    bdims = ksp.batch_dims
    traj = np.asarray(to_numpy(ksp.trajectory))
    sample_shape = data.shape[len(bdims) + 1:]
    if traj.shape[:-1] != sample_shape:
        raise OutputError(path, f"trajectory {traj.shape} does not match the samples {sample_shape}")
    if len(ksp.image_shape) != traj.shape[-1] or min(ksp.image_shape) < 2:
        raise OutputError(path, f"recon matrix {ksp.header.recon_matrix} does not size a {traj.shape[-1]}D image")
    n_read = sample_shape[-1]
    n_lines = int(np.prod(sample_shape[:-1], dtype=np.int64))
    if n_lines > 65535:
        raise OutputError(path, f"{n_lines} readouts exceed the MRD encoding counter (65535)")
    bshape = data.shape[: len(bdims)]
    n_b = int(np.prod(bshape, dtype=np.int64))
    lines = np.moveaxis(data.reshape(n_b, ksp.n_coils, n_lines, n_read), 1, 2).reshape(-1, ksp.n_coils, n_read)
    mrd_traj = np.broadcast_to(traj.reshape(1, n_lines, n_read, -1)[..., ::-1], (n_b, n_lines, n_read, traj.shape[-1]))
    batch_idx = _batch_indices(bshape)
    b = np.repeat(np.arange(n_b), n_lines)
    counters = {"kspace_encode_step_1": np.tile(np.arange(n_lines), n_b)}
    for axis, d in enumerate(bdims):
        counters[_WRITER_COUNTERS[d]] = batch_idx[axis][b]
    slice_of_batch = batch_idx[bdims.index("slice")] if "slice" in bdims else np.zeros(n_b, dtype=np.int64)
    g = ksp.header.geometry
    dwell = float(ksp.header.extra.get("sample_time_us", 0.0) or 0.0)
    tables = _noise_tables(ksp, g, dwell, n_read)
    tables.append(_acquisitions(lines, counters, _slice_flags(b), g, slice_of_batch[b], dwell,
                                mrd_traj.reshape(-1, n_read, traj.shape[-1])))
    limits = {"kspace_encoding_step_1": (0, n_lines - 1, 0), "kspace_encoding_step_2": (0, 0, 0)}
    matrix = (1,) * (3 - len(ksp.image_shape)) + ksp.image_shape
    sequence = ksp.header.sequence
    if sequence.trajectory == "cartesian":
        sequence = dataclasses.replace(sequence, trajectory="other")
    header = dataclasses.replace(ksp.header, encoded_matrix=matrix, recon_matrix=matrix, sequence=sequence)
    _write_h5(path, group, _xml(header, ksp.n_coils, limits, bdims, bshape, ""), np.concatenate(tables))


def _xml(header: KSpaceHeader, n_coils: int, limits: dict[str, tuple[int, int, int]], bdims: tuple[str, ...],
         bshape: tuple[int, ...], calibration_mode: str) -> str:
    """The MRD XML header, with encoding limits for the batch counters and zeros for unused ones."""
    for axis, d in enumerate(bdims):
        limits[_WRITER_COUNTERS[d]] = (0, bshape[axis] - 1, 0)
    for name in ("average", "slice", "contrast", "phase", "repetition", "set", "segment"):
        limits.setdefault(name, (0, 0, 0))
    return build_mrd_xml(header, n_coils=n_coils, limits=limits, calibration_mode=calibration_mode)


def write_ismrmrd(path: str | os.PathLike, ksp: KSpace, *, group: str = "dataset") -> None:
    """Write ``ksp`` as an MRD v1 file: XML header, one acquisition per acquired line (Cartesian) or
    per readout with its ``traj`` (non-Cartesian, see ``_write_non_cartesian``).

    Batch dims map to MRD counters (``echo`` -> contrast, ``time``/``repetition`` -> repetition,
    ``slice``, ``set``, ``phase``); lines are those the mask marks as acquired. ``noise`` becomes
    noise-scan acquisitions, ``calibration`` (coil, [kz,] ky, kx), or with the data's batch dims,
    becomes parallel-calibration lines centred in k-space. A mask that varies along kx is written as
    whole lines with zeros where not sampled (the reader recovers it from those exact zeros).
    Written to a temporary file and moved into place, so a failed write never leaves a
    half-written file under ``path``.
    """
    path = Path(path)
    data = to_numpy(ksp.data).astype(np.complex64, copy=False)
    bdims = ksp.batch_dims
    bad = [d for d in bdims if d not in _WRITER_COUNTERS]
    if bad or ("time" in bdims and "repetition" in bdims):
        raise OutputError(path, f"MRD counters cannot hold batch dims {bdims}")
    if ksp.trajectory is not None:
        _write_non_cartesian(path, ksp, group)
        return
    n_sp = len(ksp.spatial_dims)
    spatial = ksp.spatial_shape
    nz, ny, nx = (1,) * (3 - n_sp) + spatial
    bshape = data.shape[: len(bdims)]
    n_b = int(np.prod(bshape, dtype=np.int64))
    grid = data.reshape(n_b, ksp.n_coils, nz * ny, nx)
    full_mask = np.broadcast_to(to_numpy(ksp.sampling_mask()), spatial).reshape(nz * ny, nx)
    lines_acq = np.flatnonzero(full_mask.any(axis=1))
    if lines_acq.size == 0:
        raise OutputError(path, "the sampling mask marks no line as acquired")
    batch_idx = _batch_indices(bshape)
    slice_of_batch = batch_idx[bdims.index("slice")] if "slice" in bdims else np.zeros(n_b, dtype=np.int64)

    def counters(batch: np.ndarray, line: np.ndarray) -> dict[str, np.ndarray]:
        out = {"kspace_encode_step_1": line % ny, "kspace_encode_step_2": line // ny}
        for axis, d in enumerate(bdims):
            out[_WRITER_COUNTERS[d]] = batch_idx[axis][batch]
        return out

    g = ksp.header.geometry
    dwell = float(ksp.header.extra.get("sample_time_us", 0.0) or 0.0)
    tables = _noise_tables(ksp, g, dwell, nx)

    calib_mode = ""
    if ksp.calibration is not None:
        calib_mode = "separate"
        cal = to_numpy(ksp.calibration).astype(np.complex64)
        if cal.ndim == 1 + n_sp:
            cal = np.broadcast_to(cal, (*bshape, *cal.shape))
        if cal.shape[: len(bdims)] != bshape or cal.shape[len(bdims)] != ksp.n_coils or cal.ndim != data.ndim:
            raise OutputError(path, f"calibration shape {cal.shape} does not fit k-space {data.shape}")
        cz, cy = ((1,) * (3 - n_sp) + cal.shape[-n_sp:])[:2]
        z0, y0 = nz // 2 - cz // 2, ny // 2 - cy // 2
        cal_lines = ((np.arange(cz)[:, None] + z0) * ny + (np.arange(cy)[None, :] + y0)).ravel()
        cal_grid = cal.reshape(n_b, ksp.n_coils, cz * cy, cal.shape[-1])
        b = np.repeat(np.arange(n_b), cal_lines.size)
        line = np.tile(cal_lines, n_b)
        lines = cal_grid.transpose(0, 2, 1, 3).reshape(-1, ksp.n_coils, cal.shape[-1])
        tables.append(_acquisitions(lines, counters(b, line), np.full(b.size, flag_value("calibration")), g,
                                    slice_of_batch[b], dwell))

    b = np.repeat(np.arange(n_b), lines_acq.size)
    line = np.tile(lines_acq, n_b)
    flags = _slice_flags(b)
    if ksp.calibration is None and ksp.header.calibration_shape is not None:
        calib_mode = "embedded"
        cshape = (1,) * (3 - len(ksp.header.calibration_shape)) + tuple(ksp.header.calibration_shape)
        cz, cy = cshape[0], cshape[1]
        z, y = line // ny, line % ny
        inside = (abs(z - nz // 2) <= cz // 2) & (y >= ny // 2 - cy // 2) & (y < ny // 2 - cy // 2 + cy)
        flags[inside] |= flag_value("calibration_and_imaging")
    lines = grid[:, :, lines_acq, :].transpose(0, 2, 1, 3).reshape(-1, ksp.n_coils, nx)
    tables.append(_acquisitions(lines, counters(b, line), flags, g, slice_of_batch[b], dwell))

    limits = {
        "kspace_encoding_step_1": (int((lines_acq % ny).min()), int((lines_acq % ny).max()), ny // 2),
        "kspace_encoding_step_2": (int((lines_acq // ny).min()), int((lines_acq // ny).max()), nz // 2),
    }
    recon = ksp.header.recon_matrix
    if min(recon[1:]) <= 1:  # header without a recon matrix: reconstruct the encoded one
        recon = (nz, ny, nx)
    header = dataclasses.replace(ksp.header, encoded_matrix=(nz, ny, nx), recon_matrix=recon)
    _write_h5(path, group, _xml(header, ksp.n_coils, limits, bdims, bshape, calib_mode), np.concatenate(tables))


def _write_h5(path: Path, group: str, xml: str, table: np.ndarray) -> None:
    """Write the MRD group atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path, "MRD file") as tmp, h5py.File(tmp, "w") as h5:
        grp = h5.create_group(group)
        grp.create_dataset("xml", data=np.array([xml.encode()], dtype=object), dtype=h5py.vlen_dtype(bytes))
        grp.create_dataset("data", data=table, maxshape=(None,), chunks=True)
