"""EPI recorded as one continuous readout (Pulseq tutorial 11_06): cut into lines, regridded and ghost corrected.

Gridding the continuous trajectory with a NUFFT keeps the shift between left- and right-going echoes
(a strong N/2 ghost); cut into its lines by ``continuous_readout_lines`` the scan goes through the
Cartesian EPI path (ramp regridding, navigator-free ghost correction) like 11_05_EPI, a multi-line
EPI of the same phantom and slice.
"""
from __future__ import annotations

import numpy as np
import pytest
from mrirecon.kernels.fft import fftc, ifftc

from mrirecon.epi import (
    centre_line_phase,
    continuous_readout_lines,
    correct_ghost,
    ghost_to_signal,
    object_mask,
    trapezoid_kspace,
)


def _continuous_epi(n_lines: int, n_read: int, n_blip: int) -> np.ndarray:
    """(n, 2) kx, ky of a continuous EPI readout: ramp-sampled lines joined by blips on the turnarounds."""
    kx = trapezoid_kspace(n_read, 100, 300, 100, 0, 500)
    parts = []
    for j in range(n_lines):
        ky = j - n_lines // 2
        parts.append(np.stack([kx if j % 2 == 0 else kx[::-1], np.full(n_read, ky)], axis=-1))
        if j < n_lines - 1:
            edge = kx[-1] if j % 2 == 0 else kx[0]
            step = (np.arange(n_blip) + 1) / (n_blip + 1)
            parts.append(np.stack([edge + np.sign(edge) * np.sin(np.pi * step), ky + step], axis=-1))
    return np.concatenate(parts)


def test_continuous_readout_is_cut_into_its_lines():
    k = _continuous_epi(16, 40, 6)
    lines = continuous_readout_lines(k)
    assert lines is not None and len(lines) == 16
    for j, line in enumerate(lines):
        np.testing.assert_array_equal(line, j * 46 + np.arange(40))  # the blip samples belong to no line
        np.testing.assert_array_equal(k[line, 1], j - 8)
    # an ADC boundary inside line 3 splits it: no line crosses it
    cut = continuous_readout_lines(k, np.array([3 * 46 + 20, k.shape[0] - 3 * 46 - 20]))
    assert len(cut) == 17 and cut[3][-1] == 3 * 46 + 19 and cut[4][0] == 3 * 46 + 20


def test_radial_and_spiral_readouts_are_not_continuous_epi():
    from mrirecon import sim

    for traj in (sim.radial(16, 64, matrix=64), sim.spiral(4, 256, matrix=64)):
        assert continuous_readout_lines(traj.reshape(-1, 2)[:, ::-1]) is None
    k = _continuous_epi(16, 40, 6)
    k[:, 1] += 0.3  # constant-ky runs off the integer grid: not lines of a Cartesian EPI
    assert continuous_readout_lines(k) is None


def test_refined_ghost_phase_removes_the_centre_line_bias():
    """An off-centre object with its own phase biases the centre-line estimate; the L1 refinement recovers
    the true polarity phase (a, b) = (-0.4, -2 pi 0.6 / n)."""
    n = 64
    y, x = np.mgrid[:n, :n] - n // 2
    inside = ((x - 5) / 14.0) ** 2 + ((y + 3) / 18.0) ** 2 < 1
    image = (inside * np.exp(1j * (2 * np.pi * (0.27 * x + 0.75 * y) / n + 0.5))).astype(np.complex64)
    error = np.exp(1j * (0.4 + 2 * np.pi * 0.6 * (np.arange(n) - n // 2) / n)).astype(np.complex64)
    reflected = np.arange(n) % 2 == 1
    hybrid = ifftc(fftc(image), axes=(-1,))
    hybrid[reflected] *= error
    ksp = fftc(hybrid, axes=(-1,))[None]  # (coil, ky, kx)

    def gsr(a: float, b: float) -> float:
        fixed = correct_ghost(np.moveaxis(ksp, 1, 0), reflected, a, b)
        return ghost_to_signal(np.abs(ifftc(fixed[:, 0])), object_mask(np.abs(image)))

    start = centre_line_phase(ksp, reflected, refine=False)
    refined = centre_line_phase(ksp, reflected)
    assert abs(start[0] + 0.4) > 0.1 and gsr(*start) > 0.05  # measured a = -0.609, GSR 0.107
    np.testing.assert_allclose(refined, (-0.4, -2 * np.pi * 0.6 / n), atol=1e-3)
    assert gsr(*refined) < 1e-4  # measured 1.3e-6


def _rss(kspace: np.ndarray) -> np.ndarray:
    return np.sqrt((np.abs(ifftc(kspace)) ** 2).sum(axis=0))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.realdata
def test_single_trajectory_epi_reconstructs_without_ghost(shared_raw):
    """11_06: GSR (mask of the new image) 0.725 gridded as acquired -> 0.050 cut into lines, regridded and
    ghost corrected; correlation with the corrected 11_05 image (same phantom, 128 x 130) 0.710 -> 0.9997."""
    twixtools = pytest.importorskip("twixtools")
    pytest.importorskip("pypulseq")
    from mrirecon import recon
    from mrirecon.data import KSpace, KSpaceHeader
    from mrirecon.io.pulseq import read_sequence, split_adcs, to_noncartesian
    from mrirecon.io.twix import TwixFile

    folder = shared_raw / "pulseq-tutorials"
    raw = folder / "11_06_EPI_singleTraj.dat"
    seq = read_sequence(raw.with_suffix(".seq"))
    with np.errstate(all="ignore"):
        mdbs = [m for m in twixtools.read_twix(str(raw), verbose=False)[-1]["mdb"] if m.is_image_scan()]
    samples = np.concatenate([m.data for m in mdbs], axis=-1).astype(np.complex64)  # (coil, 21300)

    acquired = to_noncartesian(split_adcs(samples, seq, raw), seq, raw)
    as_acquired = KSpace(acquired.kspace[None], ("slice", "coil", "spoke", "readout"),
                         KSpaceHeader(recon_matrix=(1, acquired.matrix, acquired.matrix)), trajectory=acquired.trajectory)
    gridded = np.abs(recon(as_acquired, "gridding", device="cpu").numpy()[0])[1:-1]  # 130 -> the 128 ky lines

    lines = continuous_readout_lines(seq.kspace, seq.adc_samples)
    assert lines is not None and len(lines) == 128
    with TwixFile(raw) as f:  # the reader cuts the lines (io.pulseq.cut_continuous_epi) and corrects the ghost
        read_back = f.read()
        notes = f.info()["uninterpreted"]
    assert read_back.trajectory is None and read_back.data.shape == (1, 4, 128, 130)
    assert any("cut into 128 lines" in note for note in notes)
    fixed = _rss(read_back.data[0])

    reference = _rss(TwixFile(folder / "11_05_EPI.dat").read().data[0])
    obj = object_mask(fixed)
    assert ghost_to_signal(gridded, obj) > 0.5  # measured 0.725
    assert ghost_to_signal(fixed, obj) < 0.08  # measured 0.050 (0.141 with the unrefined centre-line phase)
    assert _correlation(gridded, reference) < 0.85  # measured 0.710
    assert _correlation(fixed, reference) > 0.99  # measured 0.9997
