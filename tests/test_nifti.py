"""NIfTI export: RAS affine from LPS geometry, orientation codes, data layout, atomic writes."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mrirecon.data import Geometry, Image, Provenance
from mrirecon.errors import OutputError
from mrirecon.pipelines.nifti import write_nifti


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


@pytest.fixture
def oblique_stack(rng) -> Image:
    """A 3-slice oblique stack, 6x8 in-plane, distinct complex values everywhere."""
    r = _rotation(np.array([0.3, -0.5, 0.8]), 0.4)
    read, phase, normal = r[:, 0], r[:, 1], r[:, 2]
    positions = np.array([10.0, -20.0, 5.0]) + np.outer([-4.0, 0.0, 4.0], normal)
    geom = Geometry(fov_mm=(3.0, 96.0, 60.0), position=positions, read_dir=read, phase_dir=phase, slice_dir=normal)
    data = (rng.standard_normal((3, 8, 6)) + 1j * rng.standard_normal((3, 8, 6))).astype(np.complex64)
    return Image(data, ("slice", "y", "x"), geom, Provenance("zerofill"))


def test_world_coordinates_are_lps_with_xy_negated(tmp_path, oblique_stack):
    path = write_nifti(oblique_stack, tmp_path / "img.nii.gz")
    nii = nib.load(path)
    g = oblique_stack.geometry
    for i, j, k in [(0, 0, 0), (5, 7, 2), (3, 4, 1), (1, 6, 0)]:
        ras = nii.affine @ [i, j, k, 1.0]
        # independent reference: slice centre + in-plane offsets from the grid centre (n//2)
        lps = g.position[k] + (i - 3) * (60.0 / 6) * g.read_dir + (j - 4) * (96.0 / 8) * g.phase_dir
        # sform is stored as float32: measured error 1.5e-6 mm
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-5)
        np.testing.assert_allclose(ras, np.diag([-1, -1, 1, 1]) @ oblique_stack.affine @ [i, j, k, 1.0], atol=1e-5)


def test_qform_and_sform_carry_the_affine(tmp_path, oblique_stack):
    nii = nib.load(write_nifti(oblique_stack, tmp_path / "img.nii"))
    expected = np.diag([-1, -1, 1, 1]) @ oblique_stack.affine
    qform, qcode = nii.get_qform(coded=True)
    sform, scode = nii.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 1)
    np.testing.assert_allclose(sform, expected, atol=1e-5)  # float32 storage: measured 5.5e-7
    np.testing.assert_allclose(qform, expected, atol=1e-5)  # quaternion: measured error 2.8e-6
    assert nii.header.get_xyzt_units()[0] == "mm"


@pytest.mark.parametrize(
    "read, phase, normal, codes",
    [
        ([1, 0, 0], [0, 1, 0], [0, 0, 1], ("L", "P", "S")),  # axial, LPS axes as they are
        ([0, 1, 0], [0, 0, -1], [1, 0, 0], ("P", "I", "L")),  # sagittal
        ([1, 0, 0], [0, 0, -1], [0, 1, 0], ("L", "I", "P")),  # coronal
    ],
)
def test_orientation_codes(tmp_path, read, phase, normal, codes):
    geom = Geometry(fov_mm=(20.0, 64.0, 64.0), read_dir=read, phase_dir=phase, slice_dir=normal)
    img = Image(np.ones((4, 8, 8), np.float32), ("z", "y", "x"), geom)
    nii = nib.load(write_nifti(img, tmp_path / "o.nii.gz"))
    assert nib.aff2axcodes(nii.affine) == codes


def test_data_round_trip_is_magnitude_xyz(tmp_path, oblique_stack):
    nii = nib.load(write_nifti(oblique_stack, tmp_path / "d.nii.gz"))
    out = np.asarray(nii.dataobj)
    assert out.dtype == np.float32 and out.shape == (6, 8, 3)
    np.testing.assert_allclose(out, np.abs(oblique_stack.data).transpose(2, 1, 0), rtol=1e-6)


def test_complex_kept_when_asked_and_extra_dims_follow_space(tmp_path, rng):
    data = (rng.standard_normal((2, 3, 4, 5)) + 1j * rng.standard_normal((2, 3, 4, 5))).astype(np.complex64)
    img = Image(data, ("slice", "echo", "y", "x"), Geometry(position=np.zeros((2, 3)) + [[0, 0, 0], [0, 0, 2]]))
    out = np.asarray(nib.load(write_nifti(img, tmp_path / "c.nii", magnitude=False)).dataobj)
    assert out.dtype == np.complex64 and out.shape == (5, 4, 2, 3)
    assert out[4, 1, 1, 2] == data[1, 2, 1, 4]


def test_single_2d_image_gets_a_unit_z_axis(tmp_path):
    img = Image(np.arange(12, dtype=np.float32).reshape(3, 4), ("y", "x"))
    out = np.asarray(nib.load(write_nifti(img, tmp_path / "s.nii")).dataobj)
    assert out.shape == (4, 3, 1) and out[3, 2, 0] == 11


def test_failed_write_leaves_nothing(tmp_path, oblique_stack):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write NIfTI"):
        write_nifti(oblique_stack, blocker / "img.nii.gz")
    with pytest.raises(OutputError, match=r"\.nii or \.nii\.gz"):
        write_nifti(oblique_stack, tmp_path / "img.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_overwrite_replaces_whole_file(tmp_path, oblique_stack):
    path = tmp_path / "r.nii.gz"
    write_nifti(oblique_stack, path)
    write_nifti(oblique_stack.magnitude(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nii.gz"]
    assert nib.load(path).shape == (6, 8, 3)
