"""Patient geometry from the Siemens slice array: synthetic oblique/rotated slices with known answers,
the MDH quaternions of every real twix file, and the affine of a reconstructed twix image."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("twixtools")

from mrirecon.io import read
from mrirecon.io.twix import (
    TwixFile,
    quaternion_directions,
    slice_array_geometry,
    slice_directions,
)


@pytest.mark.parametrize("normal, read_dir, phase_dir", [
    # standard orientations: transverse reads right->left reversed (-x), phase A->P; coronal/sagittal phase along x / y
    ((0, 0, 1), (-1, 0, 0), (0, 1, 0)),
    ((0, 1, 0), (0, 0, -1), (1, 0, 0)),
    ((1, 0, 0), (0, 0, 1), (0, 1, 0)),
])
def test_main_orientations(normal, read_dir, phase_dir):
    r, p, s = slice_directions(normal)
    np.testing.assert_allclose(r, read_dir, atol=1e-12)
    np.testing.assert_allclose(p, phase_dir, atol=1e-12)
    np.testing.assert_allclose(s, normal, atol=1e-12)


def test_oblique_tilt_and_inplane_rotation():
    """Transverse tilted 30 deg about x (towards coronal), then rotated 90 deg in plane."""
    t = np.deg2rad(30)
    normal = np.array([0.0, -np.sin(t), np.cos(t)])
    r, p, s = slice_directions(normal)
    np.testing.assert_allclose(p, [0, np.cos(t), np.sin(t)], atol=1e-12)  # phase stays in the y-z plane, normal to s
    np.testing.assert_allclose(r, [-1, 0, 0], atol=1e-12)
    r90, p90, _ = slice_directions(normal, np.pi / 2)
    np.testing.assert_allclose(p90, -r, atol=1e-12)  # +90 deg turns phase onto -read
    np.testing.assert_allclose(r90, p, atol=1e-12)
    for angle in np.linspace(-np.pi, np.pi, 7):  # always a right-handed orthonormal frame (phase, read, slice)
        r, p, s = slice_directions(normal, angle)
        np.testing.assert_allclose(np.stack([p, r, s], axis=1).T @ np.stack([p, r, s], axis=1), np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(np.stack([p, r, s], axis=1)), 1.0)


def test_affine_of_an_oblique_stack_maps_voxels_to_known_points():
    t = np.deg2rad(20)
    normal = np.array([np.sin(t), 0.0, np.cos(t)])  # transverse tilted towards sagittal
    centre = np.array([10.0, -20.0, 30.0])
    entry = {"sNormal": dict(zip(("dSag", "dCor", "dTra"), normal)), "dInPlaneRot": 0.3,
             "dThickness": 3.0, "dPhaseFOV": 200.0, "dReadoutFOV": 250.0}
    slices = [dict(entry, sPosition=dict(zip(("dSag", "dCor", "dTra"), centre + k * 5.0 * normal))) for k in range(3)]
    geo = slice_array_geometry(slices, [2, 1, 0])  # counter order descends along the normal
    affine = geo.affine((3, 100, 125))
    read_dir, phase_dir, _ = slice_directions(normal, 0.3)
    # voxel (x=62 + 1, y=50, slice 0) is one 2 mm readout step from the centre of protocol slice 2
    np.testing.assert_allclose(affine @ [63, 50, 0, 1], [*(centre + 10 * normal + 2.0 * read_dir), 1], atol=1e-9)
    np.testing.assert_allclose(affine @ [62, 51, 2, 1], [*(centre + 2.0 * phase_dir), 1], atol=1e-9)
    np.testing.assert_allclose(affine @ [62, 50, 1, 1], [*(centre + 5 * normal), 1], atol=1e-9)


def test_patient_position_does_not_change_lps():
    """Protocol positions/normals are patient coordinates: same directions whatever the table position."""
    r1, p1, _ = slice_directions((0.1, 0.2, 0.97), 0.2)
    r2, p2, _ = slice_directions(np.array((0.1, 0.2, 0.97)) * 3, 0.2)  # unnormalised input, same answer
    np.testing.assert_allclose((r1, p1), (r2, p2), atol=1e-12)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::mrirecon.io.twix.PulseqSequenceMissing")  # Pulseq scans without a .seq
def test_protocol_directions_match_mdh_quaternions_of_real_files(shared_raw):
    """Independent check: the scanner's own per-line quaternion gives the same frame in all 16 files."""
    files = sorted(shared_raw.glob("*/*.dat"))
    assert len(files) >= 16
    for path in files:
        raw = TwixFile(path)
        table = raw._table
        row = raw._plan().imaging[0]
        geo = raw._slice_geometry(raw._plan())
        qr, qp, qs = quaternion_directions(table.quaternion[row])
        for ours, theirs in ((geo.read_dir, qr), (geo.phase_dir, qp), (geo.slice_dir, qs)):
            np.testing.assert_allclose(ours, theirs, atol=2e-4, err_msg=path.name)


@pytest.mark.realdata
def test_oblique_real_image_affine(shared_raw):
    """gre.dat: oblique slice; the image centre voxel sits at the protocol position, voxel size 1.25 mm."""
    from mrirecon import recon

    ksp = read(shared_raw / "twixtools-phantom/gre.dat")
    image = recon(ksp, "zerofill", device="cpu")
    affine = image.affine
    np.testing.assert_allclose(affine[:3, 3] + affine[:3, :3] @ [80, 80, 0], [-2.58969998377, 53.9224264395, -53.9994745263], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [1.25, 1.25, 4.0], atol=1e-9)
    np.testing.assert_allclose(affine[:3, 2] / 4.0, [6.58423005e-09, 0.0383878015, 0.9992629886], atol=1e-6)
