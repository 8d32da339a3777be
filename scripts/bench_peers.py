"""The peers the benchmark compares mrirecon with: SigPy (NumPy, or CuPy on a GPU) and BART (CLI via .cfl).

Each runner is a zero-argument callable returning ``(host output, {stage: seconds})``; only the tool's
own work is inside the stages (for BART: the ``bart`` processes, which read and write their .cfl files
on a RAM disk; writing the inputs beforehand and reading the outputs back are not timed).
Parameters are matched to mrirecon's: same lambda (BART's automatic scaling off with ``-w 1``), same
CG iteration count, same ESPIRiT kernel/calibration/threshold/crop and 30 eigenvector iterations.

Layouts: NumPy arrays are C-order ``(coil, ky, kx)``; BART's dims are Fortran-order
``[kx, ky, kz, coil, ..., slice (dim 13)]``, so a NumPy array maps to BART by reversing its axes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench_problems import CS_ITERS, CS_LAM, ESPIRIT, ITERS, LAM
from bench_timing import Runner, single_stage, timed

from mrirecon.kernels.coil import WAIT_POLICY_DEFAULTED

BART_SLICE_DIM = 13  # BART's SLICE_DIM: a batch dim that pics neither transforms nor couples
# regularisation options of ``bart pics`` by kind: l1-wavelet (FISTA, BART's Daubechies wavelet with
# random cycle spinning) and anisotropic TV over dims 0 and 1 (flags 3, no joint threshold; ADMM)
BART_REGULARISERS = {"l1wavelet": ("-l1", "-r", CS_LAM), "tv": ("-R", f"T:3:0:{CS_LAM}")}


def sigpy_module() -> Any | None:
    """The ``sigpy`` module, or None when it is not installed."""
    try:
        import sigpy
    except ImportError:
        return None
    return sigpy


def sigpy_device(use_gpu: bool) -> Any | None:
    """SigPy's CPU device, or its GPU 0 (None when SigPy or CuPy is missing)."""
    sp = sigpy_module()
    if sp is None:
        return None
    if not use_gpu:
        return sp.cpu_device
    if not sp.config.cupy_enabled:
        return None
    return sp.Device(0)


class SigPy:
    """Runners for SigPy's EspiritCalib, SenseRecon, L1WaveletRecon, TotalVariationRecon and inverse FFT + RSS."""

    def __init__(self, device: Any):
        import sigpy as sp
        import sigpy.mri

        self.sp = sp
        self.app = sigpy.mri.app
        self.device = device
        self.xp = device.xp

    def _host(self, x: Any) -> np.ndarray:
        return self.sp.to_device(x, self.sp.cpu_device)

    def espirit(self, ksp: np.ndarray) -> Runner:
        """ESPIRiT maps (coil, ny, nx) from host k-space."""

        def work() -> np.ndarray:
            y = self.sp.to_device(ksp, self.device)
            maps = self.app.EspiritCalib(
                y,
                calib_width=ESPIRIT["calib"],
                thresh=ESPIRIT["thresh"],
                kernel_width=ESPIRIT["kernel"],
                crop=ESPIRIT["crop"],
                max_iter=ESPIRIT["max_iter"],
                device=self.device,
                show_pbar=False,
            ).run()
            return self._host(maps)

        return single_stage(work, self.xp)

    def _sense(self, ksp: Any, maps: Any, weights: np.ndarray) -> Any:
        """SenseRecon with explicit sampling weights; k-space, maps and weights moved to SigPy's device once
        (given host maps, SigPy's ``Multiply`` would copy them to the GPU at every application)."""
        ksp, maps, weights = (self.sp.to_device(a, self.device) for a in (ksp, maps, weights))
        return self.app.SenseRecon(
            ksp, maps, lamda=LAM, weights=weights, max_iter=ITERS, device=self.device, show_pbar=False
        ).run()

    def sense(self, ksp: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> Runner:
        """CG-SENSE image (ny, nx) with the given maps and sampling weights."""
        weights = mask.astype(np.float32)
        return single_stage(lambda: self._host(self._sense(ksp, maps, weights)), self.xp)

    def regularised(self, ksp: np.ndarray, maps: np.ndarray, mask: np.ndarray, kind: str) -> Runner:
        """``L1WaveletRecon`` (kind "l1wavelet", db4) or ``TotalVariationRecon`` ("tv"), CS_LAM, CS_ITERS."""
        app = {"l1wavelet": self.app.L1WaveletRecon, "tv": self.app.TotalVariationRecon}[kind]
        weights = mask.astype(np.float32)

        def work() -> np.ndarray:
            y, w, s = (self.sp.to_device(a, self.device) for a in (ksp, weights, maps))
            return self._host(
                app(y, s, CS_LAM, weights=w, max_iter=CS_ITERS, device=self.device, show_pbar=False).run()
            )

        return single_stage(work, self.xp)

    def l1wavelet_volume(self, ksp: np.ndarray, maps: np.ndarray, mask: np.ndarray, max_iter: int) -> Runner:
        """3D ``L1WaveletRecon`` (db4, CS_LAM, ``max_iter`` iterations) of (coil, z, y, x) k-space, ``mask``
        over (y, x). The maps go to the device inside the run too: given host maps, SigPy's ``Multiply``
        copies them to the GPU at every application. Its wavelet runs through PyWavelets on the host."""
        weights = mask.astype(np.float32)

        def work() -> np.ndarray:
            y, w, s = (self.sp.to_device(a, self.device) for a in (ksp, weights, maps))
            return self._host(self.app.L1WaveletRecon(
                y, s, CS_LAM, weights=w, max_iter=max_iter, device=self.device, show_pbar=False).run())

        return single_stage(work, self.xp)

    def zerofill(self, ksp: np.ndarray) -> Runner:
        """Root-sum-of-squares of the inverse FFT of the zero-filled k-space."""

        def work() -> np.ndarray:
            y = self.sp.to_device(ksp, self.device)
            return self._host(self.sp.rss(self.sp.ifft(y, axes=(-2, -1)), axes=(0,)))

        return single_stage(work, self.xp)

    def sense_slices(self, ksp: np.ndarray, maps_by_slice: np.ndarray, mask: np.ndarray, slices: range) -> Runner:
        """P2: inverse FFT along the readout (axis 1) of the whole volume, then CG-SENSE per slice."""
        weights = mask.astype(np.float32)

        def run() -> tuple[np.ndarray, dict[str, float]]:
            def readout() -> Any:
                hybrid = self.sp.ifft(self.sp.to_device(ksp, self.device), axes=(1,))
                return self.xp.ascontiguousarray(hybrid.transpose(1, 0, 2, 3))

            hybrid, t_readout = timed(readout, self.xp)
            images, t_solve = timed(
                lambda: np.stack([self._host(self._sense(hybrid[s], maps_by_slice[s], weights)) for s in slices]),
                self.xp,
            )
            return images, {"readout": t_readout, "solve": t_solve}

        return run


def bart_executable() -> str | None:
    """Path of the ``bart`` command, or None when BART is not installed."""
    return shutil.which("bart")


def _to_bart(array: np.ndarray, n_dims: int) -> np.ndarray:
    """NumPy C-order array -> BART dims (axes reversed), padded with singleton dims to ``n_dims``."""
    return array.reshape((1,) * (n_dims - array.ndim) + array.shape).T


def _from_bart(array: np.ndarray) -> np.ndarray:
    """BART array -> NumPy C-order axes, singleton dims dropped."""
    return np.ascontiguousarray(np.squeeze(array).T)


def bart_traj(coord: np.ndarray) -> np.ndarray:
    """mrirecon trajectory (spokes, samples, ndim), axes ((z,) y, x) in cycles/FOV -> BART's (3, samples,
    spokes) with (kx, ky, kz) first; both count k in cycles per FOV (k * N), so only the order changes."""
    traj = np.zeros(coord.shape[:-1] + (3,))
    traj[..., : coord.shape[-1]] = coord[..., ::-1]
    return _to_bart(traj, 3)


def _slice_major_to_bart(array: np.ndarray) -> np.ndarray:
    """(slice, coil, ky, kx) NumPy -> BART [kx, ky, 1, coil, 1 ..., slice at dim 13]."""
    n_slices, n_coils, ny, nx = array.shape
    return array.reshape((n_slices,) + (1,) * (BART_SLICE_DIM - 4) + (n_coils, 1, ny, nx)).T


class Bart:
    """BART through its CLI: inputs written once as .cfl on a RAM disk, each call timed as a process."""

    def __init__(self, threads: int):
        root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = Path(tempfile.mkdtemp(prefix="mrirecon-bench-", dir=root))
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if WAIT_POLICY_DEFAULTED:  # mrirecon's own OpenMP default, not the user's: BART keeps its default
            self.env.pop("OMP_WAIT_POLICY", None)

    def close(self) -> None:
        """Remove the scratch folder and its .cfl files."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def put(self, name: str, bart_array: np.ndarray) -> str:
        """Write a BART-ordered array as ``name``.cfl/.hdr in the scratch folder (untimed)."""
        from mrirecon.io import write_cfl

        write_cfl(self.dir / name, np.asarray(bart_array, dtype=np.complex64))
        return name

    def get(self, name: str) -> np.ndarray:
        """Read ``name``.cfl back, BART-ordered (untimed)."""
        from mrirecon.io import read_cfl

        return read_cfl(self.dir / name)

    def call(self, *args: Any) -> float:
        """Run ``bart *args`` in the scratch folder; its wall time (s). Fails loudly with BART's message."""
        cmd = ["bart", *map(str, args)]
        result, seconds = timed(
            lambda: subprocess.run(cmd, cwd=self.dir, env=self.env, capture_output=True, text=True)
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
        return seconds

    def _pics(self, ksp: str, maps: str, pattern: str, out: str) -> float:
        """CG with l2 regularisation: (A^H A + lambda I) x = A^H y, no data scaling (-w 1)."""
        return self.call("pics", "-l2", "-r", LAM, "-i", ITERS, "-w", 1, "-p", pattern, ksp, maps, out)

    def regularised(self, ksp: np.ndarray, maps: np.ndarray, mask: np.ndarray, kind: str) -> Runner:
        """``bart pics`` with l1-wavelet or TV (``BART_REGULARISERS``), CS_ITERS iterations, no data scaling."""
        k = self.put("cs_ksp", _to_bart(ksp[:, None], 4))
        m = self.put("cs_maps", _to_bart(maps[:, None], 4))
        p = self.put("cs_pat", _to_bart(mask.astype(np.complex64), 3))

        def run() -> tuple[np.ndarray, dict[str, float]]:
            t = self.call("pics", *BART_REGULARISERS[kind], "-i", CS_ITERS, "-w", 1, "-p", p, k, m, "cs_out")
            return _from_bart(self.get("cs_out")), {"all": t}

        return run

    def l1wavelet_volume(self, ksp: np.ndarray, maps: np.ndarray, mask: np.ndarray, max_iter: int) -> Runner:
        """``bart pics -l1`` (its wavelet over dims 0-2), CS_LAM, ``max_iter`` iterations, no data scaling, on
        (coil, z, y, x) k-space; ``mask`` over (y, x), repeated along z (pics wants the pattern's dims equal
        to the k-space's but for the coils)."""
        k = self.put("l1vol_ksp", _to_bart(ksp, 4))
        m = self.put("l1vol_maps", _to_bart(maps, 4))
        p = self.put("l1vol_pat", _to_bart(np.broadcast_to(mask, ksp.shape[1:]).astype(np.complex64), 3))

        def run() -> tuple[np.ndarray, dict[str, float]]:
            t = self.call("pics", *BART_REGULARISERS["l1wavelet"], "-i", max_iter, "-w", 1, "-p", p, k, m, "l1vol_out")
            return _from_bart(self.get("l1vol_out")), {"all": t}

        return run

    def espirit(self, ksp: np.ndarray) -> Runner:
        """``bart ecalib`` with one map; its -t compares sigma_i/sigma_0 with sqrt(t), so t = thresh^2."""
        k = self.put("ecal_ksp", _to_bart(ksp[:, None], 4))

        def run() -> tuple[np.ndarray, dict[str, float]]:
            t = self.call(
                "ecalib", "-m", 1, "-k", ESPIRIT["kernel"], "-r", ESPIRIT["calib"],
                "-t", ESPIRIT["thresh"] ** 2, "-c", ESPIRIT["crop"], k, "ecal_maps",
            )
            return _from_bart(self.get("ecal_maps")), {"all": t}

        return run

    def sense(self, ksp: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> Runner:
        """``bart pics -l2`` CG-SENSE on one 2D slice."""
        k = self.put("sense_ksp", _to_bart(ksp[:, None], 4))
        m = self.put("sense_maps", _to_bart(maps[:, None], 4))
        p = self.put("sense_pat", _to_bart(mask.astype(np.complex64), 3))

        def run() -> tuple[np.ndarray, dict[str, float]]:
            t = self._pics(k, m, p, "sense_out")
            return _from_bart(self.get("sense_out")), {"all": t}

        return run

    def zerofill(self, ksp: np.ndarray) -> Runner:
        """``bart fft -i -u`` over both spatial dims, then ``bart rss`` over coils."""
        k = self.put("zf_ksp", _to_bart(ksp[:, None], 4))

        def run() -> tuple[np.ndarray, dict[str, float]]:
            t = self.call("fft", "-i", "-u", 3, k, "zf_coils") + self.call("rss", 8, "zf_coils", "zf_out")
            return _from_bart(self.get("zf_out")), {"all": t}

        return run

    def nufft(self, coord: np.ndarray, image: np.ndarray, kspace: np.ndarray) -> tuple[Runner, Runner]:
        """``bart nufft`` forward (image -> samples) and ``bart nufft -a`` adjoint (samples -> image), its defaults.

        ``coord`` (spokes, samples, ndim) in cycles/FOV; ``image`` (coil, *spatial) is the forward input and
        ``kspace`` (coil, spokes, samples) the adjoint input, both NumPy C-order. BART's NUFFT has its own
        scaling, so compare after a scale fit. Returns the two runners (outputs in NumPy order).
        """
        t = self.put("nufft_traj", bart_traj(coord))
        padded = image.reshape(image.shape[:1] + (1,) * (4 - image.ndim) + image.shape[1:])  # (coil, z, y, x)
        x = self.put("nufft_img", padded.T)  # [x, y, z, coil]
        y = self.put("nufft_ksp", kspace[..., None].T)  # [1, samples, spokes, coil]
        dims = ":".join(str(n) for n in (image.shape[1:][::-1] + (1, 1))[:3])

        def forward() -> tuple[np.ndarray, dict[str, float]]:
            seconds = self.call("nufft", t, x, "nufft_fwd")
            return _from_bart(self.get("nufft_fwd")).reshape(kspace.shape), {"all": seconds}

        def adjoint() -> tuple[np.ndarray, dict[str, float]]:
            seconds = self.call("nufft", "-a", "-d", dims, t, y, "nufft_adj")
            return _from_bart(self.get("nufft_adj")).reshape(image.shape), {"all": seconds}

        return forward, adjoint

    def sense_slices(self, ksp: np.ndarray, maps_by_slice: np.ndarray, mask: np.ndarray, slices: range) -> Runner:
        """P2: ``bart fft`` along the readout, slices moved to BART's slice dim, one ``pics`` over them.

        BART solves the selected slices jointly (one CG over the block-diagonal system): the same
        minimiser as slice-by-slice CG, with shared step sizes. Its pattern must carry the slice dim.
        """
        k = self.put("vol_ksp", _to_bart(ksp, 4))  # [kx, ky, readout, coil]
        m = self.put("vol_maps", _slice_major_to_bart(maps_by_slice[slices.start : slices.stop]))
        n = len(slices)
        p = self.put("vol_pat", _slice_major_to_bart(np.broadcast_to(mask, (n, 1) + mask.shape).astype(np.complex64)))
        subset = slices != range(maps_by_slice.shape[0])

        def run() -> tuple[np.ndarray, dict[str, float]]:
            t_readout = self.call("fft", "-i", "-u", 4, k, "vol_hyb") + self.call(
                "transpose", 2, BART_SLICE_DIM, "vol_hyb", "vol_slices"
            )
            source = "vol_slices"
            t_solve = 0.0
            if subset:
                t_solve += self.call("extract", BART_SLICE_DIM, slices.start, slices.stop, source, "vol_subset")
                source = "vol_subset"
            t_solve += self._pics(source, m, p, "vol_out")
            out = self.get("vol_out").reshape(mask.shape[::-1] + (n,), order="F").T
            return np.ascontiguousarray(out), {"readout": t_readout, "solve": t_solve}

        return run
