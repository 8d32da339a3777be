"""P2L1, the 3D L1-wavelet exam of ``scripts/benchmark.py`` (``scripts/bench_exam3d.py``), at a tiny size:
the task's rows (time, NRMSE, floor, extrapolation), its peers' 3D layouts, and the 3D wavelet through
the numba.cuda twins under the CUDA simulator (the path the GPU row takes)."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cudasim import simulated_output
from mrirecon import KSpaceHeader
from mrirecon.sim import birdcage_maps, poisson_disc_mask, shepp_logan, simulate

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_exam3d  # noqa: E402
import benchmark  # noqa: E402
from bench_problems import Problem3D  # noqa: E402

SHAPE = (16, 32, 32)  # (readout, ny, nx), the readout first as in P2


@pytest.fixture(scope="module")
def tiny() -> Problem3D:
    """P2 in miniature: 16x32x32 Shepp-Logan, 4 birdcage coils, 32x32 plane Poisson disc R = 3, sigma 0.005."""
    truth = shepp_logan(SHAPE).astype(np.complex64)
    maps = birdcage_maps(4, SHAPE)
    plane = np.asarray(poisson_disc_mask(SHAPE[1:], 3.0, (8, 8), seed=2), dtype=bool)
    ksp = simulate(truth, maps, mask=np.broadcast_to(plane, SHAPE), noise_sigma=0.005, seed=3)
    return Problem3D(kspace=np.ascontiguousarray(ksp.data, dtype=np.complex64), truth=truth, maps=maps, mask=plane)


def _row(p: Problem3D, tool: str, peers: dict, device: str = "cpu", xp=np, **options) -> benchmark.Row:
    """One measured row of the P2L1 task built by the module's own functions (no warm-up, one run)."""
    fields = bench_exam3d.exam_task(p, KSpaceHeader(), peers, device, xp, repeats=1, **options)
    task = benchmark.Task(bench_exam3d.PROBLEM, **fields)
    assert tool in task.runners
    return benchmark.measure(task, tool, repeats=1, warmup=0)


def test_mrirecon_row_has_time_nrmse_and_floor(tiny):
    row = _row(tiny, "mrirecon", {}, quick=False, iters=2)
    assert row.problem == "P2L1" and row.task == "3D L1-wavelet 2 it, lam 0.005"
    assert not row.note.startswith("failed"), row.note
    assert row.median_s is not None and 0 < row.median_s < 60
    assert row.nrmse is not None and np.isfinite(row.nrmse) and row.nrmse < 1
    assert row.floor_s is not None and row.floor_s > 0
    assert list(row.stages_s) == ["all"] and "extrapolated" not in row.note


def test_the_exam_is_one_3d_problem_with_a_3d_wavelet(tiny, monkeypatch):
    """The row's image is ``recon(..., "l1wavelet")`` of the whole volume, whose wavelet spans all three axes."""
    import mrirecon
    from mrirecon.methods import l1wavelet as method

    made = []

    class Spy(method.Wavelet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(method, "Wavelet", Spy)
    ksp = bench_exam3d.exam_kspace(tiny, KSpaceHeader())
    assert ksp.spatial_shape == SHAPE and ksp.n_coils == 4
    image, _ = bench_exam3d.mrirecon_exam(ksp, tiny.maps, "cpu", 3, np)()
    assert [(w.ishape, w.ndim) for w in made] == [(SHAPE, 3)]
    volume = mrirecon.recon(ksp, "l1wavelet", device="cpu", lam=0.005, relative=False, max_iter=3, maps=tiny.maps)
    assert volume.dims == ("z", "y", "x")
    np.testing.assert_array_equal(image, volume.data)


def test_quick_cpu_runs_ten_iterations_and_extrapolates(tiny):
    """``--quick`` on the CPU: mrirecon runs SHORT_ITERS of ``iters`` iterations, the time scaled, the note says so."""
    iters = 2 * bench_exam3d.SHORT_ITERS
    row = _row(tiny, "mrirecon", {}, quick=True, iters=iters)
    stage = f"{bench_exam3d.SHORT_ITERS} of {iters} it"
    assert list(row.stages_s) == [stage]
    assert row.median_s == pytest.approx(2 * row.stages_s[stage])
    assert row.note.startswith("extrapolated: mrirecon ran 10 of 20 iterations")
    assert row.nrmse is not None and row.nrmse < 1


def test_peers_and_shortened_runs_are_chosen_by_device(tiny):
    """CPU: SigPy and BART, shortened only when predicted long; CUDA: SigPy on CuPy alone, always shortened,
    and mrirecon runs every iteration even with ``quick`` (the building of runners runs no tool)."""
    peers = {"sigpy": object(), "sigpy-cupy": object(), "bart": object()}
    on_cpu = bench_exam3d.exam_task(tiny, KSpaceHeader(), peers, "cpu", np, quick=False, repeats=1, iters=20)
    assert set(on_cpu["runners"]) == {"mrirecon", "sigpy", "bart"}
    assert on_cpu["stage_weights"] == {}  # the tiny floor predicts short runs: every tool runs all 20 iterations
    on_gpu = bench_exam3d.exam_task(tiny, KSpaceHeader(), peers, "cuda", np, quick=True, repeats=1, iters=20)
    assert set(on_gpu["runners"]) == {"mrirecon", "sigpy-cupy"}
    assert on_gpu["stage_weights"] == {"10 of 20 it": 2.0}
    assert on_gpu["note"].startswith("extrapolated: sigpy-cupy ran 10 of 20 iterations")


@pytest.mark.parametrize("name", ["sigpy", "bart"])
def test_cpu_peers_solve_the_same_volume(tiny, name):
    """The peers' 3D layouts: same volume, same orientation (a scrambled axis would not reach this NRMSE)."""
    if name == "sigpy":
        sigpy = pytest.importorskip("sigpy")
        from bench_peers import SigPy

        peer = SigPy(sigpy.cpu_device)
        row = _row(tiny, name, {name: peer}, quick=False, iters=10)
    else:
        from bench_peers import Bart, bart_executable

        if bart_executable() is None:
            pytest.skip("bart not on PATH")
        peer = Bart(threads=1)
        try:
            row = _row(tiny, name, {name: peer}, quick=False, iters=10)
        finally:
            peer.close()
    ours = _row(tiny, "mrirecon", {}, quick=False, iters=10)
    assert not row.note.startswith("failed"), row.note
    assert row.nrmse is not None and row.nrmse < 1.5 * ours.nrmse


def test_problems_option_takes_p2l1_and_adds_it_on_cuda_by_default(monkeypatch):
    assert benchmark.parse_args([]).problems == ["P1", "P2", "P3"]
    assert benchmark.parse_args(["--problems", "p2l1,P1"]).problems == ["P2L1", "P1"]
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--problems", "P4"])
    monkeypatch.setattr(benchmark, "gpu_available", lambda: True)
    assert benchmark.parse_args(["--device", "cuda"]).problems == ["P1", "P2", "P3", "P2L1"]


def test_main_runs_p2l1_with_its_own_peers_only(tiny, monkeypatch, tmp_path, capsys):
    """``benchmark.py --problems P2L1`` end to end on the tiny volume: one row per tool of the task (a peer the
    task does not use gets no failed row), the JSON written, mrirecon's row complete."""
    pytest.importorskip("sigpy")
    monkeypatch.setattr(benchmark, "make_p2", lambda: tiny)
    monkeypatch.setitem(bench_exam3d.PEERS, "cpu", ("sigpy",))  # BART, when installed, is a peer the task skips
    out = tmp_path / "p2l1.json"
    assert benchmark.main(["--problems", "P2L1", "--repeats", "1", "--warmup", "0", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["tool"] for r in rows] == ["mrirecon", "sigpy"]
    assert all(r["problem"] == "P2L1" and r["median_s"] > 0 and 0 < r["nrmse"] < 1 and r["floor_s"] > 0 for r in rows)
    assert "P2L1 3D L1-wavelet 100 it" in capsys.readouterr().out


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import wavelet as kw
    from mrirecon.wavelet import Wavelet

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((8, 12, 16)) + 1j * rng.standard_normal((8, 12, 16))).astype(np.complex64)
    w = Wavelet(x.shape, wave="db2", levels=2).shifted((3, 1, 6))
    cpu_c = w(x)
    cpu_x = w.H(cpu_c)
    kw._launch = lambda xp, cpu, gpu, *args: gpu(*args)  # every level through the numba.cuda twins
    gpu_c = w(x)
    gpu_x = w.H(gpu_c)
    print(np.abs(gpu_c - cpu_c).max(), np.abs(gpu_x - cpu_x).max(), np.abs(gpu_x - x).max())
    """
)


def test_3d_wavelet_through_cuda_twins_under_simulator():
    """The exam's 3D, cycle-spun wavelet on the GPU path: each axis and level through the numba.cuda twins
    (NUMBA_ENABLE_CUDASIM=1, set before numba.cuda is imported) equals the CPU kernels and inverts."""
    out = simulated_output(_SIM_SCRIPT)
    assert max(float(v) for v in out[-3:]) < 1e-5


@pytest.mark.gpu
def test_gpu_row_matches_the_cpu_row(tiny):
    """On CuPy: the row has a time, the floor counts the copies, and the NRMSE is the CPU's (same shifts)."""
    import cupy

    gpu = _row(tiny, "mrirecon", {}, device="cuda", xp=cupy, quick=True, iters=20)
    cpu = _row(tiny, "mrirecon", {}, quick=False, iters=20)
    assert gpu.median_s is not None and gpu.floor_s is not None and gpu.floor_s > 0
    assert list(gpu.stages_s) == ["all"]  # --quick shortens mrirecon on the CPU only
    assert "host/device copies" in gpu.note
    assert gpu.nrmse == pytest.approx(cpu.nrmse, abs=1e-4)
