"""Walsh and Inati adaptive coil maps against known birdcage maps, against each other, and in SENSE."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.ndimage

from mrirecon import sim
from mrirecon.coils import (
    box_smooth,
    calibration_images,
    coil_maps,
    inati_maps,
    walsh_maps,
)
from mrirecon.errors import InputError
from mrirecon.reconstruction import recon

ADAPTIVE = {"walsh": walsh_maps, "inati": inati_maps}


def _phase_normalised(maps: np.ndarray) -> np.ndarray:
    """Maps with coil 0 made real and positive, so that maps with different phase references compare."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return maps * np.conj(maps[:1]) / np.abs(maps[:1])


def _relative_error(est: np.ndarray, ref: np.ndarray, where: np.ndarray) -> float:
    return float(np.linalg.norm(est[:, where] - ref[:, where]) / np.linalg.norm(ref[:, where]))


def _nrmse(x: np.ndarray, truth: np.ndarray) -> float:
    """Magnitude NRMSE after the least-squares scale (as in test_methods)."""
    x, y = np.abs(x).ravel(), np.abs(truth).ravel()
    return float(np.linalg.norm(np.dot(x, y) / np.dot(x, x) * x - y) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def low_res(phantom_r4):
    """Coil images of the 24x24 fully sampled centre of the R=4 phantom."""
    return calibration_images(phantom_r4[2], 24)


@pytest.mark.parametrize("window", [1, 3, 7])
def test_box_smooth_is_a_moving_average(rng, window):
    x = (rng.standard_normal((3, 20, 17)) + 1j * rng.standard_normal((3, 20, 17))).astype(np.complex64)
    ref = scipy.ndimage.uniform_filter(x.real, (1, window, window), mode="nearest") + 1j * scipy.ndimage.uniform_filter(
        x.imag, (1, window, window), mode="nearest"
    )
    np.testing.assert_allclose(box_smooth(x, window, (1, 2)), ref, atol=2e-6)


@pytest.mark.parametrize("name, limit", [("walsh", 0.040), ("inati", 0.040)])
def test_adaptive_maps_recover_birdcage_maps(phantom_r4, low_res, name, limit):
    image, maps, _ = phantom_r4
    est = ADAPTIVE[name](low_res)
    assert est.shape == maps.shape and est.dtype == np.complex64
    inside = np.abs(image) > 0
    # measured relative error inside the object: Walsh 0.0381, Inati 0.0379 (24x24 centre, window 7;
    # the residual is the low resolution and the window reaching over the object's edge)
    assert _relative_error(_phase_normalised(est), _phase_normalised(maps), inside) < limit
    np.testing.assert_allclose(np.sum(np.abs(est[:, inside]) ** 2, axis=0), 1.0, atol=1e-4)  # unit norm
    assert not est[:, 0, 0].any()  # no signal in the corner: the map is cut there (thresh)


def test_inati_converges_to_the_walsh_eigenvector(phantom_r4, low_res):
    inside = np.abs(phantom_r4[0]) > 0
    # same phase reference, so no normalisation: measured 5.0e-4 after 5 iterations
    assert _relative_error(inati_maps(low_res), walsh_maps(low_res), inside) < 6e-4


@pytest.mark.parametrize("name", ["walsh", "inati"])
def test_adaptive_maps_3d(name):
    shape = (16, 32, 32)
    image = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(8, shape)
    est = ADAPTIVE[name](calibration_images(sim.simulate(image, maps), 12), window=5)
    # measured 0.0350 (Walsh) and 0.0351 (Inati) inside the object from a 12^3 centre
    assert _relative_error(_phase_normalised(est), _phase_normalised(maps), np.abs(image) > 0) < 0.037


@pytest.mark.parametrize("name", ["walsh", "inati"])
def test_sense_with_adaptive_maps_beats_zerofill(phantom_r4, name):
    image, _, ksp = phantom_r4
    out = recon(ksp, "sense", coil_maps=name)
    assert out.provenance.parameters["coil_maps"] == name
    # measured NRMSE: Walsh 0.1296, Inati 0.1295; zero-filled 0.412 and ESPIRiT 0.108 (test_methods)
    assert _nrmse(out.data, image) < 0.135


def test_separate_calibration_scan_gives_the_same_low_res_images(phantom_r4):
    _, _, ksp = phantom_r4
    centre = (slice(None), slice(52, 76), slice(52, 76))  # the 24x24 fully sampled centre
    no_centre = ksp.data.copy()
    no_centre[centre] = 0
    separate = dataclasses.replace(ksp, data=no_centre, mask=None, calibration=ksp.data[centre])
    np.testing.assert_allclose(calibration_images(separate), calibration_images(ksp), atol=1e-7)


def test_bad_requests_name_the_problem(phantom_r4, low_res):
    image, _, ksp = phantom_r4
    with pytest.raises(InputError, match="unknown coil map method 'sos'"):
        coil_maps(ksp, "sos")
    with pytest.raises(InputError, match="unknown coil map method"):
        recon(ksp, "sense", coil_maps="sos")
    with pytest.raises(InputError, match="window must be >= 1"):
        walsh_maps(low_res, window=0)
    with pytest.raises(InputError, match=r"coil images must be \(coil"):
        inati_maps(low_res[0])
    lines = sim.simulate(image, sim.birdcage_maps(4, image.shape), np.arange(128)[:, None] % 2 == 0)
    with pytest.raises(InputError, match="no fully sampled k-space centre"):
        coil_maps(lines, "walsh")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["walsh", "inati"])
def test_adaptive_maps_on_gpu_match_cpu(phantom_r4, name):
    import cupy as cp

    ksp = phantom_r4[2]
    cpu = coil_maps(ksp, name)
    gpu = coil_maps(ksp.to("cuda"), name)
    assert isinstance(gpu, cp.ndarray)
    assert _relative_error(cp.asnumpy(gpu), cpu, np.abs(cpu).sum(0) > 0) < 1e-4


def test_max_coil_power_per_batch_entry():
    """One value per entry of stacked maps, equal to the value of each entry's own maps."""
    from mrirecon.coils import max_coil_power

    maps = np.stack([sim.birdcage_maps(4, (16, 16)) * scale for scale in (1.0, 2.0, 0.5)])
    per_entry = max_coil_power(maps, batch_ndim=1)
    assert per_entry.shape == (3,)
    np.testing.assert_allclose(per_entry, [max_coil_power(m) for m in maps], rtol=1e-6)
    np.testing.assert_allclose(per_entry, [1.0, 4.0, 0.25], rtol=1e-5)  # birdcage maps: sum |S|^2 = 1
