"""GRAPPA: image quality against the truth and zero-filling, 2D and ky-kz acceleration, separate and
embedded calibration, partial Fourier without edge fills, the fill against a per-point reference,
bad input (API and CLI), CPU/GPU agreement."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from test_methods import (
    _nrmse as nrmse,  # magnitude NRMSE after the least-squares scale
)

from mrirecon import sim
from mrirecon.cli import main
from mrirecon.errors import InputError
from mrirecon.grappa import (
    Lattice,
    grappa,
    grappa_apply,
    grappa_calibrate,
    sampling_lattice,
)
from mrirecon.reconstruction import recon


@pytest.fixture(scope="module")
def phantom():
    """128x128 Shepp-Logan seen by 8 birdcage coils."""
    shape = (128, 128)
    return sim.shepp_logan(shape), sim.birdcage_maps(8, shape)


def undersampled(phantom, accel, calib=24, noise=1e-3):
    image, maps = phantom
    return sim.simulate(image, maps, sim.equispaced_mask(image.shape, accel, calib), noise_sigma=noise, seed=1)


def phantom_3d(shape, n_coils, accel, calib):
    """3D Shepp-Logan seen by ``n_coils`` birdcage coils, equispaced along ky (int ``accel``) or along kz and
    ky (a pair), with ``calib`` fully sampled lines around the centre of each accelerated axis."""
    image, maps = sim.shepp_logan(shape), sim.birdcage_maps(n_coils, shape)
    if isinstance(accel, int):
        mask = sim.equispaced_mask(shape, accel, calib, axis=1)
    else:
        mask = sim.equispaced_mask(shape[:2], accel, (calib, calib), axis=(0, 1))[..., None]
    return image, sim.simulate(image, maps, mask, noise_sigma=1e-3, seed=1)


# Measured on this phantom (noise 1e-3, 24 ACS lines, default kernel 4x5, lam 0.01):
# R=2: GRAPPA 0.0213, zero-filled 0.279; R=3: 0.0521 vs 0.326; R=4: 0.1511 vs 0.353.
@pytest.mark.parametrize("accel, limit, zf_limit", [(2, 0.023, 0.27), (3, 0.056, 0.32), (4, 0.16, 0.345)])
def test_grappa_beats_zerofill(phantom, accel, limit, zf_limit):
    ksp = undersampled(phantom, accel)
    g = nrmse(recon(ksp, "grappa", device="cpu").data, phantom[0])
    zf = nrmse(recon(ksp, "zerofill", device="cpu").data, phantom[0])
    assert g < limit, g
    assert zf > zf_limit, zf
    assert g < zf / 2


def test_lattice_is_read_from_the_mask():
    mask = sim.equispaced_mask((60, 32), 3, 10)
    lattice = sampling_lattice(mask)
    assert lattice.accel == (3, 1) and lattice.offset == (0, 0)  # 30 % 3: lines 0, 3, ... 57
    assert lattice.cell == [(1, 0), (2, 0)]
    mask3 = sim.equispaced_mask((20, 30, 8), (2, 3), (6, 6), axis=(0, 1))
    assert sampling_lattice(mask3) == Lattice((2, 3, 1), (0, 0, 0))
    shifted = np.zeros((31, 8), bool)
    shifted[1::2] = True
    shifted[10:20] = True
    assert sampling_lattice(shifted) == Lattice((2, 1), (1, 0))
    corners_cut = mask3 & (np.linspace(-1, 1, 20)[:, None, None] ** 2 + np.linspace(-1, 1, 30)[None, :, None] ** 2 <= 1)
    assert sampling_lattice(corners_cut) == Lattice((2, 3, 1), (0, 0, 0))  # an elliptical 3D acquisition
    partial = np.zeros((64, 16), bool)
    partial[24:] = True
    assert sampling_lattice(partial) == Lattice((1, 1), (0, 0))  # partial Fourier only: nothing skipped


def test_fill_matches_a_per_point_reference(rng):
    """Every filled value is the weighted sum of its source window, computed point by point here."""
    n_coils, shape, accel, kernel = 3, (21, 12), (3, 1), (2, 3)
    full = (rng.standard_normal((n_coils, *shape)) + 1j * rng.standard_normal((n_coils, *shape))).astype(np.complex64)
    weights = grappa_calibrate(full[:, 4:17], accel, kernel, lam=0.1)
    lattice = Lattice(accel, (1, 0))  # lines 1, 4, ..., 19: a virtual line at -2 covers line 0
    mask = np.zeros(shape, bool)
    mask[1::3] = True
    filled, filled_mask = grappa_apply(full * mask, mask, weights, lattice)
    w = weights.weights.reshape(n_coils, *kernel, 2, n_coils)  # (coil, ky, kx, cell, coil)
    for y, x in itertools.product(range(shape[0]), range(shape[1])):
        if mask[y, x]:
            assert filled_mask[y, x] and np.array_equal(filled[:, y, x], full[:, y, x])
            continue
        base, delta = (y - 1) // 3, (y - 1) % 3
        expected = np.zeros(n_coils, np.complex128)
        for j, i in itertools.product(range(kernel[0]), range(kernel[1])):
            sy, sx = 1 + 3 * (base + j), x + i - 1  # window centre entry (0, 1) sits on the lattice point
            if 0 <= sy < shape[0] and 0 <= sx < shape[1]:  # beyond the matrix: zero
                expected += full[:, sy, sx] @ w[:, j, i, delta - 1, :]
        assert filled_mask[y, x]
        np.testing.assert_allclose(filled[:, y, x], expected, rtol=1e-4, atol=1e-5)


def test_partial_fourier_and_asymmetric_echo_are_left_empty(phantom):
    """Skipped points next to unacquired regions stay empty; the rest get exactly the fill that the full
    acquisition gives (same calibration, same sources)."""
    image, maps = phantom
    mask = sim.equispaced_mask(image.shape, 2, 24)
    full_ksp = sim.simulate(image, maps, mask)
    acs = full_ksp.data[:, 52:76, 8:120]  # one calibration for both, inside the acquired region
    reference, _ = grappa(full_ksp.data, mask, calibration=acs)
    pf = mask.copy()
    pf[:48] = False  # 5/8 partial Fourier along ky: lines 48 (acquired) ... 127
    pf[:, 120:] = False  # asymmetric echo: readout samples 120 ... 127 not acquired
    filled, filled_mask = grappa(full_ksp.data * pf, pf, calibration=acs)
    assert not filled_mask[:48].any() and not filled[:, :48].any()
    assert not filled_mask[:, 120:].any()
    # Line 49 needs line 46 (missing); line 51 has lines 48, 50, 52, 54. Readout: sources up to x+2 < 120.
    assert not filled_mask[49].any() and filled_mask[51, :118].all() and not filled_mask[51, 118:].any()
    np.testing.assert_array_equal(filled_mask[50:, :118], True)
    np.testing.assert_allclose(filled[:, 50:, :118], reference[:, 50:, :118], rtol=1e-5, atol=1e-6)


# Measured (32x48x48 Shepp-Logan, 8 coils, noise 1e-3, kernel 3x4x5):
# 2x2 (kz, ky) with a 12x12 ACS box: GRAPPA 0.1295, zero-filled 0.531;
# R=2 along ky with 16 ACS lines: GRAPPA 0.0543, zero-filled 0.316.
@pytest.mark.slow
@pytest.mark.parametrize("accel, calib, limit, zf_limit", [((2, 2), 12, 0.14, 0.52), (2, 16, 0.06, 0.31)])
def test_grappa_on_3d(accel, calib, limit, zf_limit):
    image, ksp = phantom_3d((32, 48, 48), 8, accel, calib)
    g = nrmse(recon(ksp, "grappa", device="cpu").data, image)
    zf = nrmse(recon(ksp, "zerofill", device="cpu").data, image)
    assert g < limit and zf > zf_limit, (g, zf)


def test_separate_acs_calibrates_like_embedded_lines(phantom):
    """ACS lines given as ``KSpace.calibration`` train the same weights as the same lines inside the data:
    every point outside the ACS block is filled identically."""
    embedded = undersampled(phantom, 3)
    acs = slice(52, 77)  # the data's fully sampled centre: 24 ACS lines and lattice line 76
    lattice_only = sim.equispaced_mask(phantom[0].shape, 3, 1)
    calibration = np.ascontiguousarray(embedded.data[:, acs])
    a, _ = grappa(embedded.data, embedded.mask)
    b, b_mask = grappa(embedded.data * lattice_only, lattice_only, calibration=calibration)
    outside = np.ones(128, bool)
    outside[acs] = False
    assert b_mask.all()
    np.testing.assert_array_equal(a[:, outside], b[:, outside])
    separate = dataclasses.replace(
        embedded, data=embedded.data * lattice_only, mask=lattice_only, calibration=calibration
    )
    g = nrmse(recon(separate, "grappa", device="cpu").data, phantom[0])
    assert g < 0.075, g  # measured 0.0685 (the ACS lines themselves are GRAPPA-filled here)


@pytest.fixture(scope="module")
def brain():
    shape = (128, 128)
    return sim.brain(shape), sim.birdcage_maps(8, shape)


# Measured on the simulated brain (128x128, 8 coils, R=3 equispaced, 24 ACS lines, noise 2e-3):
# GRAPPA 0.0226, SENSE (ESPIRiT, default lam) 0.0186, zero-filled 0.0719; GRAPPA vs SENSE 0.0166.
def test_grappa_agrees_with_sense_on_the_brain(brain):
    image, maps = brain
    full = sim.simulate(image, maps, noise_sigma=2e-3, seed=3)
    mask = sim.equispaced_mask(image.shape, 3, 24)
    ksp = dataclasses.replace(full, data=full.data * mask, mask=mask)  # retrospective undersampling
    g = recon(ksp, "grappa", device="cpu").data
    s = recon(ksp, "sense", device="cpu").data
    zf = nrmse(recon(ksp, "zerofill", device="cpu").data, image)
    assert nrmse(g, image) < 0.025 and nrmse(s, image) < 0.021 and zf > 0.07
    assert nrmse(g, s) < 0.019


def complex_nrmse(x, truth) -> float:
    """NRMSE after the least-squares complex scale (one global gain and phase)."""
    x, y = np.asarray(x).ravel(), np.asarray(truth).ravel()
    a = np.vdot(x, y) / np.vdot(x, x)
    return float(np.linalg.norm(a * x - y) / np.linalg.norm(y))


def test_sense_combine_keeps_the_phase(brain):
    """combine='sense' gives the complex object times coil 0's phase (ESPIRiT maps are referenced to coil
    0); RSS loses the phase."""
    image, maps = brain
    ksp = sim.simulate(image, maps, sim.equispaced_mask(image.shape, 2, 24), noise_sigma=1e-3, seed=2)
    inside = np.abs(image) > 0.1
    expected = (image * np.exp(1j * np.angle(maps[0])))[inside]
    g = recon(ksp, "grappa", device="cpu", combine="sense").data
    r = recon(ksp, "grappa", device="cpu").data
    assert complex_nrmse(g[inside], expected) < 0.007  # measured 0.0056
    assert complex_nrmse(r[inside], expected) > 0.3  # measured 0.352
    assert nrmse(g, image) < 0.006  # measured 0.0050


# -- bad input -----------------------------------------------------------------------------------
def test_bad_input_names_the_problem(phantom):
    no_acs = undersampled(phantom, 2, calib=1)
    with pytest.raises(InputError, match="needs calibration data"):
        recon(no_acs, "grappa", device="cpu")
    r8 = undersampled(phantom, 8)
    with pytest.raises(InputError, match="acceleration 8 along ky cannot be calibrated"):
        recon(r8, "grappa", device="cpu")
    with pytest.raises(InputError, match="kernel 30 x 5 is larger than the calibration region 25 x 128 along ky"):
        recon(undersampled(phantom, 2), "grappa", device="cpu", kernel_y=30)
    small_acs = dataclasses.replace(no_acs, calibration=np.asarray(r8.data[:, 60:68, :12]))
    with pytest.raises(InputError, match="8 x 12 gives 8 equations for 160 GRAPPA weights"):
        recon(small_acs, "grappa", device="cpu")
    lines = np.random.default_rng(0).random(128) < 0.4
    lines[52:76] = True
    random = sim.simulate(*phantom, lines[:, None])
    with pytest.raises(InputError, match="sampling of ky is not a regular lattice"):
        recon(random, "grappa", device="cpu")
    poisson = sim.simulate(*phantom, sim.poisson_disc_mask(phantom[0].shape, 3, 24, seed=0))
    with pytest.raises(InputError, match="sampling varies along the readout"):
        recon(poisson, "grappa", device="cpu")
    with pytest.raises(InputError, match="combine must be one of rss, sense"):
        recon(undersampled(phantom, 2), "grappa", device="cpu", combine="mean")


@pytest.mark.parametrize("accel, calib, params, fragment", [
    (2, 1, [], "needs calibration data"),
    (8, 24, [], "acceleration 8 along ky cannot be calibrated"),
    (2, 24, ["--param", "kernel_y=30"], "kernel 30 x 5 is larger than the calibration region"),
])
def test_cli_exit_2(phantom, tmp_path, capsys, accel, calib, params, fragment):
    path = tmp_path / "undersampled.npy"
    np.save(path, undersampled(phantom, accel, calib=calib).data)
    code = main(["recon", str(path), "-o", str(tmp_path / "out.zarr"), "--method", "grappa", "--device", "cpu", *params])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mrirecon: error: ") and fragment in err and "Traceback" not in err


# -- GPU -----------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("accel", [2, 4])
def test_gpu_matches_cpu(phantom, accel):
    ksp = undersampled(phantom, accel)
    cpu = recon(ksp, "grappa", device="cpu").data
    gpu = recon(ksp, "grappa", device="cuda").data
    assert nrmse(gpu, cpu) < 1e-4


@pytest.mark.gpu
def test_gpu_matches_cpu_3d_2x2():
    _, ksp = phantom_3d((16, 32, 32), 4, (2, 2), 10)
    cpu = recon(ksp, "grappa", device="cpu").data
    gpu = recon(ksp, "grappa", device="cuda").data
    assert nrmse(gpu, cpu) < 1e-4
