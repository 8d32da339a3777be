"""ISMRMRD / MRD v1 HDF5 reader: bulk header table, vectorised sorting by encoding counters.

An MRD file holds a group (usually ``/dataset``) with an XML header (``xml``) and a table of
acquisitions (``data``): each row is a fixed-size header (``head``) plus variable-length
``traj`` and ``data`` (interleaved float32 real/imag, laid out (channels, samples)).

The reader reads the whole ``head`` column in one HDF5 call, classifies rows by their flag bits
(noise, calibration, reverse, navigator, ...) and places imaging lines by their encoding counters
with array operations; sample data are read only for the rows (slices) asked for.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..data import Geometry, KSpace, KSpaceHeader
from ..errors import InputError
from ..kernels.fft import fftc, ifftc
from .base import Layout, RawFile
from .mrd_xml import MrdXml, parse_mrd_xml

# MRD v1 acquisition header (ISMRMRD_AcquisitionHeader in ismrmrd.h), field for field.
ENCODING_COUNTERS_DTYPE = np.dtype([
    ("kspace_encode_step_1", "<u2"), ("kspace_encode_step_2", "<u2"), ("average", "<u2"),
    ("slice", "<u2"), ("contrast", "<u2"), ("phase", "<u2"), ("repetition", "<u2"), ("set", "<u2"),
    ("segment", "<u2"), ("user", "<u2", (8,)),
])
ACQ_HEADER_DTYPE = np.dtype([
    ("version", "<u2"), ("flags", "<u8"), ("measurement_uid", "<u4"), ("scan_counter", "<u4"),
    ("acquisition_time_stamp", "<u4"), ("physiology_time_stamp", "<u4", (3,)),
    ("number_of_samples", "<u2"), ("available_channels", "<u2"), ("active_channels", "<u2"),
    ("channel_mask", "<u8", (16,)), ("discard_pre", "<u2"), ("discard_post", "<u2"),
    ("center_sample", "<u2"), ("encoding_space_ref", "<u2"), ("trajectory_dimensions", "<u2"),
    ("sample_time_us", "<f4"), ("position", "<f4", (3,)), ("read_dir", "<f4", (3,)),
    ("phase_dir", "<f4", (3,)), ("slice_dir", "<f4", (3,)), ("patient_table_position", "<f4", (3,)),
    ("idx", ENCODING_COUNTERS_DTYPE), ("user_int", "<i4", (8,)), ("user_float", "<f4", (8,)),
])
ACQ_DTYPE = np.dtype([
    ("head", ACQ_HEADER_DTYPE),
    ("traj", h5py.vlen_dtype(np.dtype("<f4"))),
    ("data", h5py.vlen_dtype(np.dtype("<f4"))),
])

NON_CARTESIAN_DIMS = ("spoke", "readout")  # sample dims of non-Cartesian data: one acquisition per spoke

# Flag bit numbers (1-based: the flag is set when ``flags & (1 << (bit - 1))``).
FLAG_BITS = {
    "first_in_slice": 7,
    "last_in_slice": 8,
    "noise": 19,
    "calibration": 20,
    "calibration_and_imaging": 21,
    "reverse": 22,
    "navigation": 23,
    "phasecorr": 24,
    "last_in_measurement": 25,
    "hpfeedback": 26,
    "dummyscan": 27,
    "rtfeedback": 28,
    "surfacecoilcorrection": 29,
    "phase_stabilization_reference": 30,
    "phase_stabilization": 31,
}
# Acquisitions that are not image k-space: skipped (and counted) unless asked for.
IGNORED_KINDS = ("navigation", "phasecorr", "hpfeedback", "dummyscan", "rtfeedback",
                 "surfacecoilcorrection", "phase_stabilization_reference", "phase_stabilization")
# MRD counter -> KSpace batch dim, in canonical order; a dim appears when it has > 1 value.
COUNTER_DIMS = (("slice", "slice"), ("contrast", "echo"), ("repetition", "repetition"),
                ("set", "set"), ("phase", "phase"))


def flag_value(*kinds: str) -> np.uint64:
    """The bit mask of one or more named flags."""
    value = 0
    for kind in kinds:
        value |= 1 << (FLAG_BITS[kind] - 1)
    return np.uint64(value)


def _has_flag(flags: np.ndarray, *kinds: str) -> np.ndarray:
    return (flags & flag_value(*kinds)) != 0


@contextmanager
def h5_errors(path: Path, what: str) -> Iterator[None]:
    """Turn h5py/HDF5 failures (truncated, corrupt, wrong types) into ``InputError`` naming the file."""
    try:
        yield
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(path, f"cannot read {what} ({type(exc).__name__}: {exc})") from None


@dataclass
class _Plan:
    """Where every acquisition goes, worked out from the header table alone."""

    imaging: np.ndarray  # row numbers, ascending
    calibration: np.ndarray
    noise: np.ndarray
    counts: dict[str, int]
    batch_dims: tuple[str, ...]
    batch_values: dict[str, np.ndarray]  # MRD counter -> sorted distinct values (imaging rows)
    n_coils: int
    n_samples: int  # samples kept per line (after discard_pre/post)
    discard_pre: int
    n_kz: int
    n_ky: int
    n_kx: int  # encoded readout length the samples are placed into
    kx_offset: int
    kz_shift: int  # added to kspace_encode_step_2 to get the array index
    ky_shift: int
    recon_x: int  # readout length after oversampling removal
    line_mask: np.ndarray  # (n_kz, n_ky): acquired in any batch entry
    calibration_extent: tuple[tuple[int, int], tuple[int, int]] | None  # ((kz0, kz1), (ky0, ky1))
    cartesian: bool
    notes: list[str]

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return ("kz", "ky", "kx") if self.n_kz > 1 else ("ky", "kx")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(len(self.batch_values[c]) for c, d in COUNTER_DIMS if d in self.batch_dims)


def _distinct(values: np.ndarray, path: Path, what: str) -> int:
    found = np.unique(values)
    if found.size > 1:
        raise InputError(path, f"imaging acquisitions differ in {what} ({found[:6].tolist()}); cannot stack them")
    return int(found[0])


def _plan(heads: np.ndarray, xml: MrdXml, path: Path, include_ignored: bool) -> _Plan:
    """Classify rows by flags and derive array sizes and index shifts, all vectorised."""
    flags = heads["flags"].astype(np.uint64)
    idx = heads["idx"]
    notes = list(xml.uninterpreted)
    other_space = heads["encoding_space_ref"] != 0
    noise = _has_flag(flags, "noise")
    calib_only = _has_flag(flags, "calibration") & ~_has_flag(flags, "calibration_and_imaging") & ~noise
    kind_masks = {kind: _has_flag(flags, kind) & ~noise for kind in IGNORED_KINDS}
    ignored = np.zeros(len(heads), dtype=bool)
    for m in kind_masks.values():
        ignored |= m
    if include_ignored:
        ignored[:] = False
    ignored |= other_space & ~noise
    imaging = ~(noise | calib_only | ignored)
    calib_only &= ~ignored

    counts = {"acquisitions": len(heads), "imaging": int(imaging.sum()), "noise": int(noise.sum()),
              "calibration": int(calib_only.sum()),
              "calibration_and_imaging": int((_has_flag(flags, "calibration_and_imaging") & imaging).sum()),
              "reverse": int((_has_flag(flags, "reverse") & imaging).sum()),
              "ignored": int(ignored.sum())}
    for kind, m in kind_masks.items():
        if m.any():
            counts[f"ignored_{kind}"] = int(m.sum())
    if (other_space & ~noise).any():
        counts["ignored_other_encoding_space"] = int((other_space & ~noise).sum())
        notes.append(f"{int((other_space & ~noise).sum())} acquisition(s) in other encoding spaces not read")
    if not imaging.any():
        raise InputError(path, f"no imaging acquisitions among {len(heads)} (counts: {counts})")

    img_rows = np.flatnonzero(imaging)
    used = np.flatnonzero(imaging | calib_only)
    n_coils = _distinct(heads["active_channels"][used], path, "channel count")
    if n_coils < 1:
        raise InputError(path, "acquisitions have zero active channels (zero coils)")
    ns = _distinct(heads["number_of_samples"][used], path, "number of samples")
    pre = _distinct(heads["discard_pre"][used], path, "discard_pre")
    post = _distinct(heads["discard_post"][used], path, "discard_post")
    centre = _distinct(heads["center_sample"][img_rows], path, "center_sample")
    cartesian = xml.sequence.trajectory == "cartesian" and not (heads["trajectory_dimensions"][img_rows] > 0).any()
    if not cartesian and not (heads["trajectory_dimensions"][img_rows] > 0).all():
        raise InputError(path, f"non-Cartesian trajectory {xml.sequence.trajectory!r} without 'traj' in every imaging acquisition")
    kept = ns - pre - post
    if kept < 1:
        raise InputError(path, f"no samples left after discard_pre={pre}, discard_post={post} of {ns}")

    enc_x, enc_y, enc_z = xml.encoded_xyz
    n_kx = max(enc_x, kept)
    if kept > enc_x and cartesian:
        notes.append(f"readout has {kept} samples but encoded matrix x is {enc_x}; using {kept}")
    kx_offset = 0
    if kept < n_kx:  # partial echo: place the echo centre at n_kx // 2
        kx_offset = min(max(n_kx // 2 - (centre - pre), 0), n_kx - kept) if centre else 0
        if not centre:
            notes.append("short readout without center_sample: samples placed at the start")
    recon_x = xml.recon_xyz[0] if 0 < xml.recon_xyz[0] < n_kx else n_kx

    ky_lim = xml.limits.get("kspace_encoding_step_1")
    kz_lim = xml.limits.get("kspace_encoding_step_2")
    n_ky, n_kz = max(enc_y, 1), max(enc_z, 1)
    ky_shift = n_ky // 2 - ky_lim[2] if ky_lim and ky_lim[2] else 0
    kz_shift = n_kz // 2 - kz_lim[2] if kz_lim and kz_lim[2] and n_kz > 1 else 0
    ky = idx["kspace_encode_step_1"][used].astype(np.int64) + ky_shift
    kz = idx["kspace_encode_step_2"][used].astype(np.int64) + kz_shift
    if n_kz == 1:
        kz[:] = 0
    for name, k, n in (("kspace_encode_step_1", ky, n_ky), ("kspace_encode_step_2", kz, n_kz)):
        if k.size and (k.min() < 0 or k.max() >= n):
            problem = f"{name} counters reach {int(k.min())}..{int(k.max())}, outside the encoded matrix of {n}"
            if cartesian:
                raise InputError(path, problem)
            np.clip(k, 0, n - 1, out=k)  # non-Cartesian counters number spokes/interleaves, not grid lines

    batch_values = {c: np.unique(idx[c][img_rows]) for c, _ in COUNTER_DIMS}
    # 2D data always has a slice dim; 3D only when there are several slabs.
    batch_dims = tuple(d for c, d in COUNTER_DIMS
                       if (c == "slice" and n_kz == 1) or len(batch_values[c]) > 1)
    img_in_used = imaging[used]
    line_mask = np.zeros((n_kz, n_ky), dtype=bool)
    line_mask[kz[img_in_used], ky[img_in_used]] = True
    batch_key = np.zeros(img_rows.size, dtype=np.int64)
    for c, d in COUNTER_DIMS:
        if d in batch_dims:
            values = batch_values[c]
            batch_key = batch_key * len(values) + np.searchsorted(values, idx[c][img_rows])
    per_batch = np.unique(np.stack([batch_key, kz[img_in_used] * n_ky + ky[img_in_used]]), axis=1)
    n_batches = np.unique(batch_key).size
    if per_batch.shape[1] != n_batches * int(line_mask.sum()):
        notes.append("sampling pattern differs between slices/contrasts; the mask is their union")

    extent_rows = ~img_in_used if calib_only.any() else _has_flag(flags[used], "calibration_and_imaging")
    extent = None
    if extent_rows.any():
        extent = ((int(kz[extent_rows].min()), int(kz[extent_rows].max()) + 1),
                  (int(ky[extent_rows].min()), int(ky[extent_rows].max()) + 1))
    if "average" in xml.limits or np.unique(idx["average"][img_rows]).size > 1:
        counts["averages"] = int(np.unique(idx["average"][img_rows]).size)
    if np.unique(idx["segment"][img_rows]).size > 1:
        notes.append("segment counter not used (segments are placed by their k-space counters)")
    return _Plan(
        imaging=img_rows, calibration=np.flatnonzero(calib_only), noise=np.flatnonzero(noise),
        counts=counts, batch_dims=batch_dims, batch_values=batch_values, n_coils=n_coils,
        n_samples=kept, discard_pre=pre, n_kz=n_kz, n_ky=n_ky, n_kx=n_kx, kx_offset=kx_offset,
        kz_shift=kz_shift, ky_shift=ky_shift, recon_x=recon_x, line_mask=line_mask,
        calibration_extent=extent, cartesian=cartesian, notes=notes,
    )


class MrdFile(RawFile):
    """An MRD v1 HDF5 file opened for reading; the header table is read once, in bulk, on open."""

    format = "ismrmrd"

    def __init__(self, path: Path, group: str | None = None) -> None:
        super().__init__(path)
        with h5_errors(self.path, "the HDF5 file"):
            self._h5 = h5py.File(self.path, "r")
        try:
            self._open(group)
        except BaseException:
            self._h5.close()
            raise

    def _open(self, group: str | None) -> None:
        name = group or find_mrd_group(self._h5)
        if name is None or name not in self._h5:
            raise InputError(self.path, "no MRD group with 'xml' and 'data' datasets")
        grp = self._h5[name]
        for required in ("xml", "data"):
            if required not in grp or not isinstance(grp[required], h5py.Dataset):
                raise InputError(self.path, f"MRD group '{name}' lacks the '{required}' dataset")
        self._data = grp["data"]
        names = self._data.dtype.names or ()
        if not {"head", "data"} <= set(names):
            raise InputError(self.path, f"'{name}/data' is not an MRD acquisition table (fields {names})")
        with h5_errors(self.path, "the XML header"):
            xml = grp["xml"][()]
        self.xml = parse_mrd_xml(xml, self.path)
        with h5_errors(self.path, "the acquisition header table"):
            # One HDF5 read for all rows: only the fixed-size 'head' member, no sample data.
            self._heads = self._data.fields("head")[:]
        missing = set(ACQ_HEADER_DTYPE.names) - set(self._heads.dtype.names or ())
        if missing:
            raise InputError(self.path, f"acquisition headers lack fields {sorted(missing)}")
        if len(self._heads) == 0:
            raise InputError(self.path, "the acquisition table is empty")
        self._plans: dict[bool, _Plan] = {}
        self._extra_notes = [f"'{k}' in group '{name}' not read" for k in grp if k not in ("xml", "data")]

    def _plan(self, include_ignored: bool = False) -> _Plan:
        if include_ignored not in self._plans:
            self._plans[include_ignored] = _plan(self._heads, self.xml, self.path, include_ignored)
        return self._plans[include_ignored]

    def _layout(self) -> Layout:
        plan = self._plan()
        dims = (*plan.batch_dims, "coil", *plan.spatial_dims)
        spatial = (plan.n_kz, plan.n_ky, plan.recon_x)[-len(plan.spatial_dims):]
        if not plan.cartesian:
            dims = (*plan.batch_dims, "coil", *NON_CARTESIAN_DIMS)
            spatial = (plan.imaging.size // max(int(np.prod(plan.batch_shape, dtype=np.int64)), 1), plan.n_samples)
        mode = "separate" if plan.calibration.size else ("embedded" if plan.calibration_extent else "none")
        return Layout(dims=dims, shape=(*plan.batch_shape, plan.n_coils, *spatial), counts=plan.counts,
                      calibration=mode, uninterpreted=plan.notes + self._extra_notes)

    def _header(self) -> KSpaceHeader:
        plan, xml = self._plan(), self.xml
        heads = self._heads[plan.imaging]
        slices = heads["idx"]["slice"]
        _, first = np.unique(slices, return_index=True)
        ref = heads[0]
        rx, ry, rz = xml.recon_xyz
        fx, fy, fz = xml.recon_fov_xyz
        calib_shape = None
        if plan.calibration_extent is not None:
            (z0, z1), (y0, y1) = plan.calibration_extent
            calib_shape = ((z1 - z0,) if plan.n_kz > 1 else ()) + (y1 - y0, plan.recon_x)
        return KSpaceHeader(
            encoded_matrix=(plan.n_kz, plan.n_ky, plan.recon_x),
            recon_matrix=(max(rz, 1), max(ry, 1), max(rx, 1)),
            kspace_centre=(plan.n_kz // 2, plan.n_ky // 2, plan.recon_x // 2),
            acceleration=(xml.acceleration[1], xml.acceleration[0]),
            calibration_shape=calib_shape,
            geometry=Geometry(
                fov_mm=(fz, fy, fx),
                position=heads["position"][first].astype(np.float64),
                read_dir=ref["read_dir"], phase_dir=ref["phase_dir"], slice_dir=ref["slice_dir"],
            ),
            sequence=xml.sequence,
            patient=xml.patient,
            extra={"mrd_encoded_xyz": list(xml.encoded_xyz), "h1_resonance_hz": xml.h1_resonance_hz,
                   "readout_oversampling_removed": plan.recon_x < plan.n_kx,
                   "sample_time_us": float(ref["sample_time_us"])},
        )

    def _read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Sample data of ``rows`` (ascending) as one HDF5 read; returns a 1-D object array."""
        with h5_errors(self.path, "acquisition data"):
            if rows.size == len(self._heads):
                return self._data.fields("data")[:]
            return self._data.fields("data")[rows]

    def _lines(self, rows: np.ndarray, plan: _Plan) -> np.ndarray:
        """(n, coil, n_samples) complex64 for ``rows`` (non-empty), discards dropped, reverse lines flipped."""
        raw = self._read_rows(rows)
        n_total = int(self._heads["number_of_samples"][rows[0]])
        try:
            lines = np.stack(list(raw)).view(np.complex64).reshape(rows.size, plan.n_coils, n_total)
        except ValueError:
            raise InputError(self.path, "acquisition data lengths do not match their headers (channels x samples)") from None
        lines = lines[:, :, plan.discard_pre: plan.discard_pre + plan.n_samples]
        reverse = _has_flag(self._heads["flags"][rows].astype(np.uint64), "reverse")
        if reverse.any():
            lines[reverse] = lines[reverse, :, ::-1]
        return lines

    def _place(self, rows: np.ndarray, plan: _Plan, batch_shape: tuple[int, ...], batch_index: np.ndarray,
               ) -> np.ndarray:
        """Sum lines into (*batch, coil, kz, ky, kx) by counters; repeated lines (averages) are averaged."""
        idx = self._heads["idx"][rows]
        ky = idx["kspace_encode_step_1"].astype(np.int64) + plan.ky_shift
        kz = idx["kspace_encode_step_2"].astype(np.int64) + plan.kz_shift if plan.n_kz > 1 else np.zeros_like(ky)
        slot = (batch_index * plan.n_kz + kz) * plan.n_ky + ky
        n_slots = int(np.prod(batch_shape, dtype=np.int64)) * plan.n_kz * plan.n_ky
        lines = self._lines(rows, plan)
        out = np.zeros((n_slots, plan.n_coils, plan.n_kx), dtype=np.complex64)
        window = out[:, :, plan.kx_offset: plan.kx_offset + plan.n_samples]
        counts = np.bincount(slot, minlength=n_slots)
        if counts.max(initial=0) > 1:
            np.add.at(window, slot, lines)
            window /= np.maximum(counts, 1)[:, None, None].astype(np.float32)
        else:
            window[slot] = lines
        out = out.reshape(*batch_shape, plan.n_kz, plan.n_ky, plan.n_coils, plan.n_kx)
        nb = len(batch_shape)
        out = np.moveaxis(out, nb + 2, nb)  # coil before kz, ky
        if plan.n_kz == 1:
            out = out[..., 0, :, :]
        if plan.recon_x < plan.n_kx:
            out = _remove_readout_oversampling(out, plan.recon_x)
        return out

    def _batch_index(self, rows: np.ndarray, plan: _Plan, picked: np.ndarray | None,
                     broadcast: bool) -> tuple[np.ndarray, tuple[int, ...], list[int]]:
        """Flat batch index of ``rows``; with ``broadcast``, dims where the rows have one value get size 1."""
        idx = self._heads["idx"][rows]
        flat = np.zeros(rows.size, dtype=np.int64)
        shape, repeat_axes = [], []
        for axis, (c, d) in enumerate((c, d) for c, d in COUNTER_DIMS if d in plan.batch_dims):
            values = plan.batch_values[c]
            if c == "slice" and picked is not None:
                values = values[picked]
            pos = np.searchsorted(values, idx[c])
            valid = (pos < len(values)) & (values[np.minimum(pos, len(values) - 1)] == idx[c])
            if broadcast and np.unique(idx[c]).size == 1 and (len(values) > 1 or not valid.all()):
                pos, n = np.zeros_like(pos), 1
                repeat_axes.append(axis)
            else:
                if not valid.all():
                    raise InputError(self.path, f"calibration lines have {c} counters not found in the imaging data")
                n = len(values)
            shape.append(n)
            flat = flat * n + pos
        return flat, tuple(shape), repeat_axes

    def _calibration(self, plan: _Plan, chosen: np.ndarray, slices: np.ndarray | None,
                     batch_shape: tuple[int, ...]) -> np.ndarray | None:
        """Separate ACS block (*batch, coil, [kz,] ky, kx) for the chosen slices; None when there is none.

        ACS acquired once (e.g. only for the first contrast) is repeated along that batch dim.
        """
        if not plan.calibration.size:
            return None
        cal_slices = self._heads["idx"]["slice"][plan.calibration]
        per_slice = np.unique(cal_slices).size > 1
        rows = plan.calibration[np.isin(cal_slices, chosen)] if per_slice else plan.calibration
        if not rows.size:
            return None
        index, shape, repeat = self._batch_index(rows, plan, slices, broadcast=True)
        calibration = self._place(rows, plan, shape, index)
        for axis in repeat:
            calibration = np.repeat(calibration, batch_shape[axis], axis=axis)
        (z0, z1), (y0, y1) = plan.calibration_extent
        return calibration[..., y0:y1, :] if plan.n_kz == 1 else calibration[..., z0:z1, y0:y1, :]

    def _noise(self, plan: _Plan, header: KSpaceHeader) -> np.ndarray | None:
        """Noise-scan samples (coil, n), or None (noted in the header when their channel count differs)."""
        if not plan.noise.size:
            return None
        if (self._heads[plan.noise]["active_channels"] != plan.n_coils).any():
            header.extra["noise_note"] = "noise scans have a different channel count; not used"
            return None
        raw = self._read_rows(plan.noise)
        try:
            return np.concatenate([r.view(np.complex64).reshape(plan.n_coils, -1) for r in raw], axis=1)
        except ValueError:
            raise InputError(self.path, "noise-scan data lengths do not match their channel count") from None

    def _trajectory(self, rows: np.ndarray, plan: _Plan) -> np.ndarray:
        """(n, n_samples, ndim) float64 sample positions of ``rows`` in cycles per recon FOV, ordered
        (ky, kx) or (kz, ky, kx); discards dropped and reverse lines flipped like their samples.

        MRD stores ``traj`` per acquisition as (samples, trajectory_dimensions) float32, coordinates
        (kx, ky, kz) along the read/phase/slice directions; the standard fixes no unit. Read as
        cycles per encoded FOV (k = n / FOV, the edge at +-matrix/2), rescaled to the recon FOV;
        a trajectory within +-0.5 everywhere is taken as normalised to k_max = 0.5 (Gadgetron's
        convention) and scaled by the recon matrix. Extra dimensions (e.g. density weights) are dropped.
        """
        ndim = 3 if plan.n_kz > 1 else 2
        dims = _distinct(self._heads["trajectory_dimensions"][rows], self.path, "trajectory dimensions")
        if dims < ndim:
            raise InputError(self.path, f"'traj' has {dims} coordinates per sample; {ndim}D data needs {ndim}")
        n_total = int(self._heads["number_of_samples"][rows[0]])
        with h5_errors(self.path, "acquisition trajectories"):
            raw = self._data.fields("traj")[rows]
        try:
            traj = np.stack(list(raw)).reshape(rows.size, n_total, dims)[:, :, :ndim][:, :, ::-1]
        except ValueError:
            raise InputError(self.path, "'traj' lengths do not match their headers (samples x trajectory dimensions)") from None
        traj = traj[:, plan.discard_pre: plan.discard_pre + plan.n_samples].astype(np.float64)
        reverse = _has_flag(self._heads["flags"][rows].astype(np.uint64), "reverse")
        traj[reverse] = traj[reverse, ::-1]
        recon = np.array(self.xml.recon_xyz[:ndim][::-1], dtype=np.float64)
        if np.abs(traj).max(initial=0.0) <= 0.5 and recon.min() > 1:
            return traj * recon
        recon_fov = np.array(self.xml.recon_fov_xyz[:ndim][::-1])
        enc_fov = np.array(self.xml.encoded_fov_xyz[:ndim][::-1])
        known = (recon_fov > 0) & (enc_fov > 0)
        return traj * np.where(known, recon_fov / np.where(known, enc_fov, 1.0), 1.0)

    def _load_non_cartesian(self, rows: np.ndarray, plan: _Plan, slices: np.ndarray | None, header: KSpaceHeader) -> KSpace:
        """Non-Cartesian data (*batch, coil, spoke, readout) with its trajectory (spoke, readout, ndim):
        acquisitions in recorded order per batch entry, which must all share one trajectory."""
        batch_index, batch_shape, _ = self._batch_index(rows, plan, slices, broadcast=False)
        order = np.argsort(batch_index, kind="stable")
        rows, n_b = rows[order], int(np.prod(batch_shape, dtype=np.int64))
        counts = np.bincount(batch_index, minlength=n_b)
        if (counts != counts[0]).any():
            raise InputError(self.path, f"slices/contrasts have different numbers of spokes ({sorted(set(counts.tolist()))})")
        n_spokes = int(counts[0])
        traj = self._trajectory(rows, plan).reshape(n_b, n_spokes, plan.n_samples, -1)
        if not np.array_equal(traj, np.broadcast_to(traj[:1], traj.shape)):
            raise InputError(self.path, "the trajectory differs between slices/contrasts; read them one at a time")
        data = self._lines(rows, plan).reshape(*batch_shape, n_spokes, plan.n_coils, plan.n_samples)
        data = np.moveaxis(data, -2, -3)
        if slices is not None:
            header = dataclasses.replace(header, geometry=header.geometry.select_slices(slices))
        return KSpace(data=np.ascontiguousarray(data), dims=(*plan.batch_dims, "coil", *NON_CARTESIAN_DIMS),
                      header=header, trajectory=traj[0], noise=self._noise(plan, header))

    def _load(self, slices: np.ndarray | None, include_ignored: bool) -> KSpace:
        plan = self._plan(include_ignored)
        header = self._header()
        slice_values = plan.batch_values["slice"]
        chosen = slice_values if slices is None else slice_values[slices]

        rows = plan.imaging[np.isin(self._heads["idx"]["slice"][plan.imaging], chosen)]
        if not plan.cartesian:
            return self._load_non_cartesian(rows, plan, slices, header)
        batch_index, batch_shape, _ = self._batch_index(rows, plan, slices, broadcast=False)
        data = self._place(rows, plan, batch_shape, batch_index)

        calibration = self._calibration(plan, chosen, slices, batch_shape)

        noise = self._noise(plan, header)

        n_sp = len(plan.spatial_dims)
        lines = (plan.line_mask if plan.n_kz > 1 else plan.line_mask[0])[..., None]
        if plan.recon_x < plan.n_kx:  # after oversampling removal each kx sample mixes the whole readout
            mask = np.broadcast_to(lines, data.shape[-n_sp:])
        else:
            kx = np.zeros(plan.recon_x, dtype=bool)
            kx[plan.kx_offset: plan.kx_offset + plan.n_samples] = True
            # Samples that are exactly zero in every coil of an acquired line were not measured
            # (a mask that varies along kx, written as zero-filled lines).
            mask = lines & kx & np.any(data != 0, axis=tuple(range(data.ndim - n_sp)))
        if slices is not None:
            header = dataclasses.replace(header, geometry=header.geometry.select_slices(slices))
        return KSpace(
            data=data, dims=(*plan.batch_dims, "coil", *plan.spatial_dims), header=header,
            mask=None if mask.all() else np.ascontiguousarray(mask), noise=noise, calibration=calibration,
        )

    def close(self) -> None:
        self._h5.close()


def _remove_readout_oversampling(kspace: np.ndarray, n_x: int) -> np.ndarray:
    """Centre-crop the readout FOV: FFT along kx to image space, keep the central ``n_x``, FFT back."""
    n = kspace.shape[-1]
    start = n // 2 - n_x // 2
    image = ifftc(kspace, axes=(-1,))[..., start: start + n_x]
    return fftc(np.ascontiguousarray(image), axes=(-1,)).astype(np.complex64)


def find_mrd_group(h5: h5py.File) -> str | None:
    """Name of the first top-level group holding MRD 'xml' and 'data' (``dataset`` preferred)."""
    names = sorted(h5.keys(), key=lambda k: (k != "dataset", k))
    for name in names:
        item = h5.get(name)
        if isinstance(item, h5py.Group) and "xml" in item and "data" in item:
            return name
    return None
