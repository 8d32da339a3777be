"""P2L1, the 3D L1-wavelet exam (issue #8's GPU target): P2's whole volume as one compressed-sensing problem.

P2's k-space (coil, readout, ky, kx) goes to ``mrirecon.recon`` as dims ("coil", "kz", "ky", "kx"): the
fully sampled readout is the first spatial axis (named "kz" only to order the axes), so mrirecon runs a
3D FFT and a 3D wavelet over the volume. L1-wavelet, FISTA, ``CS_ITERS`` iterations, absolute lambda
``CS_LAM``, true coil maps, scored by the NRMSE against the truth; mrirecon with its defaults (db2,
seeded cycle spinning), SigPy ``L1WaveletRecon`` (db4, its wavelet through PyWavelets on the host),
BART ``pics -l1`` (its wavelet over dims 0-2, random cycle spinning).

Peers: with ``--device cuda`` SigPy on CuPy alone; on the CPU SigPy and BART. A run too long to repeat
does ``SHORT_ITERS`` iterations and its whole time is scaled by ``iters / SHORT_ITERS`` (set-up such as
the power iteration scales too, so the figure is an upper bound; its NRMSE is that of the short run):
SigPy on CuPy always (its host wavelet), a CPU peer whose run is predicted over ``LONG_RUN_S``, and
mrirecon with ``--quick`` on the CPU. The note names them ("extrapolated").

Floor: the readout inverse FFT of the whole k-space once, then per iteration the floor of one CG-SENSE
iteration in hybrid space (forward and inverse 2D FFT of every coil over the undersampled plane for all
readout positions, one expand pass, one combine read: ``bench_timing.sense_iteration_floor`` with the
coils x readout positions as coils), times the iterations; on a GPU plus the host/device copies. It
does not count the wavelet passes, soft threshold or FISTA's momentum updates.
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
from bench_bandwidth import bandwidth_floor
from bench_problems import CS_ITERS, CS_LAM, Problem3D, nrmse
from bench_timing import Runner, readout_fft_floor, sense_iteration_floor, single_stage, transfer_floor
from mrirecon.kernels.backend import to_numpy

import mrirecon
from mrirecon import KSpace, KSpaceHeader

PROBLEM = "P2L1"
DIMS = ("coil", "kz", "ky", "kx")  # P2's readout (axis 1) is the first spatial axis
SHORT_ITERS = 10  # iterations of a run too long to repeat; its time is scaled by iters / SHORT_ITERS
LONG_RUN_S = 60.0  # a CPU peer predicted to take longer than this per run does SHORT_ITERS
PEER_X_FLOOR = 4.0  # the prediction: the floor times this (the fastest CPU peer on P2 took 4.25x its floor)
PEERS = {"cuda": ("sigpy-cupy",), "cpu": ("sigpy", "bart")}  # the peers of this task by device


def exam_kspace(p: Problem3D, header: KSpaceHeader) -> KSpace:
    """P2's k-space as one 3D Cartesian problem, with the plane mask (the same at every readout sample)."""
    return KSpace(p.kspace, DIMS, header=header, mask=p.mask)


def exam_floor(p: Problem3D, xp: ModuleType, iters: int, repeats: int) -> float:
    """Readout FFT once + ``iters`` hybrid-space SENSE iterations, in s (the host/device copies apart)."""
    n_coils, n_readout, ny, nx = p.kspace.shape
    return (
        readout_fft_floor(xp, p.kspace.shape, 1, repeats)
        + iters * sense_iteration_floor(xp, n_coils * n_readout, (ny, nx), repeats)
    )


def mrirecon_exam(ksp: KSpace, maps: np.ndarray, device: str, max_iter: int, xp: ModuleType) -> Runner:
    """``mrirecon.recon(..., "l1wavelet")`` on the volume, lam ``CS_LAM`` absolute, true maps, host to host."""
    return single_stage(lambda: to_numpy(mrirecon.recon(
        ksp, "l1wavelet", device=device, lam=CS_LAM, relative=False, max_iter=max_iter, maps=maps).data), xp)


def _as_stage(runner: Runner, stage: str) -> Runner:
    """``runner`` with its time reported as one stage named ``stage`` (the key of its extrapolation weight)."""

    def run() -> tuple[np.ndarray, dict[str, float]]:
        out, stages = runner()
        return out, {stage: sum(stages.values())}

    return run


def exam_task(
    p: Problem3D,
    header: KSpaceHeader,
    peers: dict[str, Any],
    device: str,
    xp: ModuleType,
    *,
    quick: bool,
    repeats: int,
    iters: int = CS_ITERS,
) -> dict[str, Any]:
    """The P2L1 task as ``benchmark.Task`` keywords (name, score, floor_s, note, runners, stage_weights,
    bandwidth_s: the readout FFT and one ``A^H A`` per iteration at the memory bandwidth, ``bench_bandwidth``).

    ``header``: the k-space header mrirecon gets (with the input checksum, as a reader records it);
    ``peers``: the available peers by table name (those of ``PEERS[device]`` are used); ``repeats``: the
    floor's runs (at least 5, as the other tasks); ``iters``: FISTA iterations (tests use fewer).
    """
    repeats = max(repeats, 5)
    transfers = transfer_floor(xp, p.kspace.size + p.maps.size, p.truth.size, repeats)  # host <-> device, 0 on the CPU
    floor = exam_floor(p, xp, iters, repeats) + transfers
    short = min(SHORT_ITERS, iters)
    stage = f"{short} of {iters} it"
    ksp = exam_kspace(p, header)
    factories: dict[str, Callable[[int], Runner]] = {
        "mrirecon": lambda n: mrirecon_exam(ksp, p.maps, device, n, xp),
    }
    for name in PEERS[device]:
        if name in peers:
            factories[name] = lambda n, peer=peers[name]: peer.l1wavelet_volume(p.kspace, p.maps, p.mask, n)
    shortened = [
        name for name in factories if short < iters and (
            name == "sigpy-cupy"
            or (name == "mrirecon" and quick and device == "cpu")
            or (name != "mrirecon" and device == "cpu" and floor * PEER_X_FLOOR > LONG_RUN_S)
        )
    ]
    runners = {
        name: (lambda make=make: _as_stage(make(short), stage)) if name in shortened
        else (lambda make=make: make(iters))
        for name, make in factories.items()
    }
    nz, ny, nx = p.truth.shape
    note = (f"3D volume {nz}x{ny}x{nx} as one problem, 3D wavelet; true coil maps, absolute lambda (mrirecon "
            "relative=False, BART -w 1); floor: readout FFT + per iteration a plane-FFT SENSE iteration"
            + (" + host/device copies" if xp is not np else "") + ", without the wavelet passes")
    if shortened:
        note = (f"extrapolated: {', '.join(shortened)} ran {short} of {iters} iterations, whole run "
                f"x{iters / short:g} (set-up too: an upper bound), NRMSE after {short}; ") + note
    n_coils, *volume = p.kspace.shape
    bandwidth = (
        bandwidth_floor(xp, n_coils, tuple(volume), "readout")
        + bandwidth_floor(xp, n_coils, tuple(volume), "normal", iters)
        + transfers
    )
    return {
        "name": f"3D L1-wavelet {iters} it, lam {CS_LAM:g}",
        "bandwidth_s": bandwidth,
        "score": lambda x: nrmse(x, p.truth),
        "floor_s": floor,
        "note": note,
        "runners": runners,
        "stage_weights": {stage: iters / short} if shortened else {},
    }
