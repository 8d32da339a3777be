"""Siemens twix (``.dat``) reader through ``twixtools``: VB files and VD/VE/XA multi-RAID files.

A twix file holds one measurement (VB) or several (VD and later: adjustment scans first, the
imaging scan last), each a text protocol and a list of measurement data blocks (MDBs), one per
ADC, with counters (Lin, Par, Sli, Eco, Rep, Set, Phs, Ave, Seg) and flag bits. The reader sorts
MDBs by flag: noise-adjust scans become ``KSpace.noise``, PAT reference lines the ACS block
(``KSpace.calibration``) or, when they double as imaging lines, an embedded calibration region,
EPI phase-correction navigators drive the Nyquist-ghost correction (``mrirecon.epi``), and imaging
lines are placed by their counters, REFLECT lines reversed, readout oversampling removed.

Geometry comes from the protocol's slice array (``sSliceArray.asSlice[i]``: position, normal,
in-plane rotation, FOV, thickness), turned into read/phase/slice directions with the Siemens rule
(``slice_directions``). The convention is in ``docs/geometry.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Geometry, KSpace, KSpaceHeader, PatientInfo, SequenceParams
from ..epi import (
    centre_line_phase,
    correct_ghost,
    ghost_phase,
    regrid_matrix,
    regrid_readout,
    trapezoid_kspace,
)
from ..errors import InputError
from .base import Layout, RawFile
from .mrd import _remove_readout_oversampling
from .pulseq import (
    CartesianPulseq,
    NonCartesianPulseq,
    PulseqSequence,
    cut_continuous_epi,
    is_line_cartesian,
    label_batch,
    read_sequence,
    slice_offsets,
    split_adcs,
    to_cartesian,
    to_noncartesian,
)

_CONFIG_TAG = b"Config\x00"
_MAX_RAID_SCANS = 64
_RAID_ENTRY_OFFSET = 16  # MultiRaidFileHeader: hdSize_, count_ (2 x uint32), then entry[0] (measId_, fileId_, off_ ...)
# Counters that become batch dims, in the canonical order of ``mrirecon.data.BATCH_DIMS``.
BATCH_COUNTERS = (("Sli", "slice"), ("Eco", "echo"), ("Rep", "repetition"), ("Set", "set"), ("Phs", "phase"))
_COUNTERS = ("Lin", "Par", "Ave", "Seg") + tuple(c for c, _ in BATCH_COUNTERS)
# MDH flags of acquisitions that are neither imaging, noise, ACS nor navigator data.
_NOT_IMAGING = ("ACQEND", "RTFEEDBACK", "HPFEEDBACK", "SYNCDATA", "REFPHASESTABSCAN", "PHASESTABSCAN",
                "PHASCOR", "NOISEADJSCAN", "noname60")
_PARTIAL_FOURIER = {1: "4/8", 2: "5/8", 4: "6/8", 8: "7/8", 16: "off"}
NO_SEQUENCE_NOTE = ("Pulseq scan without its .seq file (give --seq FILE.seq): read as Cartesian lines in "
                    "ADC order, which is wrong for non-Cartesian (radial, spiral) or reordered sequences; protocol "
                    "values (TR, TE, matrix) are the interpreter's placeholders")


class PulseqSequenceMissing(UserWarning):
    """A Pulseq twix scan opened without its ``.seq``: its k-space order and trajectory are guessed."""


def _flag_bit(name: str) -> int:
    from twixtools.mdh_def import mask_dict

    return 1 << mask_dict[name]


def is_twix(path: Path) -> bool:
    """True when ``path`` starts like a twix file: a VB protocol header, or a VD multi-RAID header
    whose first measurement starts with one (the header's first buffer is always ``Config``)."""
    with open(path, "rb") as fh:
        head = fh.read(_RAID_ENTRY_OFFSET + 8)
        if len(head) < _RAID_ENTRY_OFFSET + 8:
            return False
        if head[8:8 + len(_CONFIG_TAG)] == _CONFIG_TAG:  # VB: hdr_len, n_buffers, "Config\0"
            return True
        first, count = np.frombuffer(head[:8], dtype="<u4")
        if first != 0 or not 1 <= count <= _MAX_RAID_SCANS:
            return False
        offset = int(np.frombuffer(head[_RAID_ENTRY_OFFSET:_RAID_ENTRY_OFFSET + 8], dtype="<u8")[0])
        fh.seek(offset + 8)
        return fh.read(len(_CONFIG_TAG)) == _CONFIG_TAG


# --- geometry ----------------------------------------------------------------------------------
def _main_orientation(normal: np.ndarray) -> int:
    """0 sagittal, 1 coronal, 2 transverse: the largest normal component; ties go to transverse, then coronal."""
    a = np.abs(normal)
    tol = 1e-6
    if a[2] >= a[0] - tol and a[2] >= a[1] - tol:
        return 2
    return 1 if a[1] >= a[0] - tol else 0


def slice_directions(normal: Any, inplane_rot: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(read, phase, slice) unit vectors in patient LPS from a slice normal and in-plane rotation (rad).

    The Siemens rule: the phase direction before rotation is the in-plane vector perpendicular to
    the normal that lies in the plane of the two main axes of the slice's main orientation
    (transverse: (0, n_tra, -n_cor); coronal: (n_cor, -n_sag, 0); sagittal: (-n_cor, n_sag, 0),
    normalised); read = normal x phase; the rotation turns phase by -rot towards read. The result
    equals the rotation in the MDH slice quaternion (columns phase, read, slice).
    """
    n = np.asarray(normal, dtype=np.float64)
    norm = np.linalg.norm(n)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError(f"slice normal {n.tolist()} has no direction")
    n = n / norm
    sag, cor, tra = n
    orientation = _main_orientation(n)
    if orientation == 2:
        phase = np.array([0.0, tra, -cor]) / np.hypot(cor, tra)
    elif orientation == 1:
        phase = np.array([cor, -sag, 0.0]) / np.hypot(sag, cor)
    else:
        phase = np.array([-cor, sag, 0.0]) / np.hypot(sag, cor)
    read = np.cross(n, phase)
    phase = np.cos(inplane_rot) * phase - np.sin(inplane_rot) * read
    read = np.cross(n, phase)
    return read, phase, n


def quaternion_directions(quaternion: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(read, phase, slice) from an MDH slice quaternion (w, x, y, z): rotation columns are phase, read, slice."""
    w, x, y, z = (float(v) for v in quaternion)
    rot = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    return rot[:, 1], rot[:, 0], rot[:, 2]


def _xyz(entry: dict[str, Any], key: str) -> np.ndarray:
    """A protocol (Sag, Cor, Tra) vector; absent components are 0, as Siemens omits zeros."""
    vec = entry.get(key, {})
    return np.array([float(vec.get(k, 0.0)) for k in ("dSag", "dCor", "dTra")])


def slice_array_geometry(slices: list[dict[str, Any]], order: list[int], *, three_d: bool = False) -> Geometry:
    """``Geometry`` of the protocol slices ``slices`` (``sSliceArray.asSlice``) taken in ``order``.

    Siemens protocol coordinates (Sag, Cor, Tra) are patient coordinates with +x to the patient's
    left, +y posterior, +z head: DICOM LPS, whatever the patient position on the table.
    """
    first = slices[order[0]]
    read, phase, normal = slice_directions(_xyz(first, "sNormal"), float(first.get("dInPlaneRot", 0.0)))
    positions = np.array([_xyz(slices[i], "sPosition") for i in order])
    fov = (float(first.get("dThickness", 1.0)), float(first.get("dPhaseFOV", 1.0)), float(first.get("dReadoutFOV", 1.0)))
    return Geometry(fov_mm=fov, position=positions[:1] if three_d else positions,
                    read_dir=read, phase_dir=phase, slice_dir=normal)


# --- the acquisition table ------------------------------------------------------------------------
@dataclass
class _Table:
    """Per-MDB header fields of one measurement as arrays (one row per acquisition)."""

    mdbs: list
    flags: np.ndarray
    counters: dict[str, np.ndarray]
    samples: np.ndarray
    channels: np.ndarray
    centre_col: np.ndarray
    centre_lin: np.ndarray
    centre_par: np.ndarray
    position: np.ndarray
    quaternion: np.ndarray

    @classmethod
    def of(cls, mdbs: list) -> _Table:
        heads = [m.mdh for m in mdbs]
        return cls(
            mdbs=mdbs,
            flags=np.array([int(h.EvalInfoMask) for h in heads], dtype=np.uint64),
            counters={c: np.array([getattr(h.Counter, c) for h in heads], dtype=np.int64) for c in _COUNTERS},
            samples=np.array([h.SamplesInScan for h in heads], dtype=np.int64),
            channels=np.array([h.UsedChannels for h in heads], dtype=np.int64),
            centre_col=np.array([h.CenterCol for h in heads], dtype=np.int64),
            centre_lin=np.array([h.CenterLin for h in heads], dtype=np.int64),
            centre_par=np.array([h.CenterPar for h in heads], dtype=np.int64),
            position=np.array([[h.SliceData.SlicePos.Sag, h.SliceData.SlicePos.Cor, h.SliceData.SlicePos.Tra]
                               for h in heads], dtype=np.float64).reshape(-1, 3),
            quaternion=np.array([list(h.SliceData.Quaternion) for h in heads], dtype=np.float64).reshape(-1, 4),
        )

    def has(self, *names: str) -> np.ndarray:
        """Bool per row: any of the named MDH flags set."""
        bits = np.uint64(sum(_flag_bit(n) for n in names))
        return (self.flags & bits) != 0


@dataclass
class _Plan:
    """Where each imaging line goes and what the readout needs, decided from headers only."""

    imaging: np.ndarray
    acs: np.ndarray
    navigators: np.ndarray
    batch_dims: tuple[str, ...]
    batch_values: dict[str, np.ndarray]
    n_coils: int
    n_kz: int
    n_ky: int
    n_kx: int  # readout length before oversampling removal
    n_samples: int  # samples per line after regridding (fewer than n_kx with an asymmetric echo)
    recon_x: int
    kx_offset: int
    ky_shift: int
    kz_shift: int
    regrid: np.ndarray | None  # (n_kx, n_samples) ramp-sampling regridding, or None
    acs_extent: tuple[tuple[int, int], tuple[int, int]] | None
    embedded_acs: bool
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return ("kz", "ky", "kx") if self.n_kz > 1 else ("ky", "kx")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(len(self.batch_values[c]) for c, d in BATCH_COUNTERS if d in self.batch_dims)


def _get(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """Nested protocol lookup (``_get(prot, "sKSpace", "lBaseResolution")``) with a default."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _first(value: Any, default: Any = None) -> Any:
    """First entry of a protocol array (``alTR``), or the value itself."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return default if value is None else value


class TwixFile(RawFile):
    """A Siemens twix file; the protocol and MDB headers are parsed on open, samples on ``read``.

    ``ghost_correction`` (default on) applies the navigator-based Nyquist-ghost correction to EPI
    data with phase-correction scans (Pulseq EPI: from the k-space centre lines); off, reflected
    lines are only reversed. ``sequence`` is the Pulseq ``.seq`` file of a Pulseq scan; when not
    given, a ``.seq`` beside the raw file with the same name is used if there is one.
    """

    format = "twix"

    def __init__(self, path: Path, *, ghost_correction: bool = True, sequence: str | Path | None = None) -> None:
        super().__init__(path)
        self.ghost_correction = ghost_correction
        self._check_complete()
        self._scans = self._parse()
        self.protocol_notes: list[str] = []
        image_scans = [s for s in self._scans if self._image_rows(_Table.of(s["mdb"])).size]
        if not image_scans:
            kinds = sum(len(s["mdb"]) for s in self._scans)
            raise InputError(self.path, f"no imaging scan in the file ({len(self._scans)} measurement(s), "
                                        f"{kinds} acquisition(s), all noise/adjustment/navigator data)")
        self._scan = image_scans[-1]
        self._table = _Table.of(self._scan["mdb"])
        self.protocol: dict[str, Any] = self._scan["hdr"]
        self._plan_cache: _Plan | None = None
        if sequence is None and self.is_pulseq and self.path.with_suffix(".seq").is_file():
            sequence = self.path.with_suffix(".seq")
        self.sequence: PulseqSequence | None = None if sequence is None else read_sequence(sequence)
        if self.is_pulseq and self.sequence is None:
            warnings.warn(f"{self.path.name}: {NO_SEQUENCE_NOTE}", PulseqSequenceMissing, stacklevel=2)
        self._pulseq_cache: CartesianPulseq | NonCartesianPulseq | None = None

    # --- opening ----------------------------------------------------------------------------------
    def _check_complete(self) -> None:
        """Refuse files shorter than their own headers say (an interrupted copy)."""
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as fh:
            head = fh.read(_RAID_ENTRY_OFFSET + 8)
        if head[8:8 + len(_CONFIG_TAG)] == _CONFIG_TAG:
            hdr_len = int(np.frombuffer(head[:4], dtype="<u4")[0])
            if hdr_len >= size:
                raise InputError(self.path, f"truncated twix file: the protocol header alone is {hdr_len} bytes, the file {size}")
            return
        from twixtools.hdr_def import MultiRaidFileHeader

        with open(self.path, "rb") as fh:
            raid = np.fromfile(fh, dtype=MultiRaidFileHeader, count=1)
        if raid.size == 0:
            raise InputError(self.path, "truncated twix file: incomplete multi-RAID header")
        entries = raid[0]["entry"][: int(raid[0]["hdr"]["count_"])]
        end = max(int(e["off_"]) + int(e["len_"]) for e in entries)
        if end > size:
            raise InputError(self.path, f"truncated twix file: its measurements need {end} bytes, the file has {size}")

    def _parse(self) -> list[dict[str, Any]]:
        """All measurements, through twixtools (its console messages are swallowed)."""
        import twixtools

        try:
            with contextlib.redirect_stdout(io.StringIO()):
                scans = twixtools.read_twix(str(self.path), verbose=False, keep_acqend=True, parse_pmu=False,
                                            parse_geometry=False)
        except Exception as exc:  # noqa: BLE001 -- twixtools raises bare ValueError/IndexError/... on damaged files
            raise InputError(self.path, f"not a readable twix file ({type(exc).__name__}: {exc})") from None
        for k, scan in enumerate(scans):
            mdbs = scan["mdb"]
            if not mdbs or not mdbs[-1].is_flag_set("ACQEND"):
                raise InputError(self.path, f"truncated twix file: measurement {k + 1} of {len(scans)} has no end-of-acquisition block")
            scan["mdb"] = [m for m in mdbs if not m.is_flag_set("ACQEND") and not m.is_flag_set("SYNCDATA")]
        return scans

    @staticmethod
    def _image_rows(table: _Table) -> np.ndarray:
        acs_only = table.has("PATREFSCAN") & ~table.has("PATREFANDIMASCAN")
        return np.flatnonzero(~table.has(*_NOT_IMAGING) & ~acs_only)

    # --- planning ---------------------------------------------------------------------------------
    @property
    def _meas_yaps(self) -> dict[str, Any]:
        return self.protocol.get("MeasYaps", {})

    @property
    def is_pulseq(self) -> bool:
        """Pulseq interpreter scan: the protocol is a placeholder, the .seq file holds the real sequence."""
        return "pulseq" in str(_get(self.protocol, "Meas", "tSequenceFileName", default="")).lower()

    def _plan(self) -> _Plan:
        if self._plan_cache is None:
            self._plan_cache = self._make_plan()
        return self._plan_cache

    def _make_plan(self) -> _Plan:
        t, yaps, notes = self._table, self._meas_yaps, []
        img = self._image_rows(t)
        acs = np.flatnonzero(t.has("PATREFSCAN") & ~t.has("PATREFANDIMASCAN") & ~t.has(*_NOT_IMAGING))
        nav = np.flatnonzero(t.has("PHASCOR"))
        counts = {"imaging": int(img.size), "noise": 0, "calibration": int(acs.size), "phase_correction": int(nav.size)}
        for name, label in (("RTFEEDBACK", "real-time feedback"), ("PHASESTABSCAN", "phase stabilisation"),
                            ("REFPHASESTABSCAN", "phase stabilisation reference")):
            n = int((t.has(name) & ~t.has("PHASCOR")).sum())
            if n:
                notes.append(f"{n} {label} acquisition(s) not used")
        channels = np.unique(t.channels[img])
        samples = np.unique(t.samples[img])
        if channels.size != 1 or samples.size != 1:
            raise InputError(self.path, f"imaging lines differ in channels {channels.tolist()} or samples {samples.tolist()}")
        n_coils, n_samples = int(channels[0]), int(samples[0])

        # Readout: nominal length from the protocol (base resolution x oversampling), unless the ADC is longer
        # (Pulseq: the protocol is a placeholder).
        os_factor = float(_get(self.protocol, "Dicom", "flReadoutOSFactor", default=1.0) or 1.0)
        base = int(_get(yaps, "sKSpace", "lBaseResolution", default=0) or 0)
        regrid = None
        regrid_mode = _first(_get(self.protocol, "Meas", "alRegridMode"), 1)
        if int(regrid_mode or 1) == 2:  # trapezoidal ramp sampling
            regrid, n_samples = self._regrid_matrix(n_samples), int(_first(_get(self.protocol, "Meas", "alRegridDestSamples")))
            counts["ramp_sampled_samples"] = int(samples[0])
        nominal = round(base * os_factor)
        if 0 < n_samples <= nominal:
            n_kx = nominal
        else:
            n_kx, os_factor = n_samples, 1.0
        recon_x = round(n_kx / os_factor) if os_factor > 1 else n_kx
        centre_col = int(np.median(t.centre_col[img])) if regrid is None else n_samples // 2
        kx_offset = n_kx // 2 - centre_col
        if not 0 <= kx_offset <= n_kx - n_samples:
            kx_offset = (n_kx - n_samples) // 2
            notes.append("readout centre sample outside the readout; samples centred")
        if n_samples < n_kx:
            counts["readout_partial_fourier_samples"] = n_samples

        lin, par = t.counters["Lin"], t.counters["Par"]
        used = np.concatenate([img, acs])
        n_ky = max(int(_get(yaps, "sKSpace", "lPhaseEncodingLines", default=1) or 1), int(lin[used].max()) + 1)
        pulseq = self.is_pulseq  # placeholder centre counters: lines are in ADC order
        ky_shift = 0 if pulseq else self._centre_shift(lin[used], int(np.median(t.centre_lin[img])), n_ky, "line", notes)
        three_d = int(_get(yaps, "sKSpace", "ucDimension", default=2) or 2) == 4 and np.unique(par[img]).size > 1
        if three_d:
            n_kz = max(int(_get(yaps, "sKSpace", "lPartitions", default=1) or 1), int(par[used].max()) + 1)
            kz_shift = 0 if pulseq else self._centre_shift(par[used], int(np.median(t.centre_par[img])), n_kz, "partition", notes)
        else:
            n_kz, kz_shift = 1, 0
            if np.unique(par[img]).size > 1:
                notes.append("partition counter varies in 2D data; lines averaged over it")

        batch_values = {c: np.unique(t.counters[c][img]) for c, _ in BATCH_COUNTERS}
        batch_dims = tuple(d for c, d in BATCH_COUNTERS if (c == "Sli" and not three_d) or len(batch_values[c]) > 1)
        if np.unique(t.counters["Ave"][img]).size > 1:
            counts["averages"] = int(np.unique(t.counters["Ave"][img]).size)
        if np.unique(t.counters["Seg"][img]).size > 1:
            notes.append("segment counter not used (lines are placed by their line counter)")

        acs_extent, embedded = None, False
        extent_rows = acs if acs.size else img[t.has("PATREFANDIMASCAN")[img]]
        if extent_rows.size:
            embedded = not acs.size
            kz = par[extent_rows] + kz_shift if three_d else np.zeros(extent_rows.size, dtype=np.int64)
            ky = lin[extent_rows] + ky_shift
            acs_extent = ((int(kz.min()), int(kz.max()) + 1), (int(ky.min()), int(ky.max()) + 1))
        if nav.size and not self.ghost_correction:
            notes.append(f"{nav.size} EPI phase-correction navigator(s) not used (ghost correction off)")
        if t.has("REFLECT")[img].any():
            counts["reflected_lines"] = int(t.has("REFLECT")[img].sum())
        if self.is_pulseq:
            notes.append(f"WARNING: {NO_SEQUENCE_NOTE}")
        return _Plan(
            imaging=img, acs=acs, navigators=nav, batch_dims=batch_dims, batch_values=batch_values,
            n_coils=n_coils, n_kz=n_kz, n_ky=n_ky, n_kx=n_kx, n_samples=n_samples, recon_x=recon_x, kx_offset=kx_offset,
            ky_shift=ky_shift, kz_shift=kz_shift, regrid=regrid, acs_extent=acs_extent, embedded_acs=embedded,
            counts=counts, notes=notes,
        )

    @staticmethod
    def _centre_shift(counter: np.ndarray, centre: int, n: int, what: str, notes: list[str]) -> int:
        """Shift putting the header's k-space centre at n//2, when every counter then fits the matrix."""
        shift = n // 2 - centre
        if counter.min() + shift < 0 or counter.max() + shift >= n:
            notes.append(f"{what} centre from the headers does not fit the matrix; {what}s placed as counted")
            return 0
        return shift

    def _regrid_matrix(self, n_samples: int) -> np.ndarray:
        """Ramp-sampling regridding from the protocol's trapezoid (``alRegrid*`` in the Meas section)."""
        meas = self.protocol.get("Meas", {})
        ramp_up, flat, ramp_down, delay = (float(_first(meas.get(k), 0.0)) for k in (
            "alRegridRampupTime", "alRegridFlattopTime", "alRegridRampdownTime", "alRegridDelaySamplesTime"))
        adc = float(_first(meas.get("aflRegridADCDuration"), 0.0))
        n_out = int(_first(meas.get("alRegridDestSamples"), 0))
        if min(ramp_up + flat, adc, n_out) <= 0:
            raise InputError(self.path, "ramp-sampled readout without a usable trapezoid description (alRegrid*)")
        return regrid_matrix(trapezoid_kspace(n_samples, ramp_up, flat, ramp_down, delay, adc), n_out)

    # --- header -----------------------------------------------------------------------------------
    def _slice_geometry(self, plan: _Plan) -> Geometry:
        """Protocol slice array, slices matched to the Sli counter by their MDH positions."""
        t = self._table
        slices = _get(self._meas_yaps, "sSliceArray", "asSlice", default=[]) or []
        sli = t.counters["Sli"][plan.imaging]
        firsts = [plan.imaging[np.flatnonzero(sli == s)[0]] for s in plan.batch_values["Sli"]]
        if not slices:
            read, phase, normal = quaternion_directions(t.quaternion[firsts[0]])
            note = "no slice array in the protocol; geometry from the MDH slice data"
            if note not in self.protocol_notes:
                self.protocol_notes.append(note)
            return Geometry(position=t.position[firsts[:1] if plan.n_kz > 1 else firsts],
                            read_dir=read, phase_dir=phase, slice_dir=normal)
        protocol_pos = np.array([_xyz(s, "sPosition") for s in slices])
        order = [int(np.argmin(np.linalg.norm(protocol_pos - t.position[row], axis=1))) for row in firsts]
        return slice_array_geometry(slices, order, three_d=plan.n_kz > 1)

    def _sequence(self) -> SequenceParams:
        yaps, dicom, meas = self._meas_yaps, self.protocol.get("Dicom", {}), self.protocol.get("Meas", {})
        n_te = int(yaps.get("lContrasts", 1) or 1)
        te = tuple(float(v) / 1000 for v in (yaps.get("alTE") or [])[:n_te] if v)
        ti = _first(yaps.get("alTI"))
        epi = int(_get(yaps, "sFastImaging", "lEPIFactor", default=1) or 1) > 1 or bool(self._plan().navigators.size)
        return SequenceParams(
            tr_ms=float(_first(yaps.get("alTR"), 0.0)) / 1000 or None,
            te_ms=te,
            ti_ms=float(ti) / 1000 if ti else None,
            flip_angle_deg=float(_first(yaps.get("adFlipAngleDegree"), 0.0)) or None,
            field_strength_t=float(dicom.get("flMagneticFieldStrength", 0.0) or 0.0) or None,
            sequence_name=str(meas.get("tSequenceFileName", "")).split("\\")[-1],
            trajectory="epi" if epi else "cartesian",
            scanner=" ".join(str(dicom.get(k, "")).strip() for k in ("Manufacturer", "ManufacturersModelName")).strip(),
            software_version=str(dicom.get("SoftwareVersions", "")),
            protocol_name=str(dicom.get("tProtocolName", "")),
        )

    def _patient(self) -> PatientInfo:
        config, dicom = self.protocol.get("Config", {}), self.protocol.get("Dicom", {})
        sex = {1: "F", 2: "M", 3: "O"}.get(int(dicom.get("lPatientSex", 0) or 0), "")
        weight = float(dicom.get("flUsedPatientWeight", 0.0) or 0.0)
        return PatientInfo(
            name=str(dicom.get("tPatientName", "")), id=str(config.get("PatientID", "")),
            birth_date=str(config.get("PatientBirthDay", "")), sex=sex, weight_kg=weight or None,
            institution=str(dicom.get("InstitutionName", "")),
        )

    def _pulseq(self) -> CartesianPulseq | NonCartesianPulseq:
        """The scan on the grid its ``.seq`` k-space gives, or with its trajectory when not line-Cartesian
        (small files: read once, kept)."""
        if self._pulseq_cache is None:
            t = self._table
            rows = self._plan().imaging
            samples = np.concatenate([np.atleast_2d(t.mdbs[r].data) for r in rows], axis=-1).astype(np.complex64)
            seq = self.sequence
            adcs = split_adcs(samples, seq, self.path)
            if not is_line_cartesian(seq):
                cut = cut_continuous_epi(samples, seq)  # one continuous EPI readout: its lines, then as any EPI
                if cut is None:
                    self._pulseq_cache = to_noncartesian(adcs, seq, self.path)
                    return self._pulseq_cache
                adcs, seq = cut
            cart = to_cartesian(adcs, seq, self.path)
            if self.ghost_correction:  # per slice/echo image: each has its own phase-encoding centre lines
                images = np.ascontiguousarray(cart.kspace).reshape(-1, *cart.kspace.shape[-3:])  # a view, edited
                reflected = cart.reflected.reshape(-1, cart.reflected.shape[-1])
                for image, lines, mixed in zip(images, reflected, cart.mixed_polarity.ravel()):
                    if mixed:
                        a, b = centre_line_phase(image, lines)
                        image[:] = np.moveaxis(correct_ghost(np.moveaxis(image, 1, 0), lines, a, b), 0, 1)
                cart.kspace = images.reshape(cart.kspace.shape)
            self._pulseq_cache = cart
        return self._pulseq_cache

    def _pulseq_notes(self, cart: CartesianPulseq | NonCartesianPulseq) -> list[str]:
        notes = [f"k-space positions from the Pulseq sequence {self.sequence.path.name}; twix line counters not used"]
        batch = label_batch(self.sequence)
        notes += [f"{images} as separate images" for images in batch.describe(values=True)]
        if "slice" in batch.dims:
            notes.append("slice positions: protocol slice centre + the sequence's RF-frequency slice offsets (logical "
                         "x, y, z taken as read, phase, slice)" if self._pulseq_slice_offsets() is not None else
                         "slice positions unknown (no slice-selective RF frequency offsets): slices numbered at one "
                         "position")
        if isinstance(cart, NonCartesianPulseq):
            return [*notes, "non-Cartesian: samples kept with their trajectory (use a NUFFT method, e.g. gridding)"]
        repetitions = np.unique(self.sequence.labels.get("REP", [0])).size
        if repetitions > 1:
            notes.append(f"{repetitions} repetitions (REP labels) averaged")
        if not is_line_cartesian(self.sequence):
            notes.append(f"continuous EPI readout cut into {int(cart.line_mask.sum())} lines of constant ky "
                         "(blip and turnaround samples dropped)")
        if cart.regridded:
            notes.append("non-uniform (ramp-sampled) readouts regridded")
        if cart.mixed_polarity.any():
            notes.append("EPI ghost correction from the k-space centre lines (no navigators)" if self.ghost_correction
                         else "EPI ghost correction off")
        return notes

    def _layout(self) -> Layout:
        if self.sequence is not None:
            cart = self._pulseq()
            counts = {"imaging": int(self._plan().imaging.size), "noise": 0, "sequence_adcs": self.sequence.n_adc}
            dims, data = self._pulseq_data(cart)
            return Layout(dims=dims, shape=data.shape, counts=counts, uninterpreted=self._pulseq_notes(cart))
        plan = self._plan()
        noise = self._noise_rows()
        counts = dict(plan.counts, noise=sum(len(r) for r in noise.values()))
        spatial = (plan.n_kz, plan.n_ky, plan.recon_x)[-len(plan.spatial_dims):]
        mode = "separate" if plan.acs.size else ("embedded" if plan.embedded_acs else "none")
        notes = plan.notes + self.protocol_notes
        if len(self._scans) > 1:
            notes = [*notes, (f"{len(self._scans)} measurements in the file; imaging from measurement "
                              f"{self._scans.index(self._scan) + 1}, noise from all")]
        return Layout(dims=(*plan.batch_dims, "coil", *plan.spatial_dims), shape=(*plan.batch_shape, plan.n_coils, *spatial),
                      counts=counts, calibration=mode, uninterpreted=notes)

    def _header(self) -> KSpaceHeader:
        plan, yaps = self._plan(), self._meas_yaps
        geometry = self._slice_geometry(plan)
        calib_shape = None
        if plan.acs_extent is not None:
            (z0, z1), (y0, y1) = plan.acs_extent
            calib_shape = ((z1 - z0,) if plan.n_kz > 1 else ()) + (y1 - y0, plan.recon_x)
        pf = int(_get(yaps, "sKSpace", "ucPhasePartialFourier", default=16) or 16)
        dwell_ns = _first(_get(yaps, "sRXSPEC", "alDwellTime"), 0)
        if self.sequence is not None:
            return self._pulseq_header(geometry)
        return KSpaceHeader(
            encoded_matrix=(plan.n_kz, plan.n_ky, plan.recon_x),
            recon_matrix=(plan.n_kz, plan.n_ky, plan.recon_x),
            kspace_centre=(plan.n_kz // 2, plan.n_ky // 2, plan.recon_x // 2),
            acceleration=(int(_get(yaps, "sPat", "lAccelFact3D", default=1) or 1),
                          int(_get(yaps, "sPat", "lAccelFactPE", default=1) or 1)),
            calibration_shape=calib_shape,
            geometry=geometry,
            sequence=self._sequence(),
            patient=self._patient(),
            extra={
                "twix_version": "VD/VE/XA" if _get(self._scan, "raidfile_hdr") is not None else "VB",
                "measurements": len(self._scans),
                "patient_position": str(_get(self.protocol, "Dicom", "tPatientPosition", default="")),
                "readout_oversampling_removed": plan.recon_x < plan.n_kx,
                "phase_partial_fourier": _PARTIAL_FOURIER.get(pf, str(pf)),
                "sample_time_us": float(dwell_ns or 0) / 1000,
                "h1_resonance_hz": float(_get(self.protocol, "Dicom", "lFrequency", default=0) or 0) or None,
                "epi_ghost_correction": bool(plan.navigators.size) and self.ghost_correction,
                "pulseq": self.is_pulseq,
            },
        )

    @staticmethod
    def _pulseq_data(cart: CartesianPulseq | NonCartesianPulseq) -> tuple[tuple[str, ...], np.ndarray]:
        """Dims and k-space of a Pulseq scan, with a slice axis of 1 when the labels number no slices."""
        spatial = ("spoke", "readout") if isinstance(cart, NonCartesianPulseq) else ("ky", "kx")
        data = cart.kspace if "slice" in cart.batch_dims else cart.kspace[None]
        return ("slice", *(d for d in cart.batch_dims if d != "slice"), "coil", *spatial), data

    def _pulseq_slice_offsets(self) -> np.ndarray | None:
        """(n_slices, 3) logical slice offsets in m of a labelled multi-slice Pulseq scan; None when there is one
        slice or the excitations select none (all offsets 0: the slices can only be numbered)."""
        offsets = slice_offsets(self.sequence)
        if offsets is None or offsets.shape[0] == 1 or not np.abs(offsets).max() > 0:
            return None
        return offsets

    def _pulseq_geometry(self, geometry: Geometry) -> Geometry:
        """One position per labelled slice: the protocol's first slice centre moved by the sequence's slice offsets
        (logical x, y, z taken as read, phase, slice)."""
        offsets = self._pulseq_slice_offsets()
        if offsets is None:
            return geometry
        axes = np.stack([geometry.read_dir, geometry.phase_dir, geometry.slice_dir])
        return dataclasses.replace(geometry, position=geometry.position[0] + 1000 * offsets @ axes)

    def _pulseq_header(self, geometry: Geometry) -> KSpaceHeader:
        """Header of a Pulseq scan: matrix and in-plane FOV from the sequence, directions from the protocol."""
        cart = self._pulseq()
        if isinstance(cart, NonCartesianPulseq):
            n_y = n_x = cart.matrix
            trajectory = "other"
        else:
            n_y, n_x = cart.kspace.shape[-2:]
            trajectory = "epi" if cart.mixed_polarity.any() else "cartesian"
        fx, fy, _ = (1000 * v for v in self.sequence.fov_m)
        sequence = dataclasses.replace(self._sequence(), sequence_name=self.sequence.name or "pulseq",
                                       trajectory=trajectory)
        geometry = self._pulseq_geometry(geometry)
        return KSpaceHeader(
            encoded_matrix=(1, n_y, n_x), recon_matrix=(1, n_y, n_x), kspace_centre=(0, n_y // 2, n_x // 2),
            geometry=dataclasses.replace(geometry, fov_mm=(geometry.fov_mm[0], fy, fx)),
            sequence=sequence, patient=self._patient(),
            extra={"pulseq": True, "pulseq_sequence": self.sequence.path.name,
                   "patient_position": str(_get(self.protocol, "Dicom", "tPatientPosition", default="")),
                   "epi_ghost_correction": trajectory == "epi" and self.ghost_correction},
        )

    # --- samples ----------------------------------------------------------------------------------
    def _noise_rows(self) -> dict[int, np.ndarray]:
        """Noise-adjust acquisitions per measurement index (twix keeps them in an earlier measurement)."""
        out = {}
        for k, scan in enumerate(self._scans):
            table = self._table if scan is self._scan else _Table.of(scan["mdb"])
            rows = np.flatnonzero(table.has("NOISEADJSCAN"))
            if rows.size:
                out[k] = rows
        return out

    def _noise(self, n_coils: int, header: KSpaceHeader) -> np.ndarray | None:
        blocks = []
        for k, rows in self._noise_rows().items():
            mdbs = self._scans[k]["mdb"]
            for r in rows:
                data = np.atleast_2d(mdbs[r].data)
                if data.shape[0] != n_coils:
                    header.extra["noise_note"] = "noise scans have a different channel count; not used"
                    return None
                blocks.append(data)
        return np.concatenate(blocks, axis=1).astype(np.complex64) if blocks else None

    def _raw_lines(self, rows: np.ndarray, plan: _Plan) -> np.ndarray:
        """(n, coil, samples) for ``rows``: REFLECT lines reversed, ramp samples regridded."""
        t = self._table
        try:
            lines = np.stack([np.atleast_2d(t.mdbs[r].data) for r in rows]).astype(np.complex64)
        except ValueError:
            raise InputError(self.path, "acquisition data do not match their headers (channels x samples)") from None
        reflect = t.has("REFLECT")[rows]
        lines[reflect] = lines[reflect, :, ::-1]
        if plan.regrid is not None:
            lines = regrid_readout(lines, plan.regrid)
        return lines

    def _ghost_corrected(self, lines: np.ndarray, rows: np.ndarray, plan: _Plan) -> np.ndarray:
        """EPI lines with the navigator phase (per slice) removed; unchanged without navigators."""
        if not plan.navigators.size or not self.ghost_correction:
            return lines
        t = self._table
        navs = self._raw_lines(plan.navigators, plan)
        nav_reflect = t.has("REFLECT")[plan.navigators]
        nav_slice = t.counters["Sli"][plan.navigators]
        line_slice = t.counters["Sli"][rows]
        reflect = t.has("REFLECT")[rows]
        out = lines.copy()
        for s in np.unique(line_slice):
            pick = nav_slice == s
            if not (pick & nav_reflect).any() or not (pick & ~nav_reflect).any():
                continue
            a, b = ghost_phase(navs[pick & ~nav_reflect].mean(axis=0), navs[pick & nav_reflect].mean(axis=0))
            here = line_slice == s
            out[here] = correct_ghost(lines[here], reflect[here], a, b)
        return out

    def _batch_index(self, rows: np.ndarray, plan: _Plan, picked: np.ndarray | None) -> tuple[np.ndarray, tuple[int, ...]]:
        flat = np.zeros(rows.size, dtype=np.int64)
        shape = []
        for c, d in BATCH_COUNTERS:
            if d not in plan.batch_dims:
                continue
            values = plan.batch_values[c]
            if c == "Sli" and picked is not None:
                values = values[picked]
            pos = np.searchsorted(values, self._table.counters[c][rows])
            shape.append(len(values))
            flat = flat * len(values) + np.minimum(pos, len(values) - 1)
        return flat, tuple(shape)

    def _place(self, rows: np.ndarray, plan: _Plan, picked: np.ndarray | None, *, broadcast_batch: bool = False) -> np.ndarray:
        """Lines of ``rows`` into (*batch, coil, [kz,] ky, kx); repeated lines (averages) averaged."""
        t = self._table
        if broadcast_batch:
            batch, shape = np.zeros(rows.size, dtype=np.int64), (1,) * len(plan.batch_dims)
        else:
            batch, shape = self._batch_index(rows, plan, picked)
        ky = t.counters["Lin"][rows] + plan.ky_shift
        kz = t.counters["Par"][rows] + plan.kz_shift if plan.n_kz > 1 else np.zeros_like(ky)
        slot = (batch * plan.n_kz + kz) * plan.n_ky + ky
        n_slots = int(np.prod(shape, dtype=np.int64)) * plan.n_kz * plan.n_ky
        lines = self._ghost_corrected(self._raw_lines(rows, plan), rows, plan)
        out = np.zeros((n_slots, plan.n_coils, plan.n_kx), dtype=np.complex64)
        window = out[:, :, plan.kx_offset: plan.kx_offset + plan.n_samples]
        hits = np.bincount(slot, minlength=n_slots)
        np.add.at(window, slot, lines)
        window /= np.maximum(hits, 1)[:, None, None].astype(np.float32)
        out = out.reshape(*shape, plan.n_kz, plan.n_ky, plan.n_coils, plan.n_kx)
        nb = len(shape)
        out = np.moveaxis(out, nb + 2, nb)
        if plan.n_kz == 1:
            out = out[..., 0, :, :]
        if plan.recon_x < plan.n_kx:
            out = _remove_readout_oversampling(out, plan.recon_x)
        return out

    def _load(self, slices: np.ndarray | None, include_ignored: bool) -> KSpace:
        plan = self._plan()
        header = self._header()
        if self.sequence is not None:
            cart = self._pulseq()
            dims, data = self._pulseq_data(cart)
            if slices is not None:
                data = data[slices]
                header = dataclasses.replace(header, geometry=header.geometry.select_slices(slices))
            if isinstance(cart, NonCartesianPulseq):
                return KSpace(data=data, dims=dims, header=header, trajectory=cart.trajectory)
            mask = np.broadcast_to(cart.line_mask[:, None], data.shape[-2:])
            return KSpace(data=data, dims=dims, header=header, mask=None if mask.all() else np.ascontiguousarray(mask))
        t = self._table
        chosen = plan.batch_values["Sli"] if slices is None else plan.batch_values["Sli"][slices]
        rows = plan.imaging[np.isin(t.counters["Sli"][plan.imaging], chosen)]
        data = self._place(rows, plan, slices)

        calibration = None
        if plan.acs.size:
            acs_rows = plan.acs[np.isin(t.counters["Sli"][plan.acs], chosen)]
            if acs_rows.size:
                per_batch = np.unique(t.counters["Sli"][plan.acs]).size > 1
                calibration = self._place(acs_rows, plan, slices, broadcast_batch=not per_batch)
                if not per_batch:
                    calibration = calibration.reshape(calibration.shape[len(plan.batch_dims):])
                (z0, z1), (y0, y1) = plan.acs_extent
                calibration = calibration[..., y0:y1, :] if plan.n_kz == 1 else calibration[..., z0:z1, y0:y1, :]

        n_sp = len(plan.spatial_dims)
        line_mask = np.zeros((plan.n_kz, plan.n_ky), dtype=bool)
        kz = t.counters["Par"][plan.imaging] + plan.kz_shift if plan.n_kz > 1 else 0
        line_mask[kz, t.counters["Lin"][plan.imaging] + plan.ky_shift] = True
        lines = (line_mask if plan.n_kz > 1 else line_mask[0])[..., None]
        if plan.recon_x < plan.n_kx:  # after oversampling removal each kx sample mixes the whole readout
            mask = np.broadcast_to(lines, data.shape[-n_sp:])
        else:
            kx = np.zeros(plan.recon_x, dtype=bool)
            kx[plan.kx_offset: plan.kx_offset + plan.n_samples] = True
            mask = lines & kx
        if slices is not None:
            header = dataclasses.replace(header, geometry=header.geometry.select_slices(slices))
        return KSpace(
            data=data, dims=(*plan.batch_dims, "coil", *plan.spatial_dims), header=header,
            mask=None if mask.all() else np.ascontiguousarray(mask), noise=self._noise(plan.n_coils, header),
            calibration=calibration,
        )
