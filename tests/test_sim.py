"""Tests of mrirecon.sim: phantoms, brain object, coil maps, masks, noise and simulated k-space."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.spatial import cKDTree

from mrirecon import sim
from mrirecon.errors import InputError
from mrirecon.kernels import fftc, ifftc
from mrirecon.sim.masks import calibration_box, poisson_disc_radius, poisson_disc_scale
from mrirecon.sim.mni import BRAIN_FOV_MM, CONTRASTS, find_template_dir, read_template_lps


def _index(coord: float, n: int) -> int:
    """Grid index of normalised coordinate ``coord`` (index n//2 is 0, step 2/n)."""
    return int(round(n // 2 + coord * n / 2))


# -- Shepp-Logan -------------------------------------------------------------------------------


def test_shepp_logan_2d_known_values():
    n = 256
    img = sim.shepp_logan((n, n))
    assert img.shape == (n, n) and img.dtype == np.complex64
    assert np.all(img.imag == 0) and img.real.min() == 0.0 and img.real.max() == 1.0

    def at(x: float, y: float) -> float:  # rows run from y = +1 downwards
        return float(img[_index(-y, n), _index(x, n)].real)

    assert at(0.0, 0.0) == pytest.approx(0.2)  # brain matter: 1 - 0.8
    assert at(0.22, 0.0) == pytest.approx(0.0)  # right ventricle: 1 - 0.8 - 0.2
    assert at(-0.22, 0.0) == pytest.approx(0.0)  # left ventricle
    assert at(0.0, 0.35) == pytest.approx(0.3)  # ellipse 5 on brain matter
    assert at(0.0, 0.9) == pytest.approx(1.0)  # skull: inside ellipse 1, outside ellipse 2
    assert at(0.0, -0.9) == pytest.approx(1.0)
    assert at(0.9, 0.9) == 0.0  # background


def test_shepp_logan_mirror_symmetry_of_upper_half():
    # Above y = 0.45 only the centred ellipses 1, 2 and 5 exist: left-right mirror symmetric about x = 0
    # (column n//2 - j mirrors n//2 + j). The full image is not symmetric (ventricles differ).
    n = 128
    img = sim.shepp_logan((n, n), dtype=np.float32)
    upper = img[: _index(-0.45, n), 1:]
    np.testing.assert_array_equal(upper, upper[:, ::-1])
    full = img[:, 1:]
    assert not np.array_equal(full, full[:, ::-1])


def test_shepp_logan_3d_middle_slice_close_to_2d():
    n = 64
    vol = sim.shepp_logan((n, n, n), dtype=np.float32)
    assert vol.shape == (n, n, n) and vol.min() == 0.0 and vol.max() == 1.0
    differ = np.mean(np.abs(vol[n // 2] - sim.shepp_logan((n, n), dtype=np.float32)) > 1e-6)
    # The 3D table tilts the ventricles by an extra 10 degrees and ellipse 5 is centred off-slice:
    # measured 2.66 % of pixels differ at 64^3 (2.63 % at 128^3).
    assert differ < 0.03
    # Ellipses 6 and 7 sit at z = 0.25 in 3D: the 0.3-valued spot at (x, y) = (0, 0.1) of the 2D
    # phantom is there, not in the middle plane.
    spot = (_index(-0.1, n), n // 2)
    assert sim.shepp_logan((n, n), dtype=np.float32)[spot] == pytest.approx(0.3)
    assert vol[(n // 2, *spot)] == pytest.approx(0.2)
    assert vol[(_index(0.25, n), *spot)] == pytest.approx(0.3)


def test_shepp_logan_rejects_bad_shape():
    with pytest.raises(InputError):
        sim.shepp_logan((8,))


# -- brain ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template():
    """The template maps and voxel size, or skip when no copy exists anywhere."""
    try:
        folder = find_template_dir()
    except InputError as exc:
        pytest.skip(f"no MNI152 template: {exc}")
    return read_template_lps(folder)


def test_brain_tissue_contrast(template):
    maps, voxel = template
    # With a FOV/voxel-sized grid the output voxels fall exactly on template voxels (no smoothing).
    n = int(round(BRAIN_FOV_MM / voxel))
    nz = maps["gm"].shape[0]
    k = nz // 2
    gm = maps["gm"][k] / 255.0
    wm = maps["wm"][k] / 255.0
    offsets = [n // 2 - (s - 1) // 2 for s in gm.shape]
    for contrast, (v_gm, v_wm, v_csf) in CONTRASTS.items():
        img = np.abs(sim.brain((n, n), slice_position=k / (nz - 1), contrast=contrast))
        plane = img[offsets[0] : offsets[0] + gm.shape[0], offsets[1] : offsets[1] + gm.shape[1]]
        assert np.median(plane[gm > 0.95]) == pytest.approx(v_gm, abs=0.03)
        assert np.median(plane[wm > 0.95]) == pytest.approx(v_wm, abs=0.03)
        # Ventricles: inside the brain, no GM or WM, away from the outer surface.
        inner = np.zeros_like(gm, dtype=bool)
        inner[gm.shape[0] // 3 : 2 * gm.shape[0] // 3, gm.shape[1] // 3 : 2 * gm.shape[1] // 3] = True
        ventricle = inner & (gm + wm < 0.02) & (maps["t1"][k] > 0)
        assert ventricle.sum() > 20
        assert np.median(plane[ventricle]) == pytest.approx(v_csf, abs=0.03)
    assert np.abs(sim.brain((64, 64))).max() <= 1.0


def test_brain_volume_matches_slice_and_phase_is_smooth(template):
    _, voxel = template
    n = int(round(BRAIN_FOV_MM / voxel))
    vol = sim.brain((n, n, n))
    assert vol.shape == (n, n, n) and vol.dtype == np.complex64
    # Mid-volume plane = the 2D slice at the template centre (same grid, same phase at z = 0).
    np.testing.assert_allclose(vol[n // 2], sim.brain((n, n), slice_position=0.5), atol=1e-6)
    img = sim.brain((128, 128))
    inside = np.abs(img) > 0.1
    step = np.angle(img[:, 1:] * np.conj(img[:, :-1]))[inside[:, 1:] & inside[:, :-1]]
    assert np.abs(step).max() < 0.05  # measured 0.022 rad per pixel at 128^2
    assert np.ptp(np.angle(img[inside])) > 0.5  # a real phase variation, not a constant


def test_brain_orientation_cerebellum_posterior_inferior(template):
    vol = np.abs(sim.brain((64, 64, 64)))
    # Mid-sagittal plane (z, y): near the bottom the cerebellum lies behind (rows y > 32 are
    # posterior). Measured mean signal 0.08 anterior vs 0.28 posterior.
    low = vol[14:22, :, 32]
    assert low[:, 32:].mean() > 2 * low[:, :32].mean()


def test_read_template_lps_orients_nifti(tmp_path):
    import nibabel as nib

    from mrirecon.sim.mni import TEMPLATE_FILES

    # A 5 x 6 x 7 RAS volume with one bright voxel at the right-most, anterior-most, lowest corner.
    data = np.zeros((5, 6, 7), dtype=np.uint8)
    data[4, 5, 0] = 200
    for name in TEMPLATE_FILES.values():
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / name)
    maps, voxel = read_template_lps(tmp_path)
    assert voxel == 2.0
    # (z, y, x) with x -> left and y -> posterior: right-most is x = 0, anterior-most is y = 0.
    assert maps["t1"].shape == (7, 6, 5) and maps["t1"][0, 0, 0] == 200
    # Probability maps stored as float (0-1) are rescaled to the uint8 range.
    nib.save(nib.Nifti1Image(data.astype(np.float32) / 400, np.eye(4)), tmp_path / TEMPLATE_FILES["gm"])
    assert read_template_lps(tmp_path)[0]["gm"][0, 0, 0] == 255


def test_template_lookup_order(tmp_path, monkeypatch):
    from mrirecon.sim import mni

    shipped, shared = tmp_path / "shipped", tmp_path / "raw"
    (shared / "mni152-nilearn").mkdir(parents=True)
    shipped.mkdir()
    monkeypatch.setattr(mni, "SHIPPED_DIR", shipped)
    monkeypatch.setenv("MRIRECON_SHARED_RAW", str(shared))
    with pytest.raises(InputError) as err:
        find_template_dir()
    assert str(shipped) in str(err.value) and str(shared / "mni152-nilearn") in str(err.value)
    np.savez(shared / "mni152-nilearn" / mni.SAMPLE_FILE, voxel_mm=2.0)
    assert find_template_dir() == shared / "mni152-nilearn"
    np.savez(shipped / mni.SAMPLE_FILE, voxel_mm=2.0)
    assert find_template_dir() == shipped
    assert find_template_dir(shared / "mni152-nilearn") == shared / "mni152-nilearn"
    with pytest.raises(InputError, match="not a reduced MNI152 template"):
        read_template_lps(shipped)  # the stand-in file has no maps


@pytest.mark.realdata
def test_brain_shipped_copy_matches_full_template(shared_raw):
    from mrirecon.sim.mni import SHIPPED_DIR

    full_dir = shared_raw / "mni152-nilearn"
    if not (SHIPPED_DIR / "mni152_2mm.npz").is_file() or not full_dir.is_dir():
        pytest.skip("needs both the shipped 2 mm copy and the full 1 mm template")
    for position in (0.3, 0.7):
        full = np.abs(sim.brain((96, 96), template_dir=full_dir, slice_position=position))
        reduced = np.abs(sim.brain((96, 96), template_dir=SHIPPED_DIR, slice_position=position))
        assert np.corrcoef(full.ravel(), reduced.ravel())[0, 1] > 0.99  # measured 0.9970, 0.9978


def test_brain_missing_template_names_where_it_looked(tmp_path):
    with pytest.raises(InputError) as err:
        sim.brain((32, 32), template_dir=tmp_path)
    assert str(tmp_path) in str(err.value)


# -- coil maps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, low_fraction", [((96, 80), 0.96), ((24, 40, 32), 0.92)])
def test_birdcage_maps_unit_sum_of_squares_and_smooth(shape, low_fraction):
    maps = sim.birdcage_maps(8, shape)
    assert maps.shape == (8, *shape) and maps.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=0), 1.0, atol=1e-5)  # measured 2.4e-7
    # Smooth: each map's energy sits in the lowest 1/8 of k-space (|k| <= n/16 per axis, at least 2).
    # Measured minimum over coils 0.969 (2D) and 0.933 (3D); a Shepp-Logan has 0.55 and 0.40.
    axes = tuple(range(1, maps.ndim))
    energy = np.abs(fftc(maps, axes=axes)) ** 2
    low = (slice(None),) + tuple(slice(n // 2 - max(n // 16, 2), n // 2 + max(n // 16, 2) + 1) for n in shape)
    assert np.all(energy[low].sum(axis=axes) / energy.sum(axis=axes) > low_fraction)
    # Coils differ: the maps are linearly independent at every voxel pair-wise (no duplicates).
    flat = maps.reshape(8, -1)
    corr = np.abs(flat @ flat.conj().T) / np.outer(np.linalg.norm(flat, axis=1), np.linalg.norm(flat, axis=1))
    assert corr[~np.eye(8, dtype=bool)].max() < 0.99


def test_birdcage_unnormalised_follows_line_current_field():
    n = 64
    maps = sim.birdcage_maps(4, (n, n), radius=1.5, normalize=False)
    # Coil 0 sits at (x, y) = (1.5, 0); |S| = 1 / distance in normalised units.
    for x, y in [(0.0, 0.0), (0.5, 0.25), (-0.75, -0.5)]:
        dist = np.hypot(x - 1.5, y)
        assert abs(maps[0, _index(-y, n), _index(x, n)]) == pytest.approx(1 / dist, rel=1e-5)
    # Coil 1 is at 90 degrees: (0, 1.5), brightest at the top rows.
    assert np.abs(maps[1, 0]).mean() > np.abs(maps[1, -1]).mean()


def test_birdcage_3d_rings_along_z():
    maps = sim.birdcage_maps(8, (32, 32, 32), n_rings=2)
    lower = np.sum(np.abs(maps[:, :16]) ** 2, axis=(1, 2, 3))
    upper = np.sum(np.abs(maps[:, 16:]) ** 2, axis=(1, 2, 3))
    assert np.all(lower[:4] > upper[:4]) and np.all(upper[4:] > lower[4:])


def test_birdcage_rejects_bad_arguments():
    with pytest.raises(InputError):
        sim.birdcage_maps(8, (32, 32), n_rings=2)
    with pytest.raises(InputError):
        sim.birdcage_maps(6, (8, 32, 32), n_rings=4)
    with pytest.raises(InputError):
        sim.birdcage_maps(8, (32, 32), radius=1.4)  # inside the grid's corners


# -- masks -----------------------------------------------------------------------------------------


def _accel(mask: np.ndarray) -> float:
    return mask.size / mask.sum()


@pytest.mark.parametrize("accel", [2, 4, 8])
def test_poisson_disc_acceleration_calibration_and_seed(accel):
    shape = (320, 320)
    mask = sim.poisson_disc_mask(shape, accel, calib=(24, 24), seed=0)
    assert mask.dtype == bool and mask.shape == shape
    # The scale search stops inside 1 %; measured <= 0.99 % over 72 masks (4 shapes, R = 2..12).
    assert _accel(mask) == pytest.approx(accel, rel=0.01)
    assert mask[calibration_box(shape, (24, 24))].all()
    np.testing.assert_array_equal(mask, sim.poisson_disc_mask(shape, accel, calib=(24, 24), seed=0))
    assert not np.array_equal(mask, sim.poisson_disc_mask(shape, accel, calib=(24, 24), seed=1))


def test_poisson_disc_is_fast():
    sim.poisson_disc_mask((64, 64), 4)  # compile (numba caches to disk)
    start = time.perf_counter()
    sim.poisson_disc_mask((320, 320), 4)
    assert time.perf_counter() - start < 1.0  # measured 0.27 s on one shared core


def test_poisson_disc_minimum_distance():
    shape, accel, calib = (256, 256), 8, (24, 24)
    radius = poisson_disc_radius(shape, poisson_disc_scale(shape, accel, calib))
    sqrt2 = np.sqrt(2.0)

    def closest_pair_margin(mask: np.ndarray) -> float:
        """min over pairs of |p - q| - (min(r_p, r_q) - sqrt 2), calibration box excluded."""
        mask = mask.copy()
        mask[calibration_box(shape, calib)] = False
        pts = np.argwhere(mask)
        pairs = np.array(sorted(cKDTree(pts).query_pairs(radius.max())))
        d = np.linalg.norm(pts[pairs[:, 0]] - pts[pairs[:, 1]], axis=1)
        r = np.minimum(radius[tuple(pts[pairs[:, 0]].T)], radius[tuple(pts[pairs[:, 1]].T)])
        return float((d - (r - sqrt2)).min())

    # Off-grid points keep |p - q| >= r; rounding each to the grid moves a pair by <= sqrt 2.
    assert closest_pair_margin(sim.poisson_disc_mask(shape, accel, calib, seed=0)) >= 0  # measured 0.43
    # The check can fail: a uniform random mask of the same density breaks it (measured -1.37).
    random = np.random.default_rng(0).random(shape) < 1 / accel
    assert closest_pair_margin(random) < 0
    # Variable density: the radius grows, so the centre is sampled more densely than the edge.
    mask = sim.poisson_disc_mask(shape, accel, calib, seed=0)
    assert mask[96:160, 96:160].mean() > 2 * mask[:32].mean()


def test_poisson_disc_rejects_bad_input():
    with pytest.raises(InputError):
        sim.poisson_disc_mask((16, 16, 16), 4)
    with pytest.raises(InputError):
        sim.poisson_disc_mask((32, 32), 0.5)
    with pytest.raises(InputError):
        sim.poisson_disc_mask((32, 32), 8, calib=(24, 24))


def test_variable_density_mask():
    shape = (200, 180)
    mask = sim.variable_density_mask(shape, 5, calib=(20, 16), seed=3)
    assert mask.dtype == bool and mask.sum() == round(mask.size / 5)
    assert mask[calibration_box(shape, (20, 16))].all()
    np.testing.assert_array_equal(mask, sim.variable_density_mask(shape, 5, (20, 16), 3))
    assert not np.array_equal(mask, sim.variable_density_mask(shape, 5, (20, 16), 4))
    # (1 - rho)^2 density: a ring near the centre is sampled far more than one near the edge
    # (measured 0.39 vs 0.11; a uniform random mask gives a ratio near 1).
    ky, kx = np.meshgrid((np.arange(200) - 100) / 100, (np.arange(180) - 90) / 90, indexing="ij")
    rho = np.hypot(ky, kx) / np.sqrt(2)
    inner = mask[(rho >= 0.2) & (rho < 0.3)].mean()
    outer = mask[(rho >= 0.6) & (rho < 0.7)].mean()
    assert inner > 3 * outer
    lines = sim.variable_density_mask((128, 1), 4, calib=(16, 1), seed=0)
    assert lines.shape == (128, 1) and lines.sum() == 32 and lines[56:72].all()


def test_equispaced_mask_2d_and_3d():
    mask = sim.equispaced_mask((100, 64), 4, calib=20)
    sampled = np.flatnonzero(mask[:, 0])
    expected = set(range(50 % 4, 100, 4)) | set(range(40, 60))
    assert set(sampled) == expected and mask.all(axis=1)[sampled].all()
    assert (mask.any(axis=1) == mask.all(axis=1)).all()  # full readout lines
    vol = sim.equispaced_mask((32, 48, 40), (2, 3), calib=(8, 12))
    kz = np.isin(np.arange(32), list(range(16 % 2, 32, 2)))
    ky = np.isin(np.arange(48), list(range(24 % 3, 48, 3)))
    box = np.zeros((32, 48), dtype=bool)
    box[12:20, 18:30] = True
    np.testing.assert_array_equal(vol, ((kz[:, None] & ky[None, :]) | box)[:, :, None] & np.ones(40, bool))
    with pytest.raises(InputError):
        sim.equispaced_mask((32, 32), (2, 2), axis=(0,))


# -- noise -------------------------------------------------------------------------------------------


def test_add_noise_statistics():
    sigma = 0.5
    x = np.zeros(200_000, dtype=np.complex64)
    noisy = sim.add_noise(x, sigma, seed=7)
    assert noisy.dtype == np.complex64
    # Measured |relative error| <= 0.0051 over 5 seeds of 200k samples.
    assert noisy.var() == pytest.approx(sigma**2, rel=0.01)
    assert noisy.real.var() == pytest.approx(sigma**2 / 2, rel=0.01)
    assert noisy.imag.var() == pytest.approx(sigma**2 / 2, rel=0.01)
    assert abs(np.mean(noisy * noisy)) < 0.01 * sigma**2  # circular: E[n^2] = 0
    np.testing.assert_array_equal(noisy, sim.add_noise(x, sigma, seed=7))
    np.testing.assert_array_equal(sim.add_noise(x[:10] + 1, 0.0), x[:10] + 1)


def test_add_noise_coil_covariance():
    cov = np.array([[1.0, 0.3 + 0.2j, 0.1], [0.3 - 0.2j, 0.8, 0.2j], [0.1, -0.2j, 1.2]])
    x = np.zeros((100_000, 3), dtype=np.complex64)
    noise = sim.add_noise(x, 0.5, seed=1, covariance=cov, coil_axis=1)
    sample = noise.T @ noise.conj() / noise.shape[0]
    # Relative Frobenius error measured <= 0.0051 over 5 seeds of 100k samples.
    assert np.linalg.norm(sample - 0.25 * cov) / np.linalg.norm(0.25 * cov) < 0.01
    with pytest.raises(InputError):
        sim.add_noise(x, 0.5, covariance=np.eye(2))
    with pytest.raises(InputError):
        sim.add_noise(x, 0.5, covariance=-np.eye(3), coil_axis=1)


# -- simulate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 48), (16, 32, 24)])
def test_simulate_fully_sampled_inverts_to_image(shape):
    img = sim.shepp_logan(shape) * np.exp(1j * np.linspace(0, 1, shape[-1])).astype(np.complex64)
    maps = sim.birdcage_maps(6, shape)
    ksp = sim.simulate(img, maps)
    spatial = ("ky", "kx") if len(shape) == 2 else ("kz", "ky", "kx")
    assert ksp.dims == ("coil", *spatial) and ksp.data.shape == (6, *shape)
    assert ksp.mask is None and ksp.noise is None
    axes = tuple(range(1, len(shape) + 1))
    recon = np.sum(np.conj(maps) * ifftc(ksp.data, axes=axes), axis=0)
    np.testing.assert_allclose(recon, img, atol=2e-6)  # float32 round trip; measured ~3e-7
    h = ksp.header
    assert h.encoded_matrix == h.recon_matrix == ((1,) * (3 - len(shape)) + shape)
    assert h.acceleration == (1, 1) and h.sequence.trajectory == "cartesian"
    assert h.patient.name == "PHANTOM^SIMULATED" and h.patient.id == "SIM0001"
    # Axial, centred at the isocentre: voxel index n//2 maps to (0, 0, 0) LPS.
    centre = [shape[-1] // 2, shape[-2] // 2, shape[0] // 2 if len(shape) == 3 else 0, 1]
    np.testing.assert_allclose(h.geometry.affine(shape) @ centre, [0, 0, 0, 1])
    assert h.geometry.fov_mm == ((5.0,) if len(shape) == 2 else (BRAIN_FOV_MM,)) + (BRAIN_FOV_MM,) * 2


def test_simulate_mask_noise_and_header():
    shape, sigma = (96, 96), 0.05
    img = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(4, shape)
    mask = sim.poisson_disc_mask(shape, 4, calib=(16, 16), seed=2)
    clean = sim.simulate(img, maps, mask)
    noisy = sim.simulate(img, maps, mask, noise_sigma=sigma, seed=5, fov_mm=(220.0, 200.0), noise_scans=4000)
    assert np.all(noisy.data[:, ~mask] == 0)  # noise only on acquired samples
    diff = (noisy.data - clean.data)[:, mask]
    assert diff.var() == pytest.approx(sigma**2, rel=0.05)  # 4 x ~2300 samples; measured 1.6 %
    assert np.array_equal(noisy.mask, mask)
    assert noisy.noise.shape == (4, 4000)
    assert noisy.noise.var() == pytest.approx(sigma**2, rel=0.05)
    h = noisy.header
    assert h.calibration_shape == (16, 16) and h.acceleration == (1, 4)
    assert h.extra["achieved_acceleration"] == pytest.approx(4, rel=0.01)
    assert h.geometry.fov_mm == (5.0, 220.0, 200.0)


def test_simulate_noise_scans_share_covariance():
    cov = np.array([[1.0, 0.5j], [-0.5j, 2.0]])
    img = sim.shepp_logan((32, 32))
    ksp = sim.simulate(img, sim.birdcage_maps(2, (32, 32)), noise_sigma=0.1, noise_covariance=cov, noise_scans=50_000)
    sample = ksp.noise @ ksp.noise.conj().T / ksp.noise.shape[1]
    assert np.linalg.norm(sample - 0.01 * cov) / np.linalg.norm(0.01 * cov) < 0.015  # measured 0.004


def test_simulate_3d_equispaced_header():
    shape = (32, 40, 24)
    mask = sim.equispaced_mask(shape, (2, 2), calib=(8, 8))
    ksp = sim.simulate(sim.shepp_logan(shape), sim.birdcage_maps(8, shape), mask)
    assert ksp.header.acceleration == (2, 2)
    # The box cannot grow: the next kz plane holds only every other ky line (and vice versa).
    assert ksp.header.calibration_shape == (8, 8, 24)
    assert ksp.header.kspace_centre == (16, 20, 12)


def test_simulate_rejects_mismatched_inputs():
    img = sim.shepp_logan((32, 32))
    with pytest.raises(InputError):
        sim.simulate(img, sim.birdcage_maps(4, (32, 30)))
    with pytest.raises(InputError):
        sim.simulate(img, sim.birdcage_maps(4, (32, 32)), mask=np.ones((31, 32), bool))
    with pytest.raises(InputError):
        sim.simulate(img, sim.birdcage_maps(4, (32, 32)), noise_scans=-1)


@pytest.mark.gpu
def test_simulate_on_gpu_matches_cpu():
    import cupy

    shape = (48, 40)
    img = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(4, shape)
    mask = sim.poisson_disc_mask(shape, 3, calib=(12, 12), seed=0)
    cpu = sim.simulate(img, maps, mask, noise_sigma=0.01, seed=3, noise_scans=16)
    gpu = sim.simulate(cupy.asarray(img), cupy.asarray(maps), mask, noise_sigma=0.01, seed=3, noise_scans=16)
    assert gpu.device.startswith("cuda") and isinstance(gpu.mask, cupy.ndarray)
    # Same random draws on both devices; only FFT rounding differs. The tolerance is a float32
    # estimate (|k| <= ~10 here), not yet measured on a GPU.
    np.testing.assert_allclose(cupy.asnumpy(gpu.data), cpu.data, atol=1e-5)
    np.testing.assert_array_equal(cupy.asnumpy(gpu.noise), cpu.noise)


def test_template_ships_in_the_wheel_beside_mni_module():
    """pyproject installs ``sample_data/mni152`` as package ``mrirecon.sim.mni152``: the folder that a
    wheel install looks in first (checked by hand with ``pip wheel .``: the wheel holds the .npz)."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from mrirecon.sim import mni

    root = Path(__file__).resolve().parents[1]
    setuptools_cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "mrirecon.sim.mni152" in setuptools_cfg["packages"]
    source = root / setuptools_cfg["package-dir"]["mrirecon.sim.mni152"]
    assert (source / mni.SAMPLE_FILE).is_file() and (source / "LICENSE.md").is_file()
    shipped = setuptools_cfg["package-data"]["mrirecon.sim.mni152"]
    assert all(any(fnmatch.fnmatch(name, p) for p in shipped) for name in (mni.SAMPLE_FILE, "LICENSE.md"))
    assert mni._PACKAGE_DIR == Path(mni.__file__).resolve().parent / "mni152"
