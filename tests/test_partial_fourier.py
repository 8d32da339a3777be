"""Partial Fourier: POCS and homodyne against the truth and zero-filling, asymmetric-axis detection,
data consistency, GRAPPA followed by POCS, CPU/GPU agreement."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mrirecon.kernels.fft import fftc, ifftc
from test_methods import (
    _nrmse as nrmse,  # magnitude NRMSE after the least-squares scale
)

from mrirecon import read, sim
from mrirecon.partial_fourier import PartialAxis, kspace_centre, partial_axes, pocs
from mrirecon.reconstruction import recon


def errors(ksp, truth) -> tuple[float, float, float]:
    """NRMSE of zero-filled, POCS and homodyne images against the magnitude ``truth``."""
    return tuple(nrmse(recon(ksp, m, device="cpu").data, truth) for m in ("zerofill", "pocs", "homodyne"))


@pytest.fixture(scope="module")
def brain():
    """The simulated brain (complex, smooth phase) with 8 birdcage coils, 128x128."""
    shape = (128, 128)
    return sim.brain(shape), sim.birdcage_maps(8, shape)


def five_eighths(shape=(128, 128)) -> np.ndarray:
    """5/8 partial Fourier along ky: the first 3/8 of the lines are not acquired."""
    mask = np.zeros(shape, bool)
    mask[shape[0] * 3 // 8:] = True
    return mask


def test_partial_axes_found_from_mask_and_centre():
    assert partial_axes(five_eighths(), (64, 64)) == [PartialAxis(0, 64, 16, True)]
    assert partial_axes(five_eighths()[::-1], (64, 64)) == [PartialAxis(0, 64, 15, False)]  # lines 0..79
    assert partial_axes(five_eighths().T, (64, 64)) == [PartialAxis(1, 64, 16, True)]
    assert partial_axes(sim.equispaced_mask((128, 128), 4, 24), (64, 64)) == []  # undersampled, symmetric
    assert kspace_centre((128, 96), (0, 60, 40)) == (60, 40) and kspace_centre((8, 6), None) == (4, 3)


# Measured on the brain (5/8 partial Fourier, noise 2e-3); NRMSE of the magnitude:
#               zero-filled  POCS    homodyne
# ky, low side  0.0335       0.0104  0.0127
# ky, high side 0.0356       0.0105  0.0127
# kx, low side  0.0364       0.0106  0.0137
@pytest.mark.parametrize("orient", ["ky-low", "ky-high", "kx-low"])
def test_pocs_and_homodyne_beat_zerofill(brain, orient):
    image, maps = brain
    mask = {"ky-low": five_eighths(), "ky-high": five_eighths()[::-1], "kx-low": five_eighths().T}[orient]
    ksp = sim.simulate(image, maps, mask, noise_sigma=2e-3, seed=1)
    zf, p, h = errors(ksp, image)
    assert zf > 0.033 and p < 0.0115 and h < 0.015, (zf, p, h)


# Measured on Shepp-Logan with a phase ramp + quadratic phase: zero-filled 0.1988, POCS 0.0199,
# homodyne 0.0335 (sharp edges: the iterative POCS recovers more than the one-pass homodyne).
def test_pocs_on_shepp_logan_with_smooth_phase(brain):
    maps = brain[1]
    magnitude = sim.shepp_logan((128, 128))
    y, x = np.meshgrid(np.linspace(-1, 1, 128), np.linspace(-1, 1, 128), indexing="ij")
    image = (magnitude * np.exp(1j * (1.2 * x + 0.8 * y**2))).astype(np.complex64)
    ksp = sim.simulate(image, maps, five_eighths(), noise_sigma=2e-3, seed=1)
    zf, p, h = errors(ksp, magnitude)
    assert zf > 0.19 and p < 0.022 and h < 0.036, (zf, p, h)


def test_pocs_keeps_the_acquired_samples(brain):
    """The POCS coil images reproduce the measured k-space exactly where it was acquired."""
    image, maps = brain
    mask = five_eighths()
    ksp = sim.simulate(image, maps, mask, noise_sigma=2e-3, seed=1)
    coil_images = pocs(ksp.data, ksp.mask, ksp.header.kspace_centre, n_iter=10)
    np.testing.assert_allclose(fftc(coil_images)[:, mask], ksp.data[:, mask], atol=1e-5)  # measured 9.6e-7
    symmetric = sim.simulate(image, maps, sim.equispaced_mask((128, 128), 2, 24))
    np.testing.assert_array_equal(pocs(symmetric.data, symmetric.mask), ifftc(symmetric.data))  # nothing to fill


# Measured (3D Shepp-Logan 32^3 with a phase ramp, 4 coils, 20 of 32 ky lines): zero-filled 0.370,
# POCS 0.0946, homodyne 0.131.
def test_pocs_in_3d():
    shape = (32, 32, 32)
    magnitude = sim.shepp_logan(shape)
    image = (magnitude * np.exp(1j * np.linspace(-1, 1, 32))[None, :, None]).astype(np.complex64)
    mask = np.zeros(shape, bool)
    mask[:, 12:] = True
    ksp = sim.simulate(image, sim.birdcage_maps(4, shape), mask, noise_sigma=1e-3)
    zf, p, h = errors(ksp, magnitude)
    assert zf > 0.36 and p < 0.1 and h < 0.14, (zf, p, h)


# Measured (brain, R=2 GRAPPA with 24 ACS lines and 5/8 partial Fourier, noise 2e-3): GRAPPA alone 0.0382
# (missing side zero), GRAPPA + 10 POCS iterations 0.0110, zero-filled 0.0658.
def test_grappa_then_pocs(brain):
    image, maps = brain
    mask = sim.equispaced_mask(image.shape, 2, 24) & five_eighths()
    ksp = sim.simulate(image, maps, mask, noise_sigma=2e-3, seed=1)
    alone = nrmse(recon(ksp, "grappa", device="cpu").data, image)
    with_pocs = nrmse(recon(ksp, "grappa", device="cpu", pocs_iter=10).data, image)
    zf = nrmse(recon(ksp, "zerofill", device="cpu").data, image)
    assert with_pocs < 0.012 and alone < 0.04 and zf > 0.065, (with_pocs, alone, zf)


# Measured on the real fully sampled 2-channel gre phantom (twixtools, 160x160), 5/8 of ky kept, against
# the full data's RSS: zero-filled 0.0775, POCS 0.0707 (edges restored; the rest is the scan's noise,
# which zero-filling smooths and POCS keeps), homodyne 0.0847 (its factor 2 doubles the unpaired noise).
def test_pocs_on_real_partial_fourier(shared_raw):
    ksp = read(shared_raw / "twixtools-phantom" / "gre.dat").select(slice=0)
    reference = recon(ksp, "zerofill", device="cpu").data
    mask = five_eighths(ksp.spatial_shape)
    zf, p, _ = errors(dataclasses.replace(ksp, data=ksp.data * mask, mask=mask), reference)
    assert p < 0.072 and zf > 0.076, (zf, p)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["pocs", "homodyne"])
def test_gpu_matches_cpu(brain, method):
    image, maps = brain
    ksp = sim.simulate(image, maps, five_eighths(), noise_sigma=2e-3, seed=1)
    cpu = recon(ksp, method, device="cpu").data
    gpu = recon(ksp, method, device="cuda").data
    assert nrmse(gpu, cpu) < 1e-4
