"""PS3.15 basic profile: the simulated patient's identifiers reach no output byte and no log line."""
from __future__ import annotations

import logging

import pydicom
from mrirecon.pipelines.deid import deidentify
from pydicom.dataset import Dataset

from mrirecon.cli import main
from mrirecon.sim import SIMULATED_PATIENT

# Every identifying value of the simulated patient that is long enough to search for in bytes.
IDENTIFIERS = [
    v for k, v in vars(SIMULATED_PATIENT).items() if isinstance(v, str) and len(v) >= 4
]


def phi_hits(text: bytes | str) -> list[str]:
    """The identifiers found in ``text`` (bytes or str)."""
    data = text if isinstance(text, bytes) else text.encode()
    return [v for v in IDENTIFIERS if v.encode() in data]


def test_identifiers_appear_in_no_output_byte_and_no_log(recon_store, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "dcm"
    rc = main(["export", str(recon_store.store), "--dicom", str(out), "--raw", str(recon_store.raw),
               "--deidentify", "--pseudonym", "STUDY-042"])
    assert rc == 0
    files = sorted(out.rglob("*.dcm"))
    assert files
    for f in files:
        assert phi_hits(f.read_bytes()) == [], f
        assert phi_hits(str(f.relative_to(tmp_path))) == []
        ds = pydicom.dcmread(f)
        assert ds.PatientID == "STUDY-042" and ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.StudyDate == "" and ds.PatientBirthDate == "" and "InstitutionName" not in ds
    printed = capsys.readouterr()
    assert phi_hits(printed.out + printed.err + caplog.text) == []
    # The same export without de-identification does carry them: the check above can fail.
    main(["export", str(recon_store.store), "--dicom", str(tmp_path / "id"), "--raw", str(recon_store.raw)])
    assert set(phi_hits(b"".join(f.read_bytes() for f in (tmp_path / "id").rglob("*.dcm")))) >= {
        SIMULATED_PATIENT.name, SIMULATED_PATIENT.id, SIMULATED_PATIENT.study_uid, SIMULATED_PATIENT.institution}


def test_profile_rules_on_a_crafted_dataset():
    ds = Dataset()
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyInstanceUID = "1.2.3"
    ds.PatientName, ds.PatientID, ds.OtherPatientIDs = "DOE^JANE", "P123", "X999"
    ds.InstitutionName, ds.StudyDescription, ds.ImageComments = "General", "knee", "call Jane"
    ds.AcquisitionDate, ds.StudyDate = "20240102", "20240102"
    ds.Manufacturer = "ACME"
    ds.add_new(0x00091001, "LO", "private note")
    item = Dataset()
    item.VerifyingObserverName = "SMITH^BOB"  # a PN not in the table: emptied by VR
    item.ReferencedSOPClassUID = pydicom.uid.MRImageStorage
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedImageSequence = [item]
    mapping = {}
    out = deidentify(ds, uid_map=lambda u: mapping.setdefault(u, f"2.25.{len(mapping) + 1}"), pseudonym="P")
    assert ds.PatientName == "DOE^JANE"  # the input is untouched
    assert out.PatientName == "P^" and out.PatientID == "P"
    for gone in ("OtherPatientIDs", "InstitutionName", "StudyDescription", "ImageComments", "AcquisitionDate"):
        assert gone not in out
    assert "StudyDate" in out and not out.StudyDate and [e for e in out if e.tag.is_private] == []
    assert out.Manufacturer == "ACME" and out.SOPClassUID == pydicom.uid.MRImageStorage
    assert out.SOPInstanceUID == mapping["1.2.3.4"] and out.StudyInstanceUID == mapping["1.2.3"]
    ref = out.ReferencedImageSequence[0]
    assert not ref.VerifyingObserverName and ref.ReferencedSOPClassUID == pydicom.uid.MRImageStorage
    assert ref.ReferencedSOPInstanceUID == out.SOPInstanceUID  # consistent replacement
