"""Real 8-channel brain: ESPIRiT maps and the SENSE image agree with SigPy's on the identical input.

SigPy (Ong & Lustig) is an independent implementation of the same formulas: ``EspiritCalib`` and
``SenseRecon`` (CG on (A^H A + lam I) x = A^H y, weights = sampled locations). Parameters are matched:
24x24 calibration, 6x6 kernel, thresh 0.02, crop 0.95, 30 CG iterations, the same absolute lam.
"""
from __future__ import annotations

import numpy as np
import pytest

from mrirecon.coils import espirit_maps
from mrirecon.data import KSpace
from mrirecon.reconstruction import recon

sigpy_mri = pytest.importorskip("sigpy.mri")

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def sigpy_maps(brain_8ch):
    return sigpy_mri.app.EspiritCalib(
        brain_8ch, calib_width=24, thresh=0.02, kernel_width=6, crop=0.95, show_pbar=False
    ).run()


def test_espirit_matches_sigpy(brain_8ch, sigpy_maps):
    ours = espirit_maps(brain_8ch, calib=24, kernel=6, thresh=0.02, crop=0.95)
    support, ref_support = np.abs(ours).sum(0) > 0, np.abs(sigpy_maps).sum(0) > 0
    # The crop decides the same pixels (measured: 0 of 41400 differ; allow 0.1 % at the crop edge).
    assert (support != ref_support).mean() < 1e-3
    both = support & ref_support
    err = np.linalg.norm(ours[:, both] - sigpy_maps[:, both]) / np.linalg.norm(sigpy_maps[:, both])
    # Measured NRMSE 1.1e-3 with no phase alignment (both normalise to coil 0): the two differ only
    # in the per-pixel eigen-solver (30 vs 100 power iterations, different start) and float32 round-off.
    assert err < 1.5e-3


def test_sense_matches_sigpy(brain_8ch, sigpy_maps):
    lam = 0.01
    ours = recon(KSpace(brain_8ch, ("coil", "ky", "kx")), "sense", lam=lam, max_iter=30, tol=0.0)
    # Our lam is relative to max_r sum_c |S_c|^2, which is 1 for ESPIRiT maps: SigPy gets the same value.
    lam_abs = lam * float(np.max(np.sum(np.abs(sigpy_maps) ** 2, axis=0)))
    ref = sigpy_mri.app.SenseRecon(brain_8ch, sigpy_maps, lamda=lam_abs, max_iter=30, show_pbar=False).run()
    signal = np.abs(ref) > 0.05 * np.abs(ref).max()  # 59 % of the pixels: the head
    x, y = ours.data[signal], ref[signal]
    scale = np.vdot(x, y) / np.vdot(x, x)
    assert abs(scale - 1) < 1e-3  # no global scale or phase between the two (measured |scale - 1| 4e-7)
    # Measured NRMSE 1.9e-4 inside the head: same maps up to 1e-3 and the same CG iterates up to
    # float32 round-off; 5e-4 leaves room for BLAS/FFT ordering on other machines.
    assert np.linalg.norm(x - y) / np.linalg.norm(y) < 5e-4
