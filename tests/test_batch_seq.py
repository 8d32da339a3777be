"""Pulseq sequences in the batch pipeline (issue #4): ``--seq``, the job file's ``seq``/``[sequences]``,
failures that name both files, and the ``.seq`` as part of the series recipe (name and metadata).

Real Pulseq twix scans from ``../shared/data/raw``, copied under other names so that the reader's
".seq beside the raw file with the same name" rule never applies: every sequence comes from the job.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from mrirecon.cli import main
from mrirecon.errors import InputError
from mrirecon.io import read
from mrirecon.pipelines import batch
from mrirecon.pipelines.joblog import log_path, read_log
from mrirecon.pipelines.store import is_complete, list_series, open_series
from mrirecon.reconstruction import recon

distributed = pytest.importorskip("distributed")

# name here -> (folder under shared raw, file there)
FILES = {
    "gre.dat": ("pulseq-tutorials", "11_01_GRE.dat"),  # 1 coil, 256 x 256 Cartesian
    "gre.seq": ("pulseq-tutorials", "11_01_GRE.seq"),
    "cart.dat": ("pulseq-ankara-course", "meas_MID00107_FID33064_sol12.dat"),  # 4 coils, 256 x 256 Cartesian
    "cart.seq": ("pulseq-ankara-course", "ex12_gre2d_lbl_chen.seq"),
    "radial.dat": ("pulseq-ankara-course", "meas_MID00118_FID33075_sol24.dat"),  # 4 coils, 256 spokes
    "radial.seq": ("pulseq-ankara-course", "sol24_gre2radial_chen.seq"),
    "epi.seq": ("pulseq-tutorials", "11_05_EPI.seq"),  # 128 ADCs: does not fit the 256-line scans
}


@pytest.fixture(scope="module")
def pulseq(shared_raw, tmp_path_factory) -> dict[str, Path]:
    """The scans in ``scans/`` and their sequences in ``seqs/``, under the names of ``FILES``."""
    pytest.importorskip("pypulseq")
    root = tmp_path_factory.mktemp("pulseq")
    out = {}
    for name, (folder, source) in FILES.items():
        target = root / ("scans" if name.endswith(".dat") else "seqs") / name  # never beside each other
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(shared_raw / folder / source, target)
        out[name] = target
    return out


@pytest.fixture(scope="module")
def client():
    """An in-process Dask cluster (threads)."""
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def _meta(store: Path, name: str) -> dict:
    return zarr.open_group(store=str(store), path=name, mode="r").attrs.asdict()["mrirecon"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- job model: which .seq an input gets (no data needed) ---------------------------------------------
def test_sequence_for_prefers_exact_names_then_globs_then_seq(tmp_path):
    job = batch.Job(inputs=["x"], output=tmp_path / "o.zarr", seq="all.seq",
                    sequences={"*.dat": "glob1.seq", "b*.dat": "glob2.seq", "b1.dat": "exact.seq"})
    assert job.sequence_for(Path("/d/b1.dat")) == Path("exact.seq").absolute()
    assert job.sequence_for(Path("/d/b2.dat")) == Path("glob1.seq").absolute()  # first matching glob
    assert job.sequence_for(Path("/d/b2.h5")) == Path("all.seq").absolute()
    assert batch.Job(inputs=["x"], output="o.zarr").sequence_for(Path("b.dat")) is None
    with pytest.raises(InputError, match="file names, not paths"):
        batch.Job(inputs=["x"], output="o.zarr", sequences={"day1/*.dat": "a.seq"})
    with pytest.raises(InputError, match="sequences"):
        batch.Job(inputs=["x"], output="o.zarr", sequences={"*.dat": 3})


def test_job_file_sequence_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "job.toml").write_text('seq = "seqs/all.seq"\n[sequences]\n"r*.dat" = "../radial.seq"\n')
    options = batch.job_file_options(tmp_path / "job.toml")
    assert options["seq"] == tmp_path / "seqs" / "all.seq"
    assert options["sequences"] == {"r*.dat": tmp_path / ".." / "radial.seq"}


# --- real Pulseq scans ---------------------------------------------------------------------------------
@pytest.mark.realdata
def test_batch_with_seq_equals_recon_with_seq(pulseq, tmp_path):
    raw, seq = pulseq["radial.dat"], pulseq["radial.seq"]
    assert main(["recon", str(raw), "-o", str(tmp_path / "recon.zarr"), "--method", "gridding", "--seq", str(seq),
                 "--no-progress"]) == 0
    assert main(["batch", str(raw), "-o", str(tmp_path / "batch.zarr"), "--method", "gridding", "--seq", str(seq),
                 "--in-process", "--workers", "1", "--no-progress"]) == 0
    (name,) = list_series(tmp_path / "batch.zarr")
    assert list_series(tmp_path / "recon.zarr") == [name]  # one recipe, one name
    from_batch, from_recon = open_series(tmp_path / "batch.zarr", name), open_series(tmp_path / "recon.zarr", name)
    np.testing.assert_array_equal(from_batch.data, from_recon.data)
    # the trajectory came from the .seq: the image is the direct gridding reconstruction of that read
    reference = recon(read(raw, sequence=seq), "gridding", device="cpu")
    np.testing.assert_allclose(from_batch.data, reference.data, rtol=0, atol=1e-6 * np.abs(reference.data).max())
    assert _meta(tmp_path / "batch.zarr", name)["sequence"] == {"file": seq.name, "sha256": _sha256(seq)}


@pytest.mark.realdata
def test_job_file_seq_and_sequences_table(pulseq, tmp_path, client):
    folder = tmp_path / "night"
    folder.mkdir()
    rel = Path(os.path.relpath(pulseq["gre.dat"].parent.parent, folder)).as_posix()  # night/ -> the data
    (folder / "job.toml").write_text(
        f'inputs = ["{rel}/scans/*.dat"]\noutput = "out.zarr"\nmethod = "zerofill"\n'
        f'seq = "{rel}/seqs/gre.seq"\n'  # every input without a [sequences] entry
        f'[sequences]\n"c*.dat" = "{rel}/seqs/cart.seq"\n"radial.dat" = "{rel}/seqs/radial.seq"\n')
    job = batch.Job(**batch.job_file_options(folder / "job.toml"))
    summary = batch.run_job(job, client=client)
    # radial is matched by its exact name but zerofill refuses non-Cartesian k-space: it alone fails
    assert [name for name, _ in summary.failures] == ["radial.dat"]
    store = folder / "out.zarr"
    for stem in ("gre", "cart"):
        raw, seq = pulseq[f"{stem}.dat"], pulseq[f"{stem}.seq"]
        (name,) = [n for n in list_series(store) if n.startswith(stem + "_")]
        assert is_complete(store, name)
        assert _meta(store, name)["sequence"] == {"file": seq.name, "sha256": _sha256(seq)}
        reference = recon(read(raw, sequence=seq), "zerofill", device="cpu")
        np.testing.assert_allclose(open_series(store, name).data, reference.data, rtol=0,
                                   atol=1e-6 * np.abs(reference.data).max())


@pytest.mark.realdata
def test_a_wrong_or_missing_seq_fails_that_file_and_names_both(pulseq, tmp_path, client, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("gre_wrong.dat", "gre_missing.dat"):
        shutil.copyfile(pulseq["gre.dat"], scans / name)
    shutil.copyfile(pulseq["cart.dat"], scans / "cart_ok.dat")
    job = batch.Job(inputs=[str(scans)], output=tmp_path / "out.zarr", method="zerofill",  # a folder: .dat found
                    sequences={"gre_wrong.dat": pulseq["epi.seq"], "gre_missing.dat": tmp_path / "nowhere.seq",
                               "cart_ok.dat": pulseq["cart.seq"]})
    summary = batch.run_job(job, client=client)
    failures = dict(summary.failures)
    assert set(failures) == {"gre_wrong.dat", "gre_missing.dat"} and summary.exit_code == batch.EXIT_BAD_INPUT
    assert "gre_wrong.dat" in failures["gre_wrong.dat"] and "epi.seq" in failures["gre_wrong.dat"]
    assert "does not match" in failures["gre_wrong.dat"]
    assert "gre_missing.dat" in failures["gre_missing.dat"] and "nowhere.seq" in failures["gre_missing.dat"]
    assert summary.inputs_complete == 1 and summary.tasks_done == 1
    (name,) = list_series(tmp_path / "out.zarr")
    assert name.startswith("cart_ok_zerofill_") and is_complete(tmp_path / "out.zarr", name)
    logged = {e["input"]: e["error"] for e in read_log(log_path(tmp_path / "out.zarr")) if e["event"] == "input_failed"}
    assert "nowhere.seq" in logged["gre_missing.dat"] and "epi.seq" in logged["gre_wrong.dat"]
    # the same through the CLI: the failure is printed with both names, exit 2
    assert main(["batch", str(scans / "gre_wrong.dat"), "-o", str(tmp_path / "cli.zarr"), "--method", "zerofill",
                 "--seq", str(pulseq["epi.seq"]), "--in-process", "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "failed: gre_wrong.dat:" in err and "epi.seq" in err


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore::mrirecon.io.twix.PulseqSequenceMissing")  # the run without a .seq
def test_same_seq_resumes_another_seq_is_a_new_series(pulseq, tmp_path, client):
    raw, seq = pulseq["gre.dat"], pulseq["gre.seq"]
    store = tmp_path / "out.zarr"

    def run(sequence: Path | None) -> batch.JobSummary:
        return batch.run_job(batch.Job(inputs=[str(raw)], output=store, method="zerofill", seq=sequence), client=client)

    first = run(seq)
    assert (first.tasks_done, first.tasks_skipped, first.failures) == (1, 0, [])
    (name,) = first.series
    again = run(seq)
    assert again.series == [name] and (again.tasks_done, again.tasks_skipped, again.inputs_complete) == (0, 1, 1)
    # recon with the same .seq shares the recipe: it finds the series finished
    assert main(["recon", str(raw), "-o", str(store), "--method", "zerofill", "--seq", str(seq), "--no-progress"]) == 0
    assert list_series(store) == [name]

    edited = tmp_path / "gre_edited.seq"  # the same sequence with one comment more: other bytes, other recipe
    edited.write_bytes(seq.read_bytes() + b"\n# edited\n")
    other = run(edited)
    assert other.tasks_done == 1 and other.series[0] != name
    assert _meta(store, other.series[0])["sequence"] == {"file": edited.name, "sha256": _sha256(edited)}
    bare = run(None)  # no .seq at all: yet another recipe
    assert bare.tasks_done == 1 and _meta(store, bare.series[0])["sequence"] is None
    assert sorted(list_series(store)) == sorted({name, other.series[0], bare.series[0]})
    assert all(is_complete(store, n) for n in list_series(store))
    np.testing.assert_array_equal(open_series(store, other.series[0]).data, open_series(store, name).data)
