"""Classic MR Image Storage series (one instance per slice) from a reconstructed series, plain pydicom.

Where patient identifiers come from. The Zarr store deliberately keeps the header *without* PHI
(see ``store.py``): a store can be copied, shared and inspected without leaking identities. An
identified DICOM export therefore re-reads ``PatientInfo`` from the raw file itself (``raw=``), and
refuses it unless the file's sha256 equals the one the series recorded, so images can never be
labelled with another patient's identity. Storing PHI in the store "just for export" was rejected:
it would make every store PHI-bearing. Without ``raw`` only a de-identified export is possible.

Pixel values. Magnitudes are scaled linearly per series (one factor for all slices, so intensities
stay comparable) onto 12-bit unsigned integers (0..4095, the usual MR range). Rescale Slope /
Intercept are not part of the classic MR Image IOD (``dciodvfy`` flags them), so none are written;
the window (centre/width from the 1st and 99.5th percentiles of the series) is in stored units.

SeriesNumber comes from the recipe key (stable across stores and re-exports).

Geometry. ``Image.affine`` (voxel (x, y, z-or-slice) -> LPS mm) gives everything: pixel columns run
along x (row direction cosine = affine column 0), rows along y (column cosine = column 1),
ImagePositionPatient of slice k = affine @ (0, 0, k), PixelSpacing = (row spacing dy, column spacing
dx), SpacingBetweenSlices = |column 2|, SliceThickness = the slab's thickness for multi-slice 2D.

UIDs. ``2.25.<int>`` UIDs from a UUID-5 of the input's sha256 plus, for series and instances, the
reconstruction parameters key: re-exporting one result gives identical UIDs, a changed recipe a new
series. Study and frame of reference come from the raw header when identified (the recon joins the
scanner's study), else they are derived from the input sha256 alone (every recon of one input shares them).
"""
from __future__ import annotations

import copy
import datetime
import hashlib
import itertools
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
)
from pydicom.valuerep import format_number_as_ds

from mrirecon import __version__
from mrirecon.atomic import atomic_path
from mrirecon.data import Image, PatientInfo
from mrirecon.errors import InputError, OutputError
from mrirecon.io import open_raw

from .deid import DEFAULT_PSEUDONYM, deidentify
from .store import list_series, open_series

UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/mrirecon/dicom-uid")
BITS_STORED = 12
MAX_STORED = (1 << BITS_STORED) - 1
WINDOW_PERCENTILES = (1.0, 99.5)
FIRST_SERIES_NUMBER = 1000
STACK_DIMS = ("slice", "z")


def derive_uid(*parts: str) -> str:
    """Deterministic ``2.25.<decimal UUID>`` UID (at most 44 characters) from text parts."""
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, chr(31).join(parts)).int}"


def _ds(value: float) -> str:
    """A Decimal String (at most 16 characters) for ``value``."""
    return format_number_as_ds(float(value)) if np.isfinite(value) else "0"


def read_patient(raw: str | os.PathLike, expected_sha256: str) -> PatientInfo:
    """Patient/study identifiers of ``raw``, after checking it is the input the series was made from."""
    with open_raw(raw) as f:
        info = f.info(include_phi=True)
    if not expected_sha256 or info["sha256"] != expected_sha256:
        raise InputError(raw, "this raw file is not the input of the series (sha256 differs); "
                              "patient identifiers would be wrong")
    return PatientInfo(**info["patient"])


def input_sha256(image: Image) -> str:
    """The sha256 of the raw file ``image`` was reconstructed from ('' when unknown)."""
    prov = image.provenance
    return (prov.input_sha256 if prov else "") or (image.header.source_sha256 if image.header else "")


def _identity(image: Image, magnitude: np.ndarray) -> tuple[str, str]:
    """(input sha256, parameters key) that seed the UIDs; pixel hash when the input is unknown."""
    sha = input_sha256(image) or hashlib.sha256(np.ascontiguousarray(magnitude).tobytes()).hexdigest()
    return sha, image.provenance.parameters_key() if image.provenance else "unknown"


def recipe_series_number(parameters_key: str) -> int:
    """SeriesNumber 1000..9999 from the recipe's key: one recipe always gets the same number, in any store."""
    if not parameters_key:
        return FIRST_SERIES_NUMBER
    return FIRST_SERIES_NUMBER + int(parameters_key[:8], 16) % (10000 - FIRST_SERIES_NUMBER)


def _stacked(image: Image) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Magnitude as (other batch..., stack, y, x) and the index tuples of the other batch dims."""
    data = np.abs(image.numpy())
    dims = list(image.dims)
    if not any(d in dims for d in STACK_DIMS):
        data, dims = data[..., None, :, :], dims[:-2] + ["slice"] + dims[-2:]
    stack = next(d for d in STACK_DIMS if d in dims)
    others = [d for d in dims if d not in (stack, "y", "x")]
    data = np.transpose(data, [dims.index(d) for d in others + [stack, "y", "x"]])
    return data, list(itertools.product(*(range(n) for n in data.shape[: len(others)])))


def _window(values: np.ndarray) -> tuple[float, float]:
    """(centre, width) in stored units covering the 1st..99.5th percentile; width >= 1."""
    lo, hi = np.percentile(values, WINDOW_PERCENTILES)
    return (lo + hi) / 2, max(hi - lo, 1.0)


def build_series(
    image: Image,
    *,
    patient: PatientInfo | None = None,
    series_number: int = FIRST_SERIES_NUMBER,
    deidentify_with: str | None = None,
) -> list[Dataset]:
    """One classic MR Image Storage dataset per slice (and per other batch index) of ``image``.

    ``patient`` labels the series (None: empty patient/study attributes). ``deidentify_with`` (a
    pseudonym) applies the PS3.15 basic profile to every dataset before it is returned.
    """
    patient = patient or PatientInfo()
    data, batches = _stacked(image)
    sha, key = _identity(image, data)
    stored = _quantise(data)
    centre, width = _window(stored)
    affine = image.affine
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_cos, col_cos = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    normal = np.cross(row_cos, col_cos)
    three_d = "z" in image.dims
    thickness = spacing[2] if three_d else image.geometry.fov_mm[0]
    common = _common(image, patient, sha, key, series_number, three_d)
    out = []
    n_stack = data.shape[-3]
    for number, (batch, k) in enumerate(itertools.product(batches, range(n_stack)), start=1):
        ds = copy.deepcopy(common)
        sop = derive_uid(sha, key, "instance", repr(batch), str(k))
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = number
        position = affine @ np.array([0.0, 0.0, float(k), 1.0])
        ds.ImagePositionPatient = [_ds(v) for v in position[:3]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.SliceLocation = _ds(float(position[:3] @ normal))
        ds.WindowCenter, ds.WindowWidth = _ds(centre), _ds(width)
        img = stored[batch + (k,)]
        ds.Rows, ds.Columns = img.shape
        ds.PixelData = np.ascontiguousarray(img).tobytes()
        _add_file_meta(ds)
        out.append(ds)
    if deidentify_with is not None:
        out = [deidentify(ds, uid_map=lambda uid: derive_uid("deid", sha, uid), pseudonym=deidentify_with)
               for ds in out]
        for ds in out:
            _add_file_meta(ds)
    return out


def _quantise(magnitude: np.ndarray) -> np.ndarray:
    """Magnitudes scaled by one factor onto 0..MAX_STORED as uint16 (all zero stays zero)."""
    peak = float(magnitude.max()) if magnitude.size else 0.0
    scale = MAX_STORED / peak if peak > 0 and np.isfinite(peak) else 0.0
    return np.clip(np.rint(np.nan_to_num(magnitude) * scale), 0, MAX_STORED).astype(np.uint16)


def _common(image: Image, patient: PatientInfo, sha: str, key: str, series_number: int, three_d: bool) -> Dataset:
    """Attributes shared by every instance of the series (patient, study, series, equipment, MR)."""
    prov = image.provenance
    seq = image.header.sequence if image.header else None
    created = datetime.datetime.fromisoformat(prov.created) if prov else datetime.datetime.now(datetime.UTC)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    # Patient and study (identifiers from the raw header, or empty).
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = _digits(patient.birth_date)
    ds.PatientSex = patient.sex if patient.sex in ("M", "F", "O") else ""
    if patient.weight_kg:
        ds.PatientWeight = _ds(patient.weight_kg)
    ds.StudyInstanceUID = _valid_uid(patient.study_uid) or derive_uid(sha, "study")
    ds.StudyDate, ds.StudyTime = _digits(patient.study_date), _digits(patient.study_time)
    ds.ReferringPhysicianName = patient.referring_physician
    ds.StudyID = ""
    ds.AccessionNumber = patient.accession_number
    if patient.study_description:
        ds.StudyDescription = patient.study_description
    if patient.institution:
        ds.InstitutionName = patient.institution
    # Series, frame of reference, equipment.
    ds.Modality = "MR"
    ds.SeriesInstanceUID = derive_uid(sha, key, "series")
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"mrirecon {prov.method if prov else 'image'} {key[:8]}"
    ds.Laterality = ""
    ds.PatientPosition = ""
    ds.FrameOfReferenceUID = _valid_uid(patient.frame_of_reference_uid) or derive_uid(sha, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "mrirecon"
    ds.SoftwareVersions = (prov.software_version if prov else "") or __version__
    ds.ContentDate, ds.ContentTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    # Image pixel.
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    # MR image: what the header knows; research mode, the sequence class is not recorded.
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "RM", "NONE", ""
    ds.MRAcquisitionType = "3D" if three_d else "2D"
    ds.RepetitionTime = _ds(seq.tr_ms) if seq and seq.tr_ms else ""
    ds.EchoTime = _ds(seq.te_ms[0]) if seq and seq.te_ms else ""
    ds.EchoTrainLength = ""
    if seq and seq.flip_angle_deg:
        ds.FlipAngle = _ds(seq.flip_angle_deg)
    if seq and seq.field_strength_t:
        ds.MagneticFieldStrength = _ds(seq.field_strength_t)
    if seq and seq.sequence_name:
        ds.SequenceName = seq.sequence_name[:16]
    if seq and seq.protocol_name:
        ds.ProtocolName = seq.protocol_name[:64]
    return ds


def _digits(value: str) -> str:
    """A DA/TM value from ISO-style text: '12:00:00' -> '120000', '1970-01-01' -> '19700101'."""
    return "".join(c for c in value if c.isdigit() or c == ".")


def _valid_uid(uid: str) -> str:
    """``uid`` when it is a syntactically valid DICOM UID, else ''."""
    parts = uid.split(".")
    ok = 0 < len(uid) <= 64 and all(p.isdigit() and (p == "0" or not p.startswith("0")) for p in parts)
    return uid if ok else ""


def _add_file_meta(ds: Dataset) -> None:
    """Part-10 file meta and preamble, so that a plain ``dcmwrite`` (STOW-RS) gives a real file."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MRIRECON_{__version__}"[:16]
    ds.file_meta = meta
    ds.preamble = b"\0" * 128


def series_datasets(
    store: str | os.PathLike,
    name: str,
    *,
    raw: str | os.PathLike | None = None,
    deidentify: bool = False,
    pseudonym: str = DEFAULT_PSEUDONYM,
) -> list[Dataset]:
    """The DICOM datasets of series ``name`` of ``store`` (identified needs ``raw``, see module doc)."""
    image = open_series(store, name)
    if not deidentify and raw is None:
        raise InputError(f"{store}/{name}", "the store holds no patient identifiers: pass the raw input "
                                            "file (--raw) for an identified series, or de-identify")
    patient = None if raw is None else read_patient(raw, input_sha256(image))
    number = recipe_series_number(image.provenance.parameters_key() if image.provenance else "")
    return build_series(image, patient=patient, series_number=number,
                        deidentify_with=pseudonym if deidentify else None)


def write_dataset(ds: Dataset, path: Path) -> Path:
    """Write one Part-10 file atomically (temporary name, then rename); ``OutputError`` on failure."""
    with atomic_path(path, "DICOM") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def export_dicom(
    store: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    series: list[str] | None = None,
    raw: str | os.PathLike | None = None,
    deidentify: bool = False,
    pseudonym: str = DEFAULT_PSEUDONYM,
    progress: Callable[[str, int], None] | None = None,
) -> list[Path]:
    """Write each (complete) series as ``out_dir/<SeriesInstanceUID>/IM0001.dcm...``; returns the folders.

    Folder names are UIDs, not series names, because the input's file name may carry PHI.
    """
    names = series or list_series(store)
    folders = []
    for name in names:
        datasets = series_datasets(store, name, raw=raw, deidentify=deidentify, pseudonym=pseudonym)
        folder = Path(out_dir) / datasets[0].SeriesInstanceUID
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(folder, f"cannot create folder: {exc.strerror or exc}") from exc
        for ds in datasets:
            write_dataset(ds, folder / f"IM{int(ds.InstanceNumber):04d}.dcm")
        if progress is not None:
            progress(name, len(datasets))
        folders.append(folder)
    return folders
