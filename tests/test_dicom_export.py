"""DICOM export: IOD validity (dciodvfy/dcentvfy), geometry against NIfTI, pixels, deterministic UIDs."""
from __future__ import annotations

import dataclasses
import re
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from mrirecon.pipelines.dicom import MAX_STORED, build_series, export_dicom, read_patient
from mrirecon.pipelines.nifti import write_nifti
from mrirecon.pipelines.store import open_series, write_image
from pacs_fixtures import PHANTOM_SLICES, require_tool

from mrirecon.cli import main
from mrirecon.data import Geometry, Image, Provenance
from mrirecon.errors import InputError
from mrirecon.sim import SIMULATED_PATIENT

# dciodvfy warnings we accept (measured on our output): Study ID and (de-identified) study date/time
# are empty, and Laterality is empty because the body part is not known.
ALLOWED_WARNINGS = (
    r"Missing attribute or value that would be needed to build DICOMDIR - Study (ID|Date|Time)",
    r"attribute <Laterality>",
)


def read_series(folder) -> list[pydicom.Dataset]:
    """The instances of one exported folder, in instance order."""
    return sorted((pydicom.dcmread(p) for p in folder.glob("*.dcm")), key=lambda d: int(d.InstanceNumber))


def assert_valid(files) -> None:
    """Every file passes dciodvfy without errors (only allowed warnings); the set passes dcentvfy."""
    dciodvfy, dcentvfy = require_tool("dciodvfy"), require_tool("dcentvfy")
    for f in files:
        r = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, timeout=30, check=False)
        lines = (r.stdout + r.stderr).splitlines()
        assert r.returncode == 0 and not [l for l in lines if l.startswith("Error")], f"{f}:\n{r.stderr}"
        unexpected = [l for l in lines if l.startswith("Warning") and not any(re.search(a, l) for a in ALLOWED_WARNINGS)]
        assert not unexpected, unexpected
    r = subprocess.run([dcentvfy, *map(str, files)], capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0 and not re.search(r"^(Error|Warning)", r.stdout + r.stderr, re.MULTILINE), r.stdout + r.stderr


def voxel_world_dicom(ds: pydicom.Dataset, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """LPS mm of pixel (row, col) from the Image Plane module (PS3.3 C.7.6.2.1.1)."""
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return ipp + np.outer(cols * dc, iop[:3]) + np.outer(rows * dr, iop[3:])


def test_export_is_valid_and_labelled_from_raw(recon_store, tmp_path):
    rc = main(["export", str(recon_store.store), "--dicom", str(tmp_path), "--raw", str(recon_store.raw)])
    assert rc == 0
    (folder,) = tmp_path.iterdir()
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == PHANTOM_SLICES
    assert_valid(files)
    series = read_series(folder)
    first = series[0]
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert first.PatientName == SIMULATED_PATIENT.name and first.PatientID == SIMULATED_PATIENT.id
    assert first.StudyInstanceUID == SIMULATED_PATIENT.study_uid
    assert first.FrameOfReferenceUID == SIMULATED_PATIENT.frame_of_reference_uid
    assert folder.name == first.SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in series}) == PHANTOM_SLICES


def test_dicom_and_nifti_agree_on_geometry_and_pixels(recon_store, tmp_path):
    """World coordinates of every voxel (and its intensity, up to the scale) agree between the exports."""
    export_dicom(recon_store.store, tmp_path, deidentify=True)
    series = read_series(next(tmp_path.iterdir()))
    nii = nib.load(recon_store.nifti)
    ras = nii.affine
    vol = np.asarray(nii.dataobj)  # (x, y, slice)
    peak = vol.max()
    rows, cols = np.meshgrid(np.arange(vol.shape[1]), np.arange(vol.shape[0]), indexing="ij")
    for k, ds in enumerate(series):
        lps = voxel_world_dicom(ds, rows.ravel(), cols.ravel())
        ijk = np.stack([cols.ravel(), rows.ravel(), np.full(cols.size, k), np.ones(cols.size)])
        world_nifti = (ras @ ijk)[:3].T * [-1, -1, 1]  # RAS -> LPS
        np.testing.assert_allclose(lps, world_nifti, atol=1e-3)
        expected = np.rint(vol[cols, rows, k] * MAX_STORED / peak)
        np.testing.assert_array_equal(ds.pixel_array, expected)


def test_oblique_3d_volume_geometry(tmp_path):
    """A rotated 3D slab: DICOM positions/orientation reproduce Image.affine and the NIfTI affine."""
    angle = np.deg2rad(20)
    read = np.array([np.cos(angle), np.sin(angle), 0.0])
    phase = np.array([-np.sin(angle) * np.cos(0.3), np.cos(angle) * np.cos(0.3), np.sin(0.3)])
    geom = Geometry(fov_mm=(12.0, 60.0, 40.0), position=[[3.0, -7.0, 11.0]], read_dir=read,
                    phase_dir=phase, slice_dir=np.cross(read, phase))
    data = np.random.default_rng(0).random((6, 12, 10)).astype(np.float32)
    image = Image(data, ("z", "y", "x"), geom, Provenance("zerofill", input_sha256="ab" * 32))
    name = write_image(tmp_path / "s.zarr", image)
    nifti = write_nifti(open_series(tmp_path / "s.zarr", name), tmp_path / "v.nii")
    (folder,) = export_dicom(tmp_path / "s.zarr", tmp_path / "dcm", deidentify=True)
    files = sorted(folder.glob("*.dcm"))
    assert_valid(files)
    series = read_series(folder)
    ras = nib.load(nifti).affine
    assert series[0].MRAcquisitionType == "3D"
    assert float(series[0].SliceThickness) == pytest.approx(2.0) == float(series[0].SpacingBetweenSlices)
    for k, ds in enumerate(series):
        lps = voxel_world_dicom(ds, np.array([0, 11, 5]), np.array([0, 0, 9]))
        ijk = np.array([[0, 0, 9], [0, 11, 5], [k] * 3, [1, 1, 1]])
        np.testing.assert_allclose(lps, (ras @ ijk)[:3].T * [-1, -1, 1], atol=1e-3)


def test_uids_are_deterministic_and_follow_the_recipe(recon_store):
    image = open_series(recon_store.store, recon_store.series)
    first = build_series(image, deidentify_with="ANONYMOUS")
    again = build_series(image, deidentify_with="ANONYMOUS")
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    assert first[0].SeriesInstanceUID == again[0].SeriesInstanceUID
    changed = dataclasses.replace(image, provenance=dataclasses.replace(image.provenance, parameters={"lam": 0.1}))
    other = build_series(changed, deidentify_with="ANONYMOUS")
    assert other[0].SeriesInstanceUID != first[0].SeriesInstanceUID
    assert not {d.SOPInstanceUID for d in other} & {d.SOPInstanceUID for d in first}
    assert other[0].StudyInstanceUID == first[0].StudyInstanceUID  # same input, same study
    assert other[0].FrameOfReferenceUID == first[0].FrameOfReferenceUID
    for uid in (first[0].SeriesInstanceUID, first[0].SOPInstanceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64


def test_window_covers_the_stored_range(recon_store):
    series = build_series(open_series(recon_store.store, recon_store.series))
    stored = np.stack([d.pixel_array for d in series])
    assert stored.max() == MAX_STORED and stored.dtype == np.uint16
    centre, width = float(series[0].WindowCenter), float(series[0].WindowWidth)
    lo, hi = np.percentile(stored, [1.0, 99.5])
    assert centre == pytest.approx((lo + hi) / 2, rel=1e-3) and width == pytest.approx(hi - lo, rel=1e-3)


def test_identified_export_needs_the_matching_raw_file(recon_store, tmp_path, capsys):
    assert main(["export", str(recon_store.store), "--dicom", str(tmp_path)]) == 2
    assert "--raw" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    other.write_bytes(recon_store.raw.read_bytes() + b"\0")  # different bytes, different sha256
    with pytest.raises(InputError, match="sha256"):
        read_patient(other, open_series(recon_store.store, recon_store.series).provenance.input_sha256)
