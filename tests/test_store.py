"""Zarr store: round trip, one chunk per task, OME-NGFF attributes, resume and completion."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
import zarr.storage._local as local

from mrirecon.cli import phantom_kspace, write_phantom
from mrirecon.data import Geometry, Image, KSpaceHeader, PatientInfo, Provenance, SequenceParams
from mrirecon.errors import InputError, OutputError
from mrirecon.io import read
from mrirecon.kernels.threads import cpu_threads, limit_cpu_threads
from mrirecon.pipelines import reconstruct
from mrirecon.pipelines.store import (
    Series,
    is_complete,
    list_series,
    ngff_order,
    open_series,
    series_name,
    write_image,
)
from mrirecon.reconstruction import recon


@pytest.fixture
def image(rng) -> Image:
    """4 slices of 6x10 complex data, oblique, with a header that carries PHI."""
    normal = np.array([0.0, 0.6, 0.8])
    geom = Geometry(
        fov_mm=(2.5, 180.0, 200.0),
        position=np.array([1.0, 2.0, 3.0]) + np.outer(np.arange(4) * 3.5, normal),
        read_dir=[1.0, 0.0, 0.0],
        phase_dir=[0.0, 0.8, -0.6],
        slice_dir=normal,
    )
    header = KSpaceHeader(
        recon_matrix=(1, 6, 10), geometry=geom, source="scan.h5", source_sha256="ab" * 32,
        sequence=SequenceParams(tr_ms=500.0, te_ms=(10.0, 20.0)),
        patient=PatientInfo(name="Doe^Jane", id="PID-4711", birth_date="19700101"),
    )
    data = (rng.standard_normal((4, 6, 10)) + 1j * rng.standard_normal((4, 6, 10))).astype(np.complex64)
    prov = Provenance("sense", {"lam": 0.01, "iters": 30}, software_version="0.1.0", timings_s={"solve": 1.5})
    return Image(data, ("slice", "y", "x"), geom, prov, header)


def _create(store: Path, image: Image, name: str = "s") -> Series:
    return Series.create(
        store, name, dims=image.dims, shape=image.data.shape, task_dims=("slice",), geometry=image.geometry,
        method=image.provenance.method, parameters=image.provenance.parameters, header=image.header,
    )


def test_round_trip(tmp_path, image):
    name = write_image(tmp_path / "out.zarr", image)
    assert name == series_name("scan.h5", image.provenance) and name.startswith("scan_sense_")
    back = open_series(tmp_path / "out.zarr", name)
    assert back.dims == image.dims and back.data.dtype == np.complex64
    np.testing.assert_array_equal(back.data, image.data)
    assert back.geometry.to_dict() == image.geometry.to_dict()
    np.testing.assert_allclose(back.affine, image.affine, atol=0)
    assert back.provenance.to_dict() == image.provenance.to_dict()
    assert back.header.to_dict() == image.header.to_dict()
    assert list_series(tmp_path / "out.zarr") == [name]


def test_no_phi_in_store(tmp_path, image):
    store = tmp_path / "out.zarr"
    write_image(store, image)
    text = "".join(p.read_text() for p in store.rglob("zarr.json"))
    for phi in ("Doe^Jane", "PID-4711", "19700101"):
        assert phi not in text


def test_magnitude_array_and_real_input(tmp_path, image):
    store = tmp_path / "out.zarr"
    name = write_image(store, image)
    group = zarr.open_group(store, mode="r")[name]
    np.testing.assert_allclose(group["0"][...], np.abs(image.data), rtol=1e-6)
    real = write_image(store, image.magnitude(), name="mag")
    assert "complex" not in zarr.open_group(store, mode="r")[real]
    assert open_series(store, real).data.dtype == np.float32


def test_one_chunk_per_task(tmp_path, image):
    store = tmp_path / "out.zarr"
    series = _create(store, image)
    group = zarr.open_group(store, mode="r")["s"]
    assert group["0"].chunks == (1, 6, 10) and group["complex"].chunks == (1, 6, 10)
    series.write_task((2,), image.data[2:3])
    for array in ("0", "complex"):
        folder = store / "s" / array
        chunk_files = sorted(str(p.relative_to(folder)) for p in folder.rglob("c/**/*") if p.is_file())
        assert chunk_files == ["c/2/0/0"]
    with pytest.raises(ValueError, match="expected"):
        series.write_task((1,), image.data)


def test_ngff_metadata_matches_voxel_sizes(tmp_path, image):
    store = tmp_path / "out.zarr"
    name = write_image(store, image)
    ome = json.loads((store / name / "zarr.json").read_text())["attributes"]["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "millimeter" for a in ms["axes"])
    (ds,) = ms["datasets"]
    assert ds["path"] == "0"
    (scale,) = ds["coordinateTransformations"]
    # independent reference: slice spacing 3.5 mm, fov / matrix in plane
    np.testing.assert_allclose(scale["scale"], [3.5, 180.0 / 6, 200.0 / 10], rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0)[::-1], scale["scale"], rtol=1e-12)


def test_batch_dims_stored_in_ngff_order_and_restored(tmp_path, rng):
    data = rng.standard_normal((3, 2, 4, 5)).astype(np.float32)
    geom = Geometry(position=np.outer(np.arange(3), [0, 0, 2.0]))
    img = Image(data, ("slice", "echo", "y", "x"), geom, Provenance("zerofill"))
    assert ngff_order(img.dims) == ("echo", "slice", "y", "x")
    assert ngff_order(("time", "slice", "echo", "y", "x")) == ("time", "echo", "slice", "y", "x")
    store = tmp_path / "o.zarr"
    name = write_image(store, img)
    group = zarr.open_group(store, mode="r")[name]
    assert group["0"].shape == (2, 3, 4, 5) and group["0"].chunks == (2, 1, 4, 5)
    axes = group.attrs["ome"]["multiscales"][0]["axes"]
    assert [(a["name"], a["type"]) for a in axes] == [
        ("echo", "channel"), ("z", "space"), ("y", "space"), ("x", "space")
    ]
    back = open_series(store, name)
    assert back.dims == img.dims
    np.testing.assert_array_equal(back.data, data)


def test_resume_skips_done_tasks_and_completes_only_at_the_end(tmp_path, image):
    store = tmp_path / "out.zarr"
    series = _create(store, image)
    assert series.pending() == [(0,), (1,), (2,), (3,)]
    for t in [(0,), (3,)]:
        series.write_task(t, image.data[series.task_slices(t)])
        series.mark_done(t)
    series.write_task((1,), image.data[1:2])  # written but not recorded: must be redone
    assert not is_complete(store, "s")
    with pytest.raises(RuntimeError, match="2 task"):
        series.finalize(image.provenance)
    with pytest.raises(InputError, match="incomplete"):
        open_series(store, "s")
    resumed = _create(store, image)
    assert resumed.pending() == [(1,), (2,)]
    for t in resumed.pending():
        resumed.write_task(t, image.data[resumed.task_slices(t)])
        resumed.mark_done(t)
    resumed.finalize(image.provenance)
    assert is_complete(store, "s")
    np.testing.assert_array_equal(open_series(store, "s").data, image.data)


def test_changed_layout_or_input_replaces_series(tmp_path, image):
    store = tmp_path / "out.zarr"
    series = _create(store, image)
    series.write_task((0,), image.data[:1])
    series.mark_done((0,))
    image.header.source_sha256 = "cd" * 32
    assert _create(store, image).pending() == [(0,), (1,), (2,), (3,)]


def test_unwritable_store(tmp_path, image):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        write_image(blocker, image)
    with pytest.raises(OutputError, match="parent of this path is a file"):
        write_image(blocker / "out.zarr", image)
    with pytest.raises(InputError, match="no such Zarr store"):
        open_series(tmp_path / "missing.zarr", "s")


def test_permission_denied_is_output_error(tmp_path, image, monkeypatch):
    """Root ignores directory permissions, so the refusal is injected where Zarr creates the store."""

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(zarr, "open_group", refuse)
    with pytest.raises(OutputError, match="cannot write: permission denied"):
        write_image(tmp_path / "out.zarr", image)


# --- the pipeline that fills the store: resume, interruption, output failures ----------------------
SLICE_SPACING_MM = 6.0  # phantom slices: 5 mm thick + 1 mm gap, centred on z = 0


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "ph.h5"
    write_phantom(path, phantom_kspace(matrix=32, slices=4, coils=4, accel=2, calib=8), "ismrmrd")
    return path


@pytest.fixture
def calls(monkeypatch) -> dict:
    """Records ``recon`` calls (slice index) inside the pipeline; call number ``calls['fail']`` raises."""
    record: dict = {"slices": [], "fail": None}
    real = reconstruct.recon

    def counting(ksp, method, **kw):
        index = int(round(ksp.header.geometry.position[0, 2] / SLICE_SPACING_MM + 1.5))
        if len(record["slices"]) == record["fail"]:
            record["slices"].append(index)
            raise RuntimeError("injected failure")
        record["slices"].append(index)
        return real(ksp, method, **kw)

    monkeypatch.setattr(reconstruct, "recon", counting)
    return record


def _done_flags(store: Path, name: str) -> list[bool]:
    return zarr.open_group(store, mode="r")[name]["done"][...].tolist()


def test_pipeline_equals_single_shot_recon(tmp_path, raw_file, calls):
    result = reconstruct.reconstruct_file(raw_file, tmp_path / "o.zarr", method="zerofill", progress=False)
    assert sorted(calls["slices"]) == [0, 1, 2, 3] and result.tasks_run == 4
    img = open_series(tmp_path / "o.zarr", result.series)
    reference = recon(read(raw_file), "zerofill", device="cpu")
    assert img.dims == reference.dims
    np.testing.assert_array_equal(img.data, reference.data)
    np.testing.assert_allclose(img.affine, reference.affine, atol=1e-12)
    assert img.provenance.parameters == reference.provenance.parameters


def test_interrupted_run_is_not_complete_and_rerun_finishes_it(tmp_path, raw_file, calls):
    store = tmp_path / "o.zarr"
    calls["fail"] = 1  # the second task fails
    with pytest.raises(RuntimeError, match="injected failure"):
        reconstruct.reconstruct_file(raw_file, store, method="zerofill", progress=False, workers=1)
    (name,) = list_series(store)
    assert not is_complete(store, name)
    done_before = _done_flags(store, name)
    failed = calls["slices"][1]
    # one worker: the first task was recorded before the second started (and failed)
    assert [i for i, d in enumerate(done_before) if d] == calls["slices"][:1] and not done_before[failed]
    calls.update(fail=None, slices=[])
    result = reconstruct.reconstruct_file(raw_file, store, method="zerofill", progress=False)
    assert sorted(calls["slices"]) == [i for i, d in enumerate(done_before) if not d]
    assert result.tasks_skipped == sum(done_before) and is_complete(store, name)
    single = reconstruct.reconstruct_file(raw_file, tmp_path / "single.zarr", method="zerofill", progress=False)
    single_data = open_series(tmp_path / "single.zarr", single.series).data
    np.testing.assert_array_equal(open_series(store, name).data, single_data)
    calls["slices"] = []
    assert reconstruct.reconstruct_file(raw_file, store, method="zerofill", progress=False).tasks_run == 0
    assert calls["slices"] == []


def test_full_disk_is_output_error_and_nothing_complete(tmp_path, raw_file, monkeypatch):
    real_put = local._put

    def put(path, value, exclusive=False):
        if "/c/" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    store = tmp_path / "o.zarr"
    with pytest.raises(OutputError, match="no space left on device"):
        reconstruct.reconstruct_file(raw_file, store, method="zerofill", progress=False)
    (name,) = list_series(store)
    assert not is_complete(store, name) and not any(_done_flags(store, name))


def test_distributed_client(tmp_path, raw_file):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        result = reconstruct.reconstruct_file(raw_file, tmp_path / "d.zarr", method="zerofill", progress=False,
                                              client=client)
    assert result.tasks_run == 4
    reference = recon(read(raw_file), "zerofill", device="cpu")
    np.testing.assert_array_equal(open_series(tmp_path / "d.zarr", result.series).data, reference.data)


def test_tasks_side_by_side_share_the_cores(tmp_path, raw_file, monkeypatch):
    """Each task gets the caller's thread budget divided by the tasks that run side by side
    (``kernels.threads``): 2 workers -> half each, 8 workers on 4 tasks -> a quarter, 1 worker -> all."""
    seen: list[int] = []
    real = reconstruct.recon

    def recording(ksp, method, **kw):
        seen.append(cpu_threads())
        return real(ksp, method, **kw)

    monkeypatch.setattr(reconstruct, "recon", recording)
    for workers, share in ((2, 2), (8, 1), (1, 4)):
        seen.clear()
        with limit_cpu_threads(4):
            reconstruct.reconstruct_file(raw_file, tmp_path / f"w{workers}.zarr", method="zerofill", progress=False,
                                         workers=workers)
        assert seen == [share] * 4, workers
