"""The MRD (ISMRMRD v1) XML header: parse what a reconstruction and its labels need, and write one.

The same XML is the ``ismrmrd_header`` of fastMRI files. Element names and order follow the
ISMRMRD schema (``ismrmrd.xsd``); only ``encoding[0]`` is interpreted.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import KSpaceHeader, PatientInfo, SequenceParams
from ..errors import InputError

NAMESPACE = "http://www.ismrm.org/ISMRMRD"
GAMMA_H1_HZ_PER_T = 42.577478518e6
LIMIT_NAMES = ("kspace_encoding_step_1", "kspace_encoding_step_2", "average", "slice", "contrast",
               "phase", "repetition", "set", "segment")
_TRAJECTORIES = ("cartesian", "epi", "radial", "goldenangle", "spiral", "other")


@dataclass
class MrdXml:
    """What ``encoding[0]`` and the other header sections say. Sizes are (x, y, z) as in the XML."""

    encoded_xyz: tuple[int, int, int]
    recon_xyz: tuple[int, int, int]
    encoded_fov_xyz: tuple[float, float, float]
    recon_fov_xyz: tuple[float, float, float]
    limits: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (min, max, centre)
    acceleration: tuple[int, int] = (1, 1)  # (step_1, step_2)
    calibration_mode: str = ""
    sequence: SequenceParams = field(default_factory=SequenceParams)
    patient: PatientInfo = field(default_factory=PatientInfo)
    h1_resonance_hz: float | None = None
    receiver_channels: int | None = None
    uninterpreted: list[str] = field(default_factory=list)


def _strip_namespaces(root: ET.Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]


def _text(el: ET.Element | None, path: str) -> str:
    if el is None:
        return ""
    found = el.find(path)
    return (found.text or "").strip() if found is not None else ""


def _num(el: ET.Element | None, path: str, source: Path, kind: type = float) -> float | int | None:
    text = _text(el, path)
    if not text:
        return None
    try:
        return kind(float(text)) if kind is int else kind(text)
    except ValueError:
        raise InputError(source, f"XML header field {path!r} is not a number: {text!r}") from None


def _xyz(el: ET.Element | None, path: str, source: Path, kind: type) -> tuple:
    node = None if el is None else el.find(path)
    if node is None:
        raise InputError(source, f"XML header lacks encoding/{path}")
    values = tuple(_num(node, axis, source, kind) for axis in ("x", "y", "z"))
    if any(v is None for v in values):
        raise InputError(source, f"XML header encoding/{path} lacks x, y or z")
    return values


def _compact_date(text: str) -> str:
    """XML date YYYY-MM-DD -> DICOM YYYYMMDD."""
    return text.replace("-", "")


def parse_mrd_xml(text: str | bytes | np.ndarray, source: Path) -> MrdXml:
    """Parse an MRD XML header; ``InputError`` naming ``source`` when it is not usable.

    ``text`` may be a one-element array, as HDF5 string datasets of shape (1,) read back.
    """
    if isinstance(text, np.ndarray):
        if text.size != 1:
            raise InputError(source, f"XML header dataset holds {text.size} entries, expected 1")
        text = text.reshape(-1)[0]
    if not isinstance(text, (str, bytes)):
        raise InputError(source, f"XML header is a {type(text).__name__}, expected text")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(source, f"XML header is not valid XML ({exc})") from None
    _strip_namespaces(root)
    if root.tag != "ismrmrdHeader":
        raise InputError(source, f"XML header root is <{root.tag}>, expected <ismrmrdHeader>")
    encodings = root.findall("encoding")
    if not encodings:
        raise InputError(source, "XML header has no <encoding> section")
    enc = encodings[0]
    notes = []
    if len(encodings) > 1:
        notes.append(f"{len(encodings) - 1} extra encoding space(s) in the XML header (only encoding 0 is read)")
    for section in ("userParameters", "waveformInformation"):
        if root.find(section) is not None:
            notes.append(f"XML <{section}> not interpreted")

    limits = {}
    for name in LIMIT_NAMES:
        node = enc.find(f"encodingLimits/{name}")
        if node is not None:
            values = tuple(_num(node, key, source, int) for key in ("minimum", "maximum", "center"))
            limits[name] = tuple(0 if v is None else v for v in values)

    trajectory = _text(enc, "trajectory") or "cartesian"
    pi = enc.find("parallelImaging")
    accel = (
        int(_num(pi, "accelerationFactor/kspace_encoding_step_1", source, int) or 1),
        int(_num(pi, "accelerationFactor/kspace_encoding_step_2", source, int) or 1),
    )

    seq_el = root.find("sequenceParameters")
    sysinfo = root.find("acquisitionSystemInformation")
    meas = root.find("measurementInformation")
    te = tuple(float(e.text) for e in (seq_el.findall("TE") if seq_el is not None else []) if e.text)
    scanner = " ".join(t for t in (_text(sysinfo, "systemVendor"), _text(sysinfo, "systemModel")) if t)
    sequence = SequenceParams(
        tr_ms=_num(seq_el, "TR", source),
        te_ms=te,
        ti_ms=_num(seq_el, "TI", source),
        flip_angle_deg=_num(seq_el, "flipAngle_deg", source),
        field_strength_t=_num(sysinfo, "systemFieldStrength_T", source),
        sequence_name=_text(meas, "sequenceName") or _text(seq_el, "sequence_type"),
        trajectory=trajectory,
        scanner=scanner,
        protocol_name=_text(meas, "protocolName"),
    )
    subj = root.find("subjectInformation")
    study = root.find("studyInformation")
    patient = PatientInfo(
        name=_text(subj, "patientName"),
        id=_text(subj, "patientID"),
        birth_date=_compact_date(_text(subj, "patientBirthdate")),
        sex=_text(subj, "patientGender"),
        weight_kg=_num(subj, "patientWeight_kg", source),
        study_date=_compact_date(_text(study, "studyDate")),
        study_time=_text(study, "studyTime"),
        study_uid=_text(study, "studyInstanceUID"),
        study_description=_text(study, "studyDescription"),
        accession_number=_text(study, "accessionNumber"),
        referring_physician=_text(study, "referringPhysicianName"),
        institution=_text(sysinfo, "institutionName"),
        frame_of_reference_uid=_text(meas, "frameOfReferenceUID"),
    )
    receivers = _num(sysinfo, "receiverChannels", source, int)
    return MrdXml(
        encoded_xyz=_xyz(enc, "encodedSpace/matrixSize", source, int),
        recon_xyz=_xyz(enc, "reconSpace/matrixSize", source, int),
        encoded_fov_xyz=_xyz(enc, "encodedSpace/fieldOfView_mm", source, float),
        recon_fov_xyz=_xyz(enc, "reconSpace/fieldOfView_mm", source, float),
        limits=limits,
        acceleration=accel,
        calibration_mode=_text(pi, "calibrationMode"),
        sequence=sequence,
        patient=patient,
        h1_resonance_hz=_num(root, "experimentalConditions/H1resonanceFrequency_Hz", source),
        receiver_channels=receivers,
        uninterpreted=notes,
    )


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _maybe(parent: ET.Element, tag: str, value: object) -> None:
    """Add ``<tag>value</tag>`` unless the value is empty/None (optional schema elements)."""
    if value not in (None, ""):
        _sub(parent, tag, value)


def _xml_date(yyyymmdd: str) -> str:
    if len(yyyymmdd) == 8 and yyyymmdd.isdigit():
        return f"{yyyymmdd[:4]}-{yyyymmdd[4:6]}-{yyyymmdd[6:]}"
    return ""


def _xml_time(text: str) -> str:
    """DICOM HHMMSS(.ffffff) or HH:MM:SS -> HH:MM:SS (schema xs:time); '' when unrecognised."""
    digits = text.replace(":", "").split(".")[0]
    if len(digits) == 6 and digits.isdigit():
        return f"{digits[:2]}:{digits[2:4]}:{digits[4:]}"
    return ""


def _space(parent: ET.Element, tag: str, matrix_xyz: tuple[int, ...], fov_xyz: tuple[float, ...]) -> None:
    space = _sub(parent, tag)
    matrix = _sub(space, "matrixSize")
    fov = _sub(space, "fieldOfView_mm")
    for axis, n, f in zip("xyz", matrix_xyz, fov_xyz):
        _sub(matrix, axis, int(n))
        _sub(fov, axis, float(f))


def build_mrd_xml(
    header: KSpaceHeader,
    *,
    n_coils: int,
    limits: dict[str, tuple[int, int, int]],
    calibration_mode: str = "",
) -> str:
    """MRD XML for ``header``: encoded/recon matrices (k-space sizes (kz, ky, kx) -> XML x, y, z),
    FOV, ``limits`` (name -> (min, max, centre)), sequence and subject/study sections.

    The encoded FOV is the recon FOV scaled by encoded/recon matrix (oversampling).
    """
    root = ET.Element("ismrmrdHeader", xmlns=NAMESPACE)
    p = header.patient
    subj = _sub(root, "subjectInformation")
    _maybe(subj, "patientName", p.name)
    _maybe(subj, "patientWeight_kg", p.weight_kg)
    _maybe(subj, "patientID", p.id)
    _maybe(subj, "patientBirthdate", _xml_date(p.birth_date))
    _maybe(subj, "patientGender", p.sex if p.sex in ("M", "F", "O") else "")
    study = _sub(root, "studyInformation")
    _maybe(study, "studyDate", _xml_date(p.study_date))
    _maybe(study, "studyTime", _xml_time(p.study_time))
    _maybe(study, "accessionNumber", p.accession_number if p.accession_number.isdigit() else "")
    _maybe(study, "referringPhysicianName", p.referring_physician)
    _maybe(study, "studyDescription", p.study_description)
    _maybe(study, "studyInstanceUID", p.study_uid)

    s = header.sequence
    meas = _sub(root, "measurementInformation")
    _sub(meas, "patientPosition", "HFS")
    _maybe(meas, "protocolName", s.protocol_name)
    _maybe(meas, "sequenceName", s.sequence_name)
    _maybe(meas, "frameOfReferenceUID", p.frame_of_reference_uid)
    system = _sub(root, "acquisitionSystemInformation")
    _maybe(system, "systemModel", s.scanner)
    _maybe(system, "systemFieldStrength_T", s.field_strength_t)
    _sub(system, "receiverChannels", int(n_coils))
    _maybe(system, "institutionName", p.institution)
    h1 = header.extra.get("h1_resonance_hz")
    if h1 is None and s.field_strength_t:
        h1 = GAMMA_H1_HZ_PER_T * s.field_strength_t
    _sub(_sub(root, "experimentalConditions"), "H1resonanceFrequency_Hz", int(round(h1 or 0)))

    enc = _sub(root, "encoding")
    encoded_xyz = tuple(reversed(header.encoded_matrix))
    recon_xyz = tuple(reversed(header.recon_matrix))
    fz, fy, fx = header.geometry.fov_mm
    recon_fov = (fx, fy, fz)
    enc_fov = tuple(f * e / r if r else f for f, e, r in zip(recon_fov, encoded_xyz, recon_xyz))
    _space(enc, "encodedSpace", encoded_xyz, enc_fov)
    _space(enc, "reconSpace", recon_xyz, recon_fov)
    lim = _sub(enc, "encodingLimits")
    for name in LIMIT_NAMES:
        if name in limits:
            node = _sub(lim, name)
            for key, v in zip(("minimum", "maximum", "center"), limits[name]):
                _sub(node, key, int(v))
    _sub(enc, "trajectory", s.trajectory if s.trajectory in _TRAJECTORIES else "other")
    if calibration_mode or max(header.acceleration) > 1:
        pi = _sub(enc, "parallelImaging")
        accel = _sub(pi, "accelerationFactor")
        _sub(accel, "kspace_encoding_step_1", int(header.acceleration[1]))
        _sub(accel, "kspace_encoding_step_2", int(header.acceleration[0]))
        _sub(pi, "calibrationMode", calibration_mode or "other")

    seq = _sub(root, "sequenceParameters")
    for tag, values in (("TR", [s.tr_ms]), ("TE", list(s.te_ms)), ("TI", [s.ti_ms]), ("flipAngle_deg", [s.flip_angle_deg])):
        for v in values:
            if v is not None and math.isfinite(v):
                _sub(seq, tag, float(v))
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
