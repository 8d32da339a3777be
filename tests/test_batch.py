"""Batch pipeline: job model, inputs, presets, planner, OOM fallback, store/resume, log, corrupt input, full disk."""
from __future__ import annotations

import dataclasses
import errno
import json
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage._local as local

from mrirecon import sim
from mrirecon.cli import main, phantom_kspace, write_phantom
from mrirecon.errors import InputError, OutputError
from mrirecon.io import read, write_ismrmrd
from mrirecon.methods import get_method
from mrirecon.pipelines import batch, cluster, planner, reconstruct
from mrirecon.pipelines.joblog import log_path, read_log
from mrirecon.pipelines.store import is_complete, list_series, open_series
from mrirecon.reconstruction import recon

PHI = (sim.SIMULATED_PATIENT.name, sim.SIMULATED_PATIENT.id)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Small phantoms: 6-slice ISMRMRD (fully sampled), 3-slice fastMRI (R=2), one not-HDF5 file."""
    folder = tmp_path_factory.mktemp("inputs")
    out = {"mrd": folder / "a.h5", "fastmri": folder / "sub" / "b.h5", "bad": folder / "broken.h5"}
    out["fastmri"].parent.mkdir()
    write_phantom(out["mrd"], phantom_kspace(matrix=32, slices=6, coils=4), "ismrmrd")
    write_phantom(out["fastmri"], phantom_kspace(matrix=32, slices=3, coils=4, accel=2, calib=8, noise=1e-3),
                  "fastmri")
    out["bad"].write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # an HDF5 signature, then nothing
    return out


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster (threads): monkeypatches reach its workers."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def _job(tmp_path: Path, inputs, **kw) -> batch.Job:
    return batch.Job(inputs=[str(i) for i in inputs], output=tmp_path / "out.zarr", **{"method": "zerofill", **kw})


def _series_for(store: Path, stem: str) -> str:
    (name,) = [n for n in list_series(store) if n.startswith(stem + "_")]
    return name


# --- job model, inputs, presets ---------------------------------------------------------------------
def test_expand_inputs_folders_globs_and_missing(files, tmp_path):
    folder = files["mrd"].parent
    (folder / "notes.md").write_text("not raw")
    found = batch.expand_inputs([str(folder), str(folder / "*.h5"), str(tmp_path / "missing.h5")])
    # the folder gives every raw-suffixed file recursively; the glob adds nothing new; missing stays
    assert found == [files["mrd"].resolve(), files["bad"].resolve(), files["fastmri"].resolve(),
                     (tmp_path / "missing.h5").resolve()]


def test_presets_load_and_bind():
    assert {"brain-2d-sense", "knee-fastmri-sense", "quick-zerofill"} <= set(batch.list_presets())
    for name in batch.list_presets():
        options = batch.job_file_options(name)
        job = batch.Job(inputs=["x.h5"], output="o.zarr", **options)
        get_method(job.method).bind(job.params)  # a preset whose parameters the method rejects fails here


def test_job_file_paths_and_unknown_keys(tmp_path):
    (tmp_path / "job.toml").write_text('inputs = ["raw/*.h5"]\noutput = "out.zarr"\nmethod = "zerofill"\n'
                                       '[params]\nlam = 0.1\n')
    options = batch.job_file_options(tmp_path / "job.toml")
    assert options["inputs"] == [str(tmp_path / "raw/*.h5")] and options["output"] == tmp_path / "out.zarr"
    assert options["params"] == {"lam": 0.1}
    (tmp_path / "bad.toml").write_text('method = "sense"\nworkerz = 3\n')
    with pytest.raises(InputError, match="unknown job option.*workerz"):
        batch.job_file_options(tmp_path / "bad.toml")
    with pytest.raises(InputError, match="no such job file or preset"):
        batch.job_file_options("no-such-preset")


# --- planner ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, matrix, coils", [("zerofill", 48, 6), ("sense", 48, 6), ("sense", 64, 8)])
def test_memory_estimate_bounds_the_measured_peak(method, matrix, coils):
    ksp = phantom_kspace(matrix=matrix, slices=1, coils=coils, accel=2, calib=24).select(slice=0)
    info = get_method(method)
    params = info.bind({"max_iter": 2} if method == "sense" else {})
    info(ksp, **params)  # compile first
    tracemalloc.start()
    info(ksp, **params)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    shape = planner.TaskShape(coils=coils, spatial=(matrix, matrix))
    workspace = planner.estimate_bytes(method, shape, n_tasks=0, params=params)  # the method's share alone
    # measured estimate/peak: zerofill 1.19; sense 1.08 (48x48, 6 coils), 1.15 (64x64, 8 coils)
    assert peak <= workspace <= 1.4 * peak


def test_plan_units_fit_the_budget_and_stay_contiguous():
    shape = planner.TaskShape(coils=8, spatial=(64, 64))
    one, three = (planner.estimate_bytes("sense", shape, n) for n in (1, 3))
    pending = [(i,) for i in (0, 1, 2, 3, 4, 6, 7, 8, 9)]
    units = planner.plan_units(pending, shape, "sense", "cpu", budget=three)
    assert [len(u.indices) for u in units] == [3, 2, 3, 1]  # 5 ends a run; 6-9 is a new run
    assert all(u.estimate_bytes <= three and u.device == "cpu" for u in units)
    assert sum((list(u.indices) for u in units), []) == pending
    # enough units for every worker: 9 tasks, 9 threads -> single-task units
    assert all(len(u.indices) == 1 for u in planner.plan_units(pending, shape, "sense", "cpu", budget=10 * one,
                                                                parallelism=9))
    # a volume task (empty index) never groups
    assert len(planner.plan_units([()], shape, "sense", "cpu", budget=one)) == 1


def test_batched_units_plan_for_the_stacked_solve():
    """On a GPU, sense solves a unit's entries at once: the estimate grows with the unit by the measured
    per-entry workspace (BATCHED_WORKSPACE x K), so fewer tasks fit a budget than one at a time."""
    shape = planner.TaskShape(coils=8, spatial=(128, 128))
    params = get_method("sense").bind({})
    k = shape.kspace_bytes
    one_at_a_time = [planner.estimate_bytes("sense", shape, n, params) for n in (1, 8, 16)]
    together = [planner.estimate_bytes("sense", shape, n, params, batched=True) for n in (1, 8, 16)]
    assert together[0] == one_at_a_time[0]  # a single entry: the one-task workspace
    assert together[2] - together[1] == pytest.approx(8 * (k + shape.image_bytes + planner.BATCHED_WORKSPACE * k), rel=1e-6)
    budget = one_at_a_time[2]
    pending = [(i,) for i in range(32)]
    on_cpu = planner.plan_units(pending, shape, "sense", "cpu", budget=budget, params=params, max_batch=16)
    on_gpu = planner.plan_units(pending, shape, "sense", "cuda", budget=budget, params=params, max_batch=16)
    assert max(len(u.indices) for u in on_cpu) == 16 > max(len(u.indices) for u in on_gpu)
    assert all(u.estimate_bytes <= budget for u in on_gpu)


def test_task_shape_from_info(files):
    from mrirecon.io import open_raw

    with open_raw(files["mrd"]) as raw:
        info = raw.info()
    shape = planner.task_shape(info, ("slice",))
    assert (shape.coils, shape.spatial, shape.per_task) == (4, (32, 32), 1)
    assert shape.kspace_bytes == 4 * 32 * 32 * 8


def test_oom_splits_then_falls_back_to_cpu():
    calls = []

    def attempt(positions, device):  # a simulated device that fits nothing, a CPU that fits one task
        calls.append((tuple(positions), device))
        if device != "cpu" or len(positions) > 1:
            raise MemoryError("simulated")
        return positions[0] * 10

    report = planner.FallbackReport()
    results = planner.run_with_fallback(attempt, 4, "cuda", report)
    assert [r for _, r in results] == [0, 10, 20, 30]
    # 4 -> 2+2 -> 1+1+1+1 on the GPU (7 OOMs), each single task then on the CPU
    assert (report.oom_errors, report.splits, report.cpu_fallbacks) == (7, 3, 4)
    assert report.devices == ["cpu"] * 4
    with pytest.raises(MemoryError, match="more memory than the CPU"):
        planner.run_with_fallback(lambda p, d: (_ for _ in ()).throw(MemoryError()), 1, "cpu",
                                  planner.FallbackReport())
    with pytest.raises(ValueError, match="not oom"):
        planner.run_with_fallback(lambda p, d: (_ for _ in ()).throw(ValueError("not oom")), 2, "cuda",
                                  planner.FallbackReport())
    assert planner.is_out_of_memory(RuntimeError("cuFFT error: CUFFT_ALLOC_FAILED"))


def test_run_task_on_a_simulated_small_gpu_falls_back(files, tmp_path, monkeypatch):
    """A GPU that runs out of memory for every unit: the unit is split, then each slice runs on the CPU."""
    real = reconstruct.recon

    def small_gpu(ksp, method, *, device, **params):
        if device != "cpu":
            raise MemoryError("Out of memory allocating 1,048,576 bytes (simulated device)")
        return real(ksp, method, device=device, **params)

    monkeypatch.setattr(reconstruct, "recon", small_gpu)
    series, _ = reconstruct.prepare_series(files["mrd"], tmp_path / "o.zarr", "zerofill", {})
    outcome = reconstruct.run_task(files["mrd"], series, [(1,), (2,), (3,)], "zerofill", {}, "cuda")
    assert outcome.devices == ("cpu",) * 3 and outcome.fallback.splits == 2 and outcome.fallback.cpu_fallbacks == 3
    for index in outcome.indices:
        series.mark_done(index)
    written = zarr.open_group(tmp_path / "o.zarr", mode="r")[series.name]["complex"][1:4]
    np.testing.assert_array_equal(written, real(read(files["mrd"], slices=[1, 2, 3]), "zerofill", device="cpu").data)


# --- the job: store, resume, log --------------------------------------------------------------------
def test_batch_equals_per_file_recon_and_resumes(files, tmp_path, client):
    job = _job(tmp_path, [files["mrd"], files["fastmri"]], max_batch=2)
    summary = batch.run_job(job, client=client)
    assert (summary.tasks_done, summary.tasks_skipped, summary.tasks_failed, summary.exit_code) == (9, 0, 0, 0)
    assert summary.inputs_complete == 2 and summary.slices_done == 9 and summary.slices_per_s > 0
    for key in ("mrd", "fastmri"):
        name = _series_for(job.output, files[key].stem)
        assert is_complete(job.output, name)
        img = open_series(job.output, name)
        reference = recon(read(files[key]), "zerofill", device="cpu")
        np.testing.assert_array_equal(img.data, reference.data)
        np.testing.assert_allclose(img.affine, reference.affine, atol=1e-12)
    events = read_log(log_path(job.output))
    done = [e for e in events if e["event"] == "task_done"]
    # units of at most max_batch=2 slices: 6 slices -> 3 units, 3 slices -> 2 units
    assert len(done) == 5 and max(len(e["tasks"]) for e in done) == 2
    assert {e["input"] for e in done} == {"a.h5", "b.h5"} and all(e["devices"] == ["cpu"] for e in done)
    assert all({"read", "recon", "write"} <= set(e["timings_s"]) and e["retries"] == 0 for e in done)
    again = batch.run_job(job, client=client)  # everything recorded done: nothing runs
    assert (again.tasks_done, again.tasks_skipped, again.exit_code) == (0, 9, 0)
    fresh = batch.run_job(dataclasses.replace(job, resume=False, inputs=[str(files["fastmri"])]), client=client)
    assert (fresh.tasks_done, fresh.tasks_skipped) == (3, 0)


def test_changed_parameters_start_a_new_series(files, tmp_path, client):
    one = tmp_path / "one.h5"
    write_phantom(one, phantom_kspace(matrix=32, slices=1, coils=4, accel=2, calib=8, noise=1e-3), "ismrmrd")
    for iters in (1, 2):
        batch.run_job(_job(tmp_path, [one], method="sense", params={"max_iter": iters}), client=client)
    names = list_series(tmp_path / "out.zarr")
    assert len(names) == 2 and all(is_complete(tmp_path / "out.zarr", n) for n in names)
    iters = sorted(open_series(tmp_path / "out.zarr", n).provenance.parameters["max_iter"] for n in names)
    assert iters == [1, 2]


def test_log_has_no_patient_data(files, tmp_path, client):
    raw = files["mrd"].read_bytes()
    assert all(p.encode() in raw for p in PHI)  # the input does carry the simulated patient
    batch.run_job(_job(tmp_path, [files["mrd"], files["bad"]]), client=client)
    text = log_path(tmp_path / "out.zarr").read_text()
    assert "task_done" in text and not any(p in text for p in PHI)
    assert str(files["mrd"].parent) not in text  # inputs by file name: folder names can carry PHI


# --- faults -----------------------------------------------------------------------------------------
def test_corrupt_inputs_are_reported_and_the_others_complete(files, tmp_path, capsys):
    nan = tmp_path / "nan.h5"
    ksp = phantom_kspace(matrix=32, slices=3, coils=4)
    ksp.data[1, 0, 5, 5] = np.nan  # slice 1 of 3 cannot be reconstructed
    write_ismrmrd(nan, ksp)
    out = tmp_path / "out.zarr"
    code = main(["batch", str(files["mrd"]), str(files["bad"]), str(nan), "-o", str(out), "--method", "zerofill",
                 "--in-process", "--workers", "2", "--max-batch", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "broken.h5" in err and "corrupt or truncated HDF5" in err and "nan.h5" in err and "NaN" in err
    assert is_complete(out, _series_for(out, "a"))
    assert not any(n.startswith("broken_") for n in list_series(out))  # nothing of it in the store
    nan_series = _series_for(out, "nan")
    assert not is_complete(out, nan_series)
    done = zarr.open_group(out, mode="r")[nan_series]["done"][...]
    assert not done[1] and done[0] and done[2]  # the bad slice is not done; the good ones are kept
    events = read_log(log_path(out))
    failed = [e for e in events if e["event"] == "task_failed"]
    assert len(failed) == 1 and failed[0]["retries"] == 0  # bad input is not retried
    assert [e["input"] for e in events if e["event"] == "input_failed"] == ["broken.h5"]


def test_full_disk_stops_the_job_and_keeps_records_true(files, tmp_path, client, monkeypatch):
    real_put = local._put
    writes = {"n": 0}

    def put(path, value, exclusive=False):
        if "/0/c/" in str(path).replace("\\", "/"):  # magnitude chunks: the first 3 fit, then the disk is full
            writes["n"] += 1
            if writes["n"] > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    job = _job(tmp_path, [files["mrd"]], max_batch=1)
    with pytest.raises(OutputError, match="no space left on device"):
        batch.run_job(job, client=client)
    name = _series_for(job.output, "a")
    assert not is_complete(job.output, name)
    done = zarr.open_group(job.output, mode="r")[name]["done"][...]
    root = job.output / name / "0" / "c"
    chunks = {int(p.relative_to(root).parts[0]) for p in root.rglob("*") if p.is_file()}
    assert 1 <= done.sum() <= 3 and set(np.flatnonzero(done)) <= chunks  # done only where the chunk exists
    assert any(e["event"] == "job_aborted" for e in read_log(log_path(job.output)))
    monkeypatch.setattr(local, "_put", real_put)  # space freed: the rerun finishes the rest
    summary = batch.run_job(job, client=client)
    assert summary.tasks_skipped == int(done.sum()) and summary.tasks_done == 6 - int(done.sum())
    np.testing.assert_array_equal(open_series(job.output, name).data,
                                  recon(read(files["mrd"]), "zerofill", device="cpu").data)


def test_transient_failures_are_retried(files, tmp_path, client, monkeypatch):
    real = reconstruct.recon
    failures = {"left": 2}

    def flaky(ksp, method, **kw):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("transient worker trouble")
        return real(ksp, method, **kw)

    monkeypatch.setattr(reconstruct, "recon", flaky)
    summary = batch.run_job(_job(tmp_path, [files["fastmri"]], retries=2, max_batch=3), client=client)
    assert summary.exit_code == 0 and summary.tasks_done == 3
    retries = [e for e in read_log(log_path(tmp_path / "out.zarr")) if e["event"] == "task_retry"]
    assert len(retries) == 2 and "transient worker trouble" in retries[0]["error"]
    failures["left"] = 5
    summary = batch.run_job(_job(tmp_path, [files["fastmri"]], retries=1, resume=False), client=client)
    assert summary.exit_code == 1 and summary.tasks_failed > 0


# --- cluster ----------------------------------------------------------------------------------------
def test_local_size_fills_the_cores(monkeypatch):
    monkeypatch.setattr(cluster, "machine_cpus", lambda: 16)
    assert cluster.local_size(None, None) == (16, 1)
    assert cluster.local_size(None, 4) == (4, 4)
    assert cluster.local_size(3, None) == (3, 1)


def test_slurm_job_script(tmp_path):
    pytest.importorskip("dask_jobqueue")
    spec = {"kind": "slurm", "jobs": 0, "queue": "gpu", "account": "mri", "cores": 8, "memory": "64GB",
            "walltime": "02:00:00", "job_extra_directives": ["--gres=gpu:1"], "log_directory": str(tmp_path),
            "scheduler_options": {"dashboard_address": cluster.DASHBOARD_ADDRESS}}
    slurm = cluster.jobqueue_cluster(spec)
    try:
        script = slurm.job_script()
    finally:
        slurm.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A mri", "#SBATCH --cpus-per-task=8", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:1"):
        assert line in script
    assert "distributed.cli.dask_worker" in script or "dask worker" in script or "dask-worker" in script
    with pytest.raises(InputError, match="kind must be one of"):
        cluster.jobqueue_cluster({"kind": "lsf"})


def test_batch_cli_job_file_and_overrides(files, tmp_path, capsys):
    job = tmp_path / "job.toml"
    job.write_text(f'inputs = ["{files["fastmri"]}"]\noutput = "from_job.zarr"\nmethod = "sense"\n')
    code = main(["batch", "--job", str(job), "--method", "zerofill", "--in-process", "--workers", "1",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "3 task(s) done, 0 failed, 0 skipped" in out and "slices/s" in out
    assert _series_for(tmp_path / "from_job.zarr", "b").startswith("b_zerofill_")
    assert main(["batch", str(files["fastmri"]), "--no-progress"]) == 2  # no output anywhere
    assert main(["batch", "--help"]) == 0 and "usage: mrirecon batch" in capsys.readouterr().out
    assert main(["batch", str(files["fastmri"]), "-o", str(tmp_path / "x.zarr"), "--device", "cuda",
                 "--no-progress"]) == (0 if reconstruct.resolve_device("auto") == "cuda" else 2)
    events = [json.loads(line) for line in log_path(tmp_path / "from_job.zarr").read_text().splitlines()]
    assert events[0]["event"] == "job_start" and events[-1]["event"] == "job_end"


def test_same_file_name_in_two_folders_is_refused(files, tmp_path, client):
    twin = tmp_path / "other" / "a.h5"  # same name as files["mrd"], other content
    twin.parent.mkdir()
    write_phantom(twin, phantom_kspace(matrix=32, slices=2, coils=4), "ismrmrd")
    summary = batch.run_job(_job(tmp_path, [files["mrd"], twin]), client=client)
    assert summary.exit_code == 2 and summary.tasks_done == 6
    assert summary.failures == [("a.h5", f"{twin.resolve()}: has the same file name as {files['mrd'].resolve()}; "
                                          f"rename one (series {summary.series[0]})")]
    assert open_series(tmp_path / "out.zarr", summary.series[0]).data.shape == (6, 32, 32)


def test_cli_joins_a_running_scheduler(files, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=cluster.DASHBOARD_ADDRESS) as running:
        code = main(["batch", str(files["fastmri"]), "-o", str(tmp_path / "s.zarr"), "--method", "zerofill",
                     "--scheduler", running.scheduler_address, "--no-progress"])
        ran = {str(t[0]) for t in running.scheduler.transition_log}
        assert code == 0 and any("run_task" in k for k in ran)  # the work ran on that cluster
    assert "3 task(s) done" in capsys.readouterr().out


# --- 3D volumes: slabs after the readout FFT --------------------------------------------------------
@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """3D Cartesian MRD file: 12 x 24 x 20 Shepp-Logan, 4 coils, Poisson disc R=2 over (kz, ky)."""
    shape = (12, 24, 20)
    mask = np.broadcast_to(sim.poisson_disc_mask(shape[:2], 2, 6, seed=0)[:, :, None], shape)
    ksp = sim.simulate(sim.shepp_logan(shape), sim.birdcage_maps(4, shape), mask, noise_sigma=1e-3, seed=2)
    path = tmp_path_factory.mktemp("vol") / "vol.h5"
    write_ismrmrd(path, ksp)
    return path


def test_volume_runs_as_readout_slabs(volume, tmp_path, client):
    summary = batch.run_job(_job(tmp_path, [volume]), client=client)
    name = summary.series[0]
    meta = zarr.open_group(tmp_path / "out.zarr", mode="r")[name].attrs["mrirecon"]
    assert (meta["task_dims"], meta["task_chunks"]) == (["x"], [planner.SLAB_WIDTH])
    assert summary.tasks_done == 3 and summary.slices_done == 12  # 20 readout positions: 8 + 8 + 4
    img = open_series(tmp_path / "out.zarr", name)
    reference = recon(read(volume), "zerofill", device="cpu")  # the whole volume in one 3D FFT
    assert img.dims == reference.dims == ("z", "y", "x")
    # measured: max |slabs - volume| = 1.4e-7 x max |volume| (float32 FFTs in another order)
    np.testing.assert_allclose(img.data, reference.data, rtol=0, atol=1e-6 * np.abs(reference.data).max())
    np.testing.assert_allclose(img.affine, reference.affine, atol=1e-12)


def test_slab_planning_rules(volume, files):
    from mrirecon.io import open_raw

    with open_raw(volume) as raw:
        info = raw.info()
    assert planner.slab_width(info, "zerofill") == planner.SLAB_WIDTH
    assert planner.slab_width(info, "l1wavelet") is None  # a method that needs the whole volume
    assert planner.slab_width({**info, "calibration": {"mode": "separate", "shape": [4, 8, 8, 20]}},
                              "sense") is None
    with open_raw(files["mrd"]) as raw:
        assert planner.slab_width(raw.info(), "zerofill") is None  # multi-slice 2D: slices, not slabs
    shape = planner.task_shape(info, ("x",), (8,))
    assert (shape.coils, shape.spatial, shape.per_task) == (4, (12, 24), 8)


def test_pacs_hook_pushes_each_series_once_and_survives_failures(files, tmp_path, client, monkeypatch):
    import importlib.machinery
    import types

    calls = []

    def push_series(store, series, destination, *, raw=None):
        calls.append((Path(store), series, destination, Path(raw).name))
        if destination.endswith("down"):
            raise ConnectionError("PACS unreachable")
        return types.SimpleNamespace(sent=6, skipped=0, raise_for_pending=lambda: None)

    fake = types.ModuleType("mrirecon.pipelines.pacs")
    fake.__spec__ = importlib.machinery.ModuleSpec("mrirecon.pipelines.pacs", None)
    fake.push_series = push_series
    monkeypatch.setitem(sys.modules, "mrirecon.pipelines.pacs", fake)
    monkeypatch.setattr("mrirecon.pipelines.pacs", fake, raising=False)  # when the real sink was imported
    job = _job(tmp_path, [files["mrd"]], pacs="dicom://PACS@localhost:11112")
    summary = batch.run_job(job, client=client)
    assert calls == [(job.output, summary.series[0], job.pacs, "a.h5")]
    batch.run_job(job, client=client)  # complete before: not pushed again
    assert len(calls) == 1
    down = batch.run_job(dataclasses.replace(job, resume=False, pacs="dicom://PACS@down"), client=client)
    assert down.exit_code == 0 and len(calls) == 2
    events = [e["event"] for e in read_log(log_path(job.output))]
    assert events.count("pacs_pushed") == 1 and events.count("pacs_failed") == 1
