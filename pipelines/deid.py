"""DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile, applied to pydicom datasets.

Actions (PS3.15 Table E.1-1 codes): ``Z`` empty the value (or, for name and ID, put the pseudonym:
a dummy value is allowed), ``X`` remove, ``U`` replace a UID by a consistent new one. Beside the
named attributes, rules by value representation catch what a table would miss: every person name
(PN) is emptied, every date/time (DA, DT, TM) emptied, every free text (LT, ST, UT) removed, every
instance-specific UID replaced, every private element removed (the profile's default). Sequences
are processed recursively. The result records what was done (PatientIdentityRemoved, method and
the profile's code 113100).

UID replacement is a caller-supplied function (``uid_map``) so that the replacement is consistent
across the instances of a series and across runs; ``pipelines.dicom`` derives it from the input's
sha256, which only someone holding the raw data (and so the identities) could reproduce.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

DEFAULT_PSEUDONYM = "ANONYMOUS"
METHOD = "PS3.15 Basic Application Confidentiality Profile (mrirecon)"

# Name and ID get the pseudonym (a dummy value, as action Z allows).
PSEUDONYMISED = ("PatientName", "PatientID")

# Z: keep the element (type 2 in the IODs) with an empty value.
EMPTIED = frozenset({
    "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ContentDate", "ContentTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber", "PatientOrientation",
})

# X: identifying attributes of the basic profile (names, IDs, dates, institution, free text).
REMOVED = frozenset({
    "AcquisitionDate", "AcquisitionDateTime", "AcquisitionTime", "AcquisitionComments",
    "AdditionalPatientHistory", "AdmissionID", "AdmittingDiagnosesDescription", "Allergies",
    "BranchOfService", "CurrentPatientLocation", "DerivationDescription", "DeviceSerialNumber",
    "EthnicGroup", "ImageComments", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionName",
    "InstitutionalDepartmentName", "IssuerOfPatientID", "MedicalRecordLocator", "MilitaryRank",
    "NameOfPhysiciansReadingStudy", "Occupation", "OperatorsName", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientAddress", "PatientAge", "PatientBirthName",
    "PatientBirthTime", "PatientComments", "PatientMotherBirthName", "PatientReligiousPreference",
    "PatientSize", "PatientTelephoneNumbers", "PatientWeight", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformingPhysicianName", "PhysiciansOfRecord", "ProtocolName", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "RequestAttributesSequence", "RequestingPhysician", "RequestingService", "SeriesDate",
    "SeriesDescription", "SeriesTime", "StationName", "StudyComments", "StudyDescription",
    "OverlayDate", "OverlayTime", "CurveDate", "CurveTime", "PatientState", "PregnancyStatus",
    "SmokingStatus", "MedicalAlerts", "CountryOfResidence", "RegionOfResidence",
    "ResponsibleOrganization", "ResponsiblePerson", "PersonName", "TextComments", "TextString",
})

# UIDs that name standard things (classes, syntaxes, coding schemes), never a patient's data.
KEPT_UIDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID",
})
STANDARD_UID_ROOT = "1.2.840.10008."


def deidentify(ds: Dataset, *, uid_map: Callable[[str], str], pseudonym: str = DEFAULT_PSEUDONYM) -> Dataset:
    """A de-identified copy of ``ds`` (``ds`` itself is untouched); file meta is dropped (rebuild it)."""
    out = copy.deepcopy(ds)
    out.file_meta = None
    _clean(out, uid_map)
    if "PatientName" in out:
        out.PatientName = pseudonym if "^" in pseudonym else f"{pseudonym}^"  # family^given form
    if "PatientID" in out:
        out.PatientID = pseudonym
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    out.DeidentificationMethodCodeSequence = [code]
    return out


def _clean(ds: Dataset, uid_map: Callable[[str], str]) -> None:
    """Apply the profile to ``ds`` and its nested sequences, in place."""
    for elem in list(ds):
        action = _action(elem)
        if action == "X":
            del ds[elem.tag]
        elif action == "Z":
            elem.value = None
        elif action == "U" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [uid_map(str(v)) for v in values]
            elem.value = new if elem.VM > 1 else new[0]
        elif elem.VR == "SQ":
            for item in elem.value:
                _clean(item, uid_map)


def _action(elem: DataElement) -> str:
    """The profile's action for one element: 'X', 'Z', 'U' or '' (keep)."""
    keyword = elem.keyword
    if elem.tag.is_private or keyword in REMOVED or elem.VR in ("LT", "ST", "UT"):
        return "X"
    if keyword in PSEUDONYMISED:
        return ""
    if keyword in EMPTIED or elem.VR in ("PN", "DA", "DT", "TM"):
        return "Z"
    if elem.VR == "UI" and keyword not in KEPT_UIDS:
        value = str(elem.value or "")
        return "" if value.startswith(STANDARD_UID_ROOT) else "U"
    return ""
