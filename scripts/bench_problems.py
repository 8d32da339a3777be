"""The benchmark problems (deterministic, seeded) and the one error metric every tool is scored with.

P1: 2D 320x320, 16 birdcage coils (sum |S|^2 = 1), modified Shepp-Logan, complex noise sigma = 0.005,
    variable-density Poisson-disc mask R = 4 with a fully sampled 24x24 centre.
P2: 3D Cartesian 160x256x256 (axis 0 is the fully sampled readout of 160 samples), 8 coils, the
    256x256 phase-encode plane Poisson-disc undersampled R = 4 (same mask on every readout sample).
Both are built with ``mrirecon.sim`` from fixed seeds, so every run and every tool sees the same data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrirecon import KSpace
from mrirecon.sim import birdcage_maps, poisson_disc_mask, shepp_logan, simulate

NOISE_SIGMA = 0.005  # E|n|^2 = sigma^2 per complex k-space sample
ACCEL = 4.0
CALIB = 24  # edge of the fully sampled k-space centre
LAM = 0.01  # l2 weight: min 1/2 ||PFSx - y||^2 + lam/2 ||x||^2, i.e. (A^H A + lam I) x = A^H y
ITERS = 30  # CG iterations of CG-SENSE
CS_LAM = 0.005  # absolute l1 weight of L1-wavelet and TV: min 1/2 ||PFSx - y||^2 + lam ||Rx||_1
CS_ITERS = 100  # iterations of L1-wavelet (FISTA) and TV (PDHG; BART: ADMM)
# ESPIRiT, in the keywords of mrirecon.coils.espirit_maps (max_iter: eigenvector power iterations)
ESPIRIT = {"calib": CALIB, "kernel": 6, "thresh": 0.02, "crop": 0.95, "max_iter": 30}


@dataclass(frozen=True)
class Problem2D:
    """One 2D multi-coil problem with its ground truth."""

    kspace: KSpace  # dims ("coil", "ky", "kx"), zeros where not acquired
    truth: np.ndarray  # (ny, nx) complex64 image
    maps: np.ndarray  # (coil, ny, nx) complex64 true sensitivities, sum |S|^2 = 1
    mask: np.ndarray  # (ny, nx) bool, True = acquired


@dataclass(frozen=True)
class Problem3D:
    """A 3D Cartesian problem with a fully sampled readout along axis 1 of ``kspace``."""

    kspace: np.ndarray  # (coil, readout, ky, kx) complex64
    truth: np.ndarray  # (readout, ny, nx) complex64 volume
    maps: np.ndarray  # (coil, readout, ny, nx) complex64 true sensitivities
    mask: np.ndarray  # (ky, kx) bool phase-encode mask, the same for every readout sample

    @property
    def n_slices(self) -> int:
        return self.truth.shape[0]


def make_p1() -> Problem2D:
    """P1: 2D 320x320, 16 coils, Shepp-Logan, R = 4 Poisson disc with a 24x24 centre, sigma 0.005."""
    shape = (320, 320)
    truth = shepp_logan(shape).astype(np.complex64)
    maps = birdcage_maps(16, shape)
    mask = poisson_disc_mask(shape, ACCEL, (CALIB, CALIB), seed=0)
    ksp = simulate(truth, maps, mask=mask, noise_sigma=NOISE_SIGMA, seed=1)
    return Problem2D(kspace=ksp, truth=truth, maps=maps, mask=np.asarray(mask, dtype=bool))


def make_p2() -> Problem3D:
    """P2: 3D 160x256x256 (readout 160 first), 8 coils, 256x256 plane Poisson disc R = 4, sigma 0.005."""
    shape = (160, 256, 256)
    truth = shepp_logan(shape).astype(np.complex64)
    maps = birdcage_maps(8, shape)
    plane = np.asarray(poisson_disc_mask(shape[1:], ACCEL, (CALIB, CALIB), seed=2), dtype=bool)
    ksp = simulate(truth, maps, mask=np.broadcast_to(plane, shape), noise_sigma=NOISE_SIGMA, seed=3)
    data = np.ascontiguousarray(ksp.data, dtype=np.complex64)
    return Problem3D(kspace=data, truth=truth, maps=maps, mask=plane)


def nrmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """||a x - t|| / ||t|| with the least-squares complex scale a (removes global scale and phase)."""
    x = np.asarray(estimate, dtype=np.complex128).ravel()
    t = np.asarray(truth, dtype=np.complex128).ravel()
    denom = np.vdot(x, x).real
    a = np.vdot(x, t) / denom if denom > 0 else 0.0
    return float(np.linalg.norm(a * x - t) / np.linalg.norm(t))


def maps_nrmse(estimate: np.ndarray, truth: np.ndarray, support: np.ndarray) -> float:
    """NRMSE of coil maps inside ``support`` after removing the per-pixel phase ESPIRiT leaves free.

    ESPIRiT maps are unique up to one phase per pixel shared by all coils; it is aligned to the
    truth pixel by pixel, then ||S_est - S_true|| / ||S_true|| over the object.
    """
    est = np.asarray(estimate, dtype=np.complex128)[:, support]
    ref = np.asarray(truth, dtype=np.complex128)[:, support]
    inner = np.sum(est.conj() * ref, axis=0)
    phase = np.exp(1j * np.angle(inner))
    return float(np.linalg.norm(est * phase - ref) / np.linalg.norm(ref))
