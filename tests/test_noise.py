"""Noise pre-whitening: covariance from noise scans or a noise region, whitening to identity, in recon."""
from __future__ import annotations

import numpy as np
import pytest
from mrirecon.pipelines.store import open_series

from mrirecon import sim
from mrirecon.cli import main
from mrirecon.coils import apply_coil_matrix, coil_covariance
from mrirecon.errors import InputError
from mrirecon.io import write_ismrmrd
from mrirecon.methods import get_method
from mrirecon.noise import (
    noise_covariance,
    region_noise,
    whiten,
    whitener,
    whitening_matrix,
    with_region_noise,
)
from mrirecon.reconstruction import recon

SHAPE = (128, 128)


def _correlated_covariance(n_coils: int = 8, rho: float = 0.9) -> np.ndarray:
    """Strongly correlated receiver noise: correlation rho^|c-d| with a phase twist, gains alternating 1 and 3.

    Eigenvalues span 0.096 .. 31.3 (condition number 326).
    """
    idx = np.arange(n_coils)
    corr = rho ** np.abs(idx[:, None] - idx[None, :]) * np.exp(0.3j * (idx[:, None] - idx[None, :]))
    gains = np.diag(np.where(idx % 2, 3.0, 1.0))
    return gains @ corr @ gains


def _nrmse(x: np.ndarray, truth: np.ndarray) -> float:
    x, y = np.abs(x).ravel(), np.abs(truth).ravel()
    return float(np.linalg.norm(np.dot(x, y) / np.dot(x, x) * x - y) / np.linalg.norm(y))


@pytest.fixture(scope="module")
def correlated():
    """(image, clean k-space, noisy k-space with 4000 noise-scan samples) at R=4, sigma 2e-2, correlated noise."""
    image = sim.shepp_logan(SHAPE)
    maps = sim.birdcage_maps(8, SHAPE)
    mask = sim.poisson_disc_mask(SHAPE, 4, 24, seed=0)
    noisy = sim.simulate(image, maps, mask, noise_sigma=2e-2, seed=1, noise_covariance=_correlated_covariance(),
                         noise_scans=4000)
    return image, sim.simulate(image, maps, mask), noisy


def test_whitening_matrix_inverts_the_covariance():
    cov = _correlated_covariance()
    w = whitening_matrix(cov)
    assert w.shape == (8, 8) and w.dtype == np.complex64
    np.testing.assert_allclose(w @ cov @ w.conj().T, np.eye(8), atol=2e-5)  # complex64 W, cond 326
    np.testing.assert_array_equal(np.triu(w, 1), 0)  # inverse of a lower Cholesky factor


def test_whitened_noise_covariance_is_identity(correlated):
    _, clean, noisy = correlated
    out = whiten(noisy)
    sampled = noisy.mask
    before = coil_covariance(noisy.data[:, sampled] - clean.data[:, sampled]) / 2e-2**2
    after = coil_covariance(out.data[:, sampled] - apply_coil_matrix(clean.data, whitener(noisy))[:, sampled])
    # k-space noise is a draw independent of the noise scans the whitener came from: 4096 samples per
    # coil and a 4000-sample estimate give a measured max |entry - I| of 0.048 (0.0156 is one sd of
    # a single entry); before whitening the covariance is far from I (measured max 7.88).
    assert np.abs(after - np.eye(8)).max() < 0.055
    assert np.abs(before - np.eye(8)).max() > 7.5
    np.testing.assert_allclose(coil_covariance(out.noise), np.eye(8), atol=1e-5)  # noise scans go along


def test_whiten_maps_calibration_and_accepts_a_covariance(correlated):
    _, _, noisy = correlated
    cal = noisy.data[:, 52:76]
    cov = noise_covariance(noisy.noise)
    out = whiten(noisy.__class__(noisy.data, noisy.dims, noisy.header, noisy.mask, calibration=cal), cov)
    np.testing.assert_allclose(out.calibration, apply_coil_matrix(cal, whitening_matrix(cov)), rtol=1e-6)
    np.testing.assert_allclose(out.data, whiten(noisy).data, rtol=1e-6)


def test_noise_from_an_image_region():
    cov = _correlated_covariance()
    ksp = sim.simulate(sim.shepp_logan(SHAPE), sim.birdcage_maps(8, SHAPE), noise_sigma=5e-3, seed=2,
                       noise_covariance=cov)
    assert not sim.shepp_logan(SHAPE)[:20, :20].any()
    est = noise_covariance(region_noise(ksp, (slice(0, 20), slice(0, 20)), "image"))  # corner outside the object
    # measured relative Frobenius error 0.068 from 400 samples per coil (1/sqrt(400) = 0.05 per entry)
    assert np.linalg.norm(est - 5e-3**2 * cov) / np.linalg.norm(5e-3**2 * cov) < 0.075
    assert with_region_noise(ksp, (slice(0, 20), slice(0, 20))).noise.shape == (8, 400)


def test_noise_from_a_kspace_region_counts_acquired_samples_only():
    """A smooth object leaves the k-space corners to noise; half the corner is not acquired."""
    y, x = np.mgrid[-1:1:128j, -1:1:128j]
    blob = np.exp(-(x**2 + y**2) / 0.1).astype(np.complex64)
    mask = np.ones(SHAPE, bool)
    mask[::2] = False
    cov = _correlated_covariance()
    ksp = sim.simulate(blob, sim.birdcage_maps(8, SHAPE), mask, noise_sigma=5e-3, seed=3, noise_covariance=cov)
    samples = region_noise(ksp, (slice(0, 30), slice(0, 30)), "kspace")
    assert samples.shape == (8, 15 * 30) and np.all(samples != 0)
    # measured relative Frobenius error 0.032 from 450 samples per coil
    assert np.linalg.norm(noise_covariance(samples) - 5e-3**2 * cov) / np.linalg.norm(5e-3**2 * cov) < 0.036


def test_whitening_then_sense_beats_unwhitened_sense_on_correlated_noise(correlated):
    image, _, noisy = correlated
    plain = recon(noisy, "sense", whiten=False)
    white = recon(noisy, "sense")  # "auto": the k-space has noise scans
    assert plain.provenance.parameters["whiten"] is False and white.provenance.parameters["whiten"] is True
    # measured NRMSE 0.418 unwhitened vs 0.174 whitened (Walsh maps: 0.453 vs 0.187). At a low noise
    # level (sigma 5e-3) whitening does not help ESPIRiT-SENSE on this phantom (0.126 vs 0.149), so only
    # the noise-limited case is asserted.
    assert _nrmse(white.data, image) < 0.18
    assert _nrmse(plain.data, image) > 0.40


def test_user_maps_are_whitened_with_the_data(correlated):
    image, _, noisy = correlated
    maps = sim.birdcage_maps(8, SHAPE)
    # measured 0.175 with the true maps whitened alike; 0.389 without whitening at all; 0.606 when
    # whitened data meet maps that were not whitened (what recon must avoid)
    assert _nrmse(recon(noisy, "sense", maps=maps).data, image) < 0.19
    assert _nrmse(get_method("sense")(whiten(noisy), maps=maps), image) > 0.55


def test_whitening_needs_noise_and_a_valid_covariance(phantom_r4):
    ksp = phantom_r4[2]  # no noise scans
    assert "whiten" not in recon(ksp, "zerofill").provenance.parameters
    with pytest.raises(InputError, match="has no noise samples"):
        recon(ksp, "zerofill", whiten=True)
    with pytest.raises(InputError, match="whiten must be"):
        recon(ksp, "zerofill", whiten="yes")
    with pytest.raises(InputError, match="no noise scans"):
        whiten(ksp)
    with pytest.raises(InputError, match="not positive definite"):
        whitening_matrix(np.diag([1.0, 0.0, 1.0]))  # a channel without noise
    with pytest.raises(InputError, match="not Hermitian"):
        whitening_matrix(np.array([[1.0, 0.5], [0.1, 1.0]]))
    with pytest.raises(InputError, match="cannot estimate"):
        noise_covariance(np.ones((8, 4), np.complex64))
    with pytest.raises(InputError, match="one slice per spatial dim"):
        region_noise(ksp, (slice(0, 4),))
    with pytest.raises(InputError, match="domain"):
        region_noise(ksp, (slice(0, 4), slice(0, 4)), "fourier")


def test_cli_whitens_by_default_and_can_be_told_not_to(tmp_path, correlated, capsys):
    _, _, noisy = correlated
    raw = tmp_path / "noisy.h5"
    write_ismrmrd(raw, noisy)
    for flag, expected in (([], True), (["--no-whiten"], False)):
        store = tmp_path / "out.zarr"
        assert main(["recon", str(raw), "-o", str(store), "--method", "zerofill", "--device", "cpu",
                     "--no-progress", *flag]) == 0
        name = capsys.readouterr().out.split(f"{store}/")[1].split()[0]
        assert open_series(store, name).provenance.parameters["whiten"] is expected


@pytest.mark.gpu
def test_whitening_on_gpu_matches_cpu(correlated):
    import cupy as cp

    _, _, noisy = correlated
    cpu = whiten(noisy)
    gpu = whiten(noisy.to("cuda"))
    assert isinstance(gpu.data, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(gpu.data), cpu.data, rtol=1e-4, atol=1e-4 * np.abs(cpu.data).max())
