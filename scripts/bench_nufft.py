"""NUFFT and non-Cartesian CG-SENSE benchmark: mrirecon against SigPy (and BART when installed), same run.

Not a test. Prints, per task and tool, the median wall time over ``--repeats`` runs after one warm-up,
NUFFT throughput in non-uniform points per second (samples x coils / time) and, for the NUFFT, its
relative error against mrirecon's high-accuracy NUFFT (an NDFT at these sizes would take minutes).

    .venv/bin/python scripts/bench_nufft.py                 # CPU: mrirecon, SigPy, BART
    .venv/bin/python scripts/bench_nufft.py --device cuda   # GPU: mrirecon and SigPy on CuPy
    .venv/bin/python scripts/bench_nufft.py --quick         # smaller 3D problem, fewer coil counts
    .venv/bin/python scripts/bench_nufft.py --tasks sense   # CG-SENSE only (with its floor)

Problems (seeded): 2D golden-angle radial 402 spokes x 512 samples (readout oversampled 2x) on 256^2;
3D kooshball 64^3 (4000 spokes x 128); 8 to 32 coils; stack-of-stars 32 x 64 x 256 on 32 x 128^2
(3D NUFFT against FFT along kz + 2D NUFFT per partition). CG-SENSE: 402 golden-angle spokes x 256 samples,
8 birdcage coils, 256^2 Shepp-Logan, true coil maps for every tool (the solver alone is timed),
30 iterations, lambda matched (mrirecon lam = 0.01 is SigPy lamda = 0.01 * samples / pixels).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys

import numpy as np
from bench_bandwidth import bandwidth_floor
from bench_peers import Bart, bart_executable, bart_traj, sigpy_device
from bench_timing import median_time, timed, toeplitz_sense_iteration_floor
from mrirecon.kernels.backend import get_array_module, to_device, to_numpy
from mrirecon.kernels.nufft import NufftPlan

from mrirecon import sim
from mrirecon.data import KSpace, KSpaceHeader
from mrirecon.methods import get_method
from mrirecon.nufft import ACCURACY, NUFFT, StackedNUFFT


def rel_err(a, b) -> float:
    a, b = to_numpy(a), to_numpy(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def scaled_rel_err(a, b) -> float:
    """||s a - b|| / ||b|| with the least-squares complex scale s (BART's NUFFT scales differently)."""
    a, b = np.asarray(to_numpy(a), np.complex128).ravel(), np.asarray(to_numpy(b), np.complex128).ravel()
    return float(np.linalg.norm(a * (np.vdot(a, b) / np.vdot(a, a)) - b) / np.linalg.norm(b))


def scaled_nrmse(x, truth) -> float:
    """NRMSE of |x| against |truth| after the least-squares scale (tools differ in their FFT scaling)."""
    x, truth = np.abs(to_numpy(x)).ravel(), np.abs(to_numpy(truth)).ravel()
    return float(np.linalg.norm(x * (x @ truth) / (x @ x) - truth) / np.linalg.norm(truth))


def _images(n_coils: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_coils,) + shape, np.float32) + 1j * rng.standard_normal((n_coils,) + shape, np.float32)).astype(
        np.complex64
    )


def bench_nufft(name: str, coord: np.ndarray, shape: tuple[int, ...], coils: list[int], args, rows: list[dict]) -> None:
    """Forward and adjoint NUFFT throughput of mrirecon (default accuracy), SigPy and BART (their defaults)."""
    xp = np if args.device == "cpu" else __import__("cupy")
    n_points = math.prod(coord.shape[:-1])
    dev_coord = to_device(coord, args.device)
    spdev = sigpy_device(args.device != "cpu")
    for n_coils in coils:
        first = len(rows)
        image = to_device(_images(n_coils, shape, 1), args.device)
        op = NUFFT(dev_coord, shape, (n_coils,))
        ref = NUFFT(dev_coord, shape, (n_coils,), accuracy="high")
        y_ref = ref(image)
        x_ref = ref.H(y_ref)
        plan_s = timed(lambda: NufftPlan(coord.reshape(-1, len(shape)), shape, *ACCURACY["default"], xp), xp)[1]
        fwd = median_time(lambda: op(image), args.repeats, xp)
        adj = median_time(lambda: op.H(y_ref), args.repeats, xp)
        rows += [
            dict(task=f"{name} fwd", coils=n_coils, tool="mrirecon", seconds=fwd, pts_per_s=n_points * n_coils / fwd,
                 rel_err=rel_err(op(image), y_ref), note=f"plan {plan_s:.2f} s"),
            dict(task=f"{name} adj", coils=n_coils, tool="mrirecon", seconds=adj, pts_per_s=n_points * n_coils / adj,
                 rel_err=rel_err(op.H(y_ref), x_ref)),
        ]
        if spdev is not None:
            import sigpy as sp

            with spdev:
                s_coord = sp.to_device(coord.astype(np.float32), spdev)
                s_image = sp.to_device(to_numpy(image), spdev)
                s_y = sp.to_device(to_numpy(y_ref), spdev)
                oshape = (n_coils,) + shape
                sfwd = median_time(lambda: sp.nufft(s_image, s_coord), args.repeats, spdev.xp)
                sadj = median_time(lambda: sp.nufft_adjoint(s_y, s_coord, oshape), args.repeats, spdev.xp)
                rows += [
                    dict(task=f"{name} fwd", coils=n_coils, tool=f"sigpy-{args.device}", seconds=sfwd,
                         pts_per_s=n_points * n_coils / sfwd, rel_err=rel_err(sp.nufft(s_image, s_coord), y_ref)),
                    dict(task=f"{name} adj", coils=n_coils, tool=f"sigpy-{args.device}", seconds=sadj,
                         pts_per_s=n_points * n_coils / sadj, rel_err=rel_err(sp.nufft_adjoint(s_y, s_coord, oshape), x_ref)),
                ]
        if args.device == "cpu" and bart_executable() and not args.no_bart:
            rows += bart_nufft_rows(name, coord, to_numpy(image), to_numpy(y_ref), to_numpy(x_ref), args)
        print_rows(rows[first:])


def bart_nufft_rows(name: str, coord: np.ndarray, image: np.ndarray, y_ref: np.ndarray, x_ref: np.ndarray,
                    args) -> list[dict]:
    """``bart nufft`` forward and ``-a`` adjoint on the inputs mrirecon got: process wall time (one warm-up,
    median of ``args.repeats``), error against the high-accuracy NUFFT after a least-squares complex scale."""
    n_points = image.shape[0] * math.prod(coord.shape[:-1])
    bart = Bart(threads=args.threads)
    rows = []
    try:
        for label, run, ref in zip(("fwd", "adj"), bart.nufft(coord, image, y_ref), (y_ref, x_ref)):
            run()  # warm-up
            runs = [run() for _ in range(args.repeats)]
            seconds = float(np.median([stages["all"] for _, stages in runs]))
            rows.append(dict(task=f"{name} {label}", coils=image.shape[0], tool="bart-cpu", seconds=seconds,
                             pts_per_s=n_points / seconds, rel_err=scaled_rel_err(runs[-1][0], ref),
                             note="bart nufft (process wall time); rel. error after a complex scale fit"))
    finally:
        bart.close()
    return rows


def bench_stack(args, rows: list[dict]) -> None:
    """Stack-of-stars 32 partitions x 64 spokes x 256 on 32x128^2, 8 coils: the 3D NUFFT against the
    FFT-along-kz + 2D-per-partition ``StackedNUFFT`` that the methods use; forward, adjoint, normal."""
    shape, n_coils = (32, 128, 128), 8
    coord = to_device(sim.stack_of_stars(64, 256, 32, matrix=128), args.device)
    xp = get_array_module(coord)
    image = to_device(_images(n_coils, shape, 2), args.device)
    reference = NUFFT(coord, shape, (n_coils,), accuracy="high")
    y_ref = reference(image)
    for tool, op in (("mrirecon-3d", NUFFT(coord, shape, (n_coils,))), ("mrirecon-stack", StackedNUFFT(coord, shape, (n_coils,)))):
        for task, fn, ref in (("fwd", lambda o=op: o(image), y_ref), ("adj", lambda o=op: o.H(y_ref), reference.H(y_ref)),
                              ("normal", lambda o=op: o.N(image), reference.H(y_ref))):
            seconds = median_time(fn, args.repeats, xp)
            rows.append({"task": f"stack-of-stars 32x64x256 {task}", "coils": n_coils, "tool": tool, "seconds": seconds,
                         "pts_per_s": math.prod(coord.shape[:-1]) * n_coils / seconds, "rel_err": rel_err(fn(), ref)})
    print_rows(rows[-6:])


SENSE_ITERS = 30


def bench_sense(args, rows: list[dict]) -> None:
    """CG-SENSE, 30 iterations, true maps: mrirecon (Toeplitz normal op), SigPy SenseRecon, BART pics -t.

    Every row carries ``floor_s``: 30 times ``bench_timing.toeplitz_sense_iteration_floor`` (the FFT pair
    of every coil on the 2N grid, one expand and one combine pass), measured here, in this run, and
    ``bandwidth_s``: 30 Toeplitz iterations' bytes on the 2N grid at the memory bandwidth (``bench_bandwidth``).
    """
    n, n_coils, lam = 256, 8, 0.01
    truth = sim.shepp_logan((n, n)).astype(np.complex64)
    maps = sim.birdcage_maps(n_coils, (n, n))
    coord = sim.radial(402, n, matrix=n, ordering="golden")
    y = NUFFT(coord, (n, n), (n_coils,), accuracy="high")(maps * truth)
    y = y + 0.005 * _images(1, y.shape, 5)[0] / math.sqrt(2)
    density = y[0].size / n**2
    ksp = KSpace(to_device(y, args.device), ("coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, n, n)),
                 trajectory=to_device(coord, args.device))
    dev_maps = to_device(maps, args.device)
    xp = get_array_module(ksp.data)

    def ours():
        return get_method("nufft_sense")(ksp, lam=lam, max_iter=SENSE_ITERS, tol=0.0, maps=dev_maps)

    first = len(rows)
    seconds = median_time(ours, args.repeats, xp)
    rows.append(dict(task="CG-SENSE 402x256 8ch 256^2", coils=n_coils, tool="mrirecon", seconds=seconds,
                     nrmse=scaled_nrmse(ours(), truth), note="fused Toeplitz SENSE normal operator; plan cached after warm-up"))
    spdev = sigpy_device(args.device != "cpu")
    if spdev is not None:
        import sigpy as sp
        import sigpy.mri.app

        with spdev:
            s_y, s_maps = sp.to_device(y, spdev), sp.to_device(maps, spdev)
            s_coord = sp.to_device(coord.astype(np.float32), spdev)

            def theirs():
                return sigpy.mri.app.SenseRecon(s_y, s_maps, lamda=lam * density, coord=s_coord,
                                                max_iter=SENSE_ITERS, device=spdev, show_pbar=False).run()

            seconds = median_time(theirs, args.repeats, spdev.xp)
            rows.append(dict(task="CG-SENSE 402x256 8ch 256^2", coils=n_coils, tool=f"sigpy-{args.device}",
                             seconds=seconds, nrmse=scaled_nrmse(theirs(), truth)))
    if args.device == "cpu" and bart_executable() and not args.no_bart:
        bart = Bart(threads=args.threads)
        try:
            bart.put("traj", bart_traj(coord))
            bart.put("ksp", y.reshape(n_coils, 402, n, 1).T)
            bart.put("maps", maps.reshape(n_coils, 1, n, n).T)
            cmd = ("pics", "-S", "-l2", "-r", lam * density, "-i", SENSE_ITERS, "-w", 1, "-t", "traj", "ksp", "maps",
                   "out")
            bart.call(*cmd)  # warm-up
            times = [bart.call(*cmd) for _ in range(args.repeats)]
            out = np.ascontiguousarray(np.squeeze(bart.get("out")).T)
            rows.append(dict(task="CG-SENSE 402x256 8ch 256^2", coils=n_coils, tool="bart-cpu",
                             seconds=float(np.median(times)), nrmse=scaled_nrmse(out, truth),
                             note="pics -l2 -t (process wall time, its own scaling; NRMSE after scale fit)"))
        finally:
            bart.close()
    floor = SENSE_ITERS * toeplitz_sense_iteration_floor(xp, n_coils, (n, n), args.repeats)
    bandwidth = bandwidth_floor(xp, n_coils, (2 * n, 2 * n), "normal", SENSE_ITERS)  # the doubled grid
    for r in rows[first:]:
        r["floor_s"], r["bandwidth_s"] = floor, bandwidth
    print_rows(rows[first:])


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        extra = f"{r['pts_per_s'] / 1e6:8.2f} Mpts/s  rel.err {r['rel_err']:.1e}" if "pts_per_s" in r else f"NRMSE {r['nrmse']:.4f}"
        if "floor_s" in r:
            extra += f"  floor {r['floor_s'] * 1e3:.1f} ms (x{r['seconds'] / r['floor_s']:.2f})"
        print(f"{r['task']:<28} {r['coils']:>3}ch  {r['tool']:<12} {r['seconds'] * 1e3:9.1f} ms  {extra}  {r.get('note', '')}")
    sys.stdout.flush()


TASKS = ("2d", "3d", "stack", "sense")  # 2D and 3D NUFFT, stack-of-stars, CG-SENSE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for BART (0: all cores)")
    parser.add_argument("--quick", action="store_true", help="8 and 32 coils only in 2D, 8 in 3D, fewer 3D spokes")
    parser.add_argument("--no-bart", action="store_true")
    parser.add_argument("--json", help="write the rows and the environment here")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)} (default all)")
    args = parser.parse_args()
    import os

    tasks = set(args.tasks.split(","))
    if not tasks <= set(TASKS):
        parser.error(f"unknown tasks {sorted(tasks - set(TASKS))} (known: {', '.join(TASKS)})")
    args.threads = args.threads or os.cpu_count() or 1
    rows: list[dict] = []
    coils_2d = [8, 32] if args.quick else [8, 16, 32]
    if "2d" in tasks:
        bench_nufft("2D radial 402x512 256^2", sim.radial(402, 512, matrix=256), (256, 256), coils_2d, args, rows)
    spokes_3d = 1000 if args.quick else 4000
    if "3d" in tasks:
        bench_nufft(f"3D radial {spokes_3d}x128 64^3", sim.radial_3d(spokes_3d, 128, matrix=64), (64, 64, 64),
                    [8] if args.quick else [8, 16], args, rows)
    if "stack" in tasks:
        bench_stack(args, rows)
    if "sense" in tasks:
        bench_sense(args, rows)
    if args.json:
        env = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "device": args.device}
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
