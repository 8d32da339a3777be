"""Coil tools: RSS, calibration-region detection, ESPIRiT maps against known simulated coil maps."""
from __future__ import annotations

import numpy as np
import pytest

from mrirecon import sim
from mrirecon.coils import calibration_region, espirit_maps, fully_sampled_centre, rss, sampled_mask
from mrirecon.errors import InputError


def _phase_normalised(maps: np.ndarray) -> np.ndarray:
    """Maps with coil 0 made real and positive: ESPIRiT fixes the phase the same way."""
    return maps * np.conj(maps[:1]) / np.abs(maps[:1])


def _relative_error(est: np.ndarray, ref: np.ndarray, where: np.ndarray) -> float:
    return float(np.linalg.norm(est[:, where] - ref[:, where]) / np.linalg.norm(ref[:, where]))


def test_rss_matches_definition(rng):
    x = (rng.standard_normal((4, 5, 6)) + 1j * rng.standard_normal((4, 5, 6))).astype(np.complex64)
    np.testing.assert_allclose(rss(x), np.sqrt((np.abs(x.astype(np.complex128)) ** 2).sum(0)), rtol=1e-6)
    np.testing.assert_allclose(rss(x, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)
    assert rss(x).dtype == np.float32


def test_calibration_region_detects_acs_lines():
    ny, nx = 64, 40
    mask = np.zeros((ny, nx), bool)
    mask[::4] = True  # R=4 lines: 24 and 28 sampled, 26 and 37 not
    mask[27:37] = True  # 10 ACS lines around the centre (index 32)
    assert fully_sampled_centre(mask) == (10, nx)
    ksp = np.arange(3 * ny * nx, dtype=np.complex64).reshape(3, ny, nx) * mask
    np.testing.assert_array_equal(calibration_region(ksp), ksp[:, 27:37])  # from the non-zero samples
    np.testing.assert_array_equal(calibration_region(ksp, mask=mask), ksp[:, 27:37])
    np.testing.assert_array_equal(calibration_region(ksp, 8), ksp[:, 28:36, 16:24])
    assert calibration_region(ksp, (4, 100)).shape == (3, 4, nx)  # clipped to the matrix
    assert fully_sampled_centre(np.zeros((8, 8), bool)) == (0, 0)
    np.testing.assert_array_equal(sampled_mask(ksp), mask)


def test_espirit_recovers_birdcage_maps_2d(phantom_r4):
    image, maps, ksp = phantom_r4
    est = espirit_maps(ksp.data, mask=ksp.mask)
    assert est.shape == maps.shape and est.dtype == np.complex64
    inside = np.abs(image) > 0
    # measured relative error 0.0068 inside the object (0.0055 without noise: most of the residual
    # is the finite kernel's smoothing of the 1/r coil fields)
    assert _relative_error(est, _phase_normalised(maps), inside) < 0.0075
    np.testing.assert_allclose(np.sum(np.abs(est[:, inside]) ** 2, axis=0), 1.0, atol=1e-4)  # unit norm
    assert not est[:, 0, 0].any()  # the empty corner is cropped away (eigenvalue < crop)


def test_espirit_3d_native():
    shape = (16, 32, 32)
    image = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(8, shape)
    est = espirit_maps(sim.simulate(image, maps).data, calib=12, kernel=3)
    # measured relative error 0.0179 inside the object (a small 3^3 kernel from a 12^3 centre keeps
    # the test fast; a 4^3 kernel gives 0.0109)
    assert _relative_error(est, _phase_normalised(maps), np.abs(image) > 0) < 0.019


def test_espirit_needs_a_calibration_region(rng):
    ksp = np.zeros((4, 32, 32), np.complex64)
    ksp[:, ::2] = 1.0  # no fully sampled centre: every other line
    with pytest.raises(InputError, match="smaller than the ESPIRiT kernel"):
        espirit_maps(ksp)


@pytest.mark.gpu
def test_espirit_on_gpu_matches_cpu(phantom_r4):
    import cupy as cp

    _, _, ksp = phantom_r4
    cpu = espirit_maps(ksp.data, mask=ksp.mask)
    gpu = espirit_maps(cp.asarray(ksp.data), mask=cp.asarray(ksp.mask))
    assert isinstance(gpu, cp.ndarray)
    assert _relative_error(cp.asnumpy(gpu), cpu, np.abs(cpu).sum(0) > 0) < 1e-4
