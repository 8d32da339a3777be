"""The command line, in-process (``main([...])``) and via the console script / ``python -m``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mrirecon import sim
from mrirecon.cli import main, parse_param, phantom_kspace
from mrirecon.errors import InputError
from mrirecon.io import open_raw
from mrirecon.methods import list_methods
from mrirecon.pipelines.store import is_complete, list_series, open_series

VENV_BIN = Path(sys.executable).parent
COMMANDS = ("info", "recon", "methods", "phantom", "make-sample-data")
SMALL = ["--matrix", "32", "--slices", "2", "--coils", "4"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Small phantom files: fully sampled ISMRMRD, undersampled fastMRI."""
    folder = tmp_path_factory.mktemp("phantoms")
    out = {"ismrmrd": folder / "full.h5", "fastmri": folder / "r2.h5"}
    assert main(["phantom", "-o", str(out["ismrmrd"]), *SMALL]) == 0
    assert main(["phantom", "-o", str(out["fastmri"]), "--format", "fastmri", *SMALL,
                 "--accel", "2", "--calib", "8", "--noise", "1e-3", "--seed", "3"]) == 0
    return out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: mrirecon {command}" in capsys.readouterr().out


def test_top_level_help_version_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(c in text for c in COMMANDS)
    assert main(["--version"]) == 0
    assert main([]) == 2
    assert main(["recon", "x.h5"]) == 2  # -o is required
    assert main(["recon", "x.h5", "-o", "o.zarr", "--param", "novalue"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, expected",
    [("lam=0.05", ("lam", 0.05)), ("max_iter=12", ("max_iter", 12)), ("flag=True", ("flag", True)),
     ("flag=false", ("flag", False)), ("maps=None", ("maps", None)), ("name=espirit", ("name", "espirit")),
     ("lam=1e-3", ("lam", 1e-3)), (" k = 7 ", ("k", 7))],
)
def test_parse_param(text, expected):
    key, value = parse_param(text)
    assert (key, value) == expected and type(value) is type(expected[1])


def test_methods_lists_every_method_with_defaults(capsys):
    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert set(listed) == {m.name for m in list_methods()} and {"sense", "zerofill"} <= set(listed)
    for m in list_methods():
        assert {p["name"]: p["default"] for p in listed[m.name]["parameters"]} == {p.name: p.default for p in m.params}
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "sense:" in text and "lam (float, default 0.01)" in text


def test_phantom_files_hold_what_was_asked(files):
    with open_raw(files["fastmri"]) as raw:
        info = raw.info()
        ksp = raw.read()
    assert info["format"] == "fastmri" and info["coils"] == 4 and info["slices"] == 2
    assert ksp.data.shape == (2, 4, 32, 32)
    # every 2nd of 32 ky lines (16) plus the 4 odd ones among the 8 central calibration lines
    assert ksp.mask is not None and ksp.mask.sum() == 20 * 32
    expected = phantom_kspace("shepp-logan", matrix=32, slices=2, coils=4, accel=2, calib=8, noise=1e-3, seed=3)
    np.testing.assert_allclose(ksp.data, expected.data, atol=1e-6)


def test_info_hides_phi_unless_asked(files, capsys):
    assert main(["info", str(files["ismrmrd"])]) == 0
    text = capsys.readouterr().out
    assert "ismrmrd" in text and "coils:         4" in text
    assert sim.SIMULATED_PATIENT.name not in text and sim.SIMULATED_PATIENT.id not in text
    assert main(["info", str(files["ismrmrd"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["slices"] == 2 and "patient" not in info
    assert main(["info", str(files["ismrmrd"]), "--show-phi"]) == 0
    assert sim.SIMULATED_PATIENT.name in capsys.readouterr().out


def test_recon_zerofill_matches_the_phantom(files, tmp_path, capsys):
    out, nii = tmp_path / "out.zarr", tmp_path / "img.nii.gz"
    argv = ["recon", str(files["ismrmrd"]), "-o", str(out), "--method", "zerofill", "--no-progress",
            "--nifti", str(nii)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    (name,) = list_series(out)
    assert name.startswith("full_zerofill_") and is_complete(out, name)
    img = open_series(out, name)
    assert img.dims == ("slice", "y", "x")
    # independent reference: fully sampled, noiseless, sum |S|^2 = 1, so RSS = |object|
    truth = np.abs(sim.shepp_logan((4, 32, 32))[1:3])
    np.testing.assert_allclose(np.abs(img.data), truth, atol=1e-6)  # measured 1.8e-7
    np.testing.assert_allclose(np.asarray(nib.load(nii).dataobj), truth.transpose(2, 1, 0), atol=1e-6)
    assert main(argv) == 0  # a rerun finds the series complete and runs nothing
    assert "0 task(s) run, 2 already done" in capsys.readouterr().out


@pytest.mark.slow  # ~5 s: first use compiles the ESPIRiT/SENSE kernels
def test_recon_sense_with_params(files, tmp_path):
    out = tmp_path / "s.zarr"
    assert main(["recon", str(files["fastmri"]), "-o", str(out), "--param", "lam=0.05", "--param", "max_iter=5",
                 "--device", "cpu", "--no-progress"]) == 0
    (name,) = list_series(out)
    img = open_series(out, name)
    assert img.provenance.parameters["lam"] == 0.05 and img.provenance.parameters["max_iter"] == 5
    assert img.provenance.device == "cpu" and img.provenance.input_sha256
    assert img.data.shape == (2, 32, 32)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_console_script_and_module_entry_points(files, tmp_path):
    done = _run(str(VENV_BIN / "mrirecon"), "info", str(files["fastmri"]), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["format"] == "fastmri"
    done = _run(sys.executable, "-m", "mrirecon", "methods")
    assert done.returncode == 0 and "zerofill" in done.stdout


def test_errors_are_one_line_and_debug_shows_traceback(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    done = _run(str(VENV_BIN / "mrirecon"), "info", str(bad))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("mrirecon: error: ") and "bad.h5" in done.stderr
    done = _run(str(VENV_BIN / "mrirecon"), "info", str(bad), env={"MRIRECON_DEBUG": "1"})
    assert done.returncode == 2 and "Traceback" in done.stderr


def test_internal_error_exits_1(monkeypatch, capsys):
    def boom(args):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr("mrirecon.cli.cmd_methods", boom)  # main builds its parser after this
    assert main(["methods"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mrirecon: internal error: ZeroDivisionError: oops") and "Traceback" not in err


def test_make_sample_data_is_small(tmp_path, capsys):
    assert main(["make-sample-data", str(tmp_path)]) == 0
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert set(sizes) == {"phantom_ismrmrd.h5", "brain_fastmri.h5"}
    assert sum(sizes.values()) < 4e6
    with open_raw(tmp_path / "phantom_ismrmrd.h5") as raw:
        info = raw.info()
    assert (info["coils"], info["slices"], info["recon_matrix"][1:]) == (8, 4, [128, 128])
    with open_raw(tmp_path / "brain_fastmri.h5") as raw:
        info = raw.info()
    assert (info["coils"], info["slices"], info["recon_matrix"][1:]) == (8, 1, [144, 144])


def test_recon_default_method_follows_the_sampling(files, tmp_path):
    """No ``--method``: CG-SENSE for Cartesian k-space, NUFFT CG-SENSE for a radial file (which ``sense``
    refuses); a batch job still names its one method."""
    from mrirecon.data import KSpace, KSpaceHeader
    from mrirecon.io.mrd_writer import write_ismrmrd
    from mrirecon.nufft import NUFFT
    from mrirecon.pipelines.batch import Job

    n, coils = 32, 4
    traj = sim.radial(48, 2 * n, matrix=n)
    image = sim.shepp_logan((n, n)).astype(np.complex64)
    maps = sim.birdcage_maps(coils, (n, n))
    y = NUFFT(traj, (n, n), (coils,))(maps * image)
    radial = tmp_path / "radial.h5"
    write_ismrmrd(radial, KSpace(y[None], ("slice", "coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, n, n)),
                                 trajectory=traj))
    out = tmp_path / "out.zarr"
    assert main(["recon", str(radial), "-o", str(out), "--no-progress"]) == 0
    assert main(["recon", str(files["ismrmrd"]), "-o", str(out), "--no-progress"]) == 0
    names = {name.rsplit("_", 1)[0]: name for name in list_series(out)}  # <stem>_<method>_<recipe key>
    assert set(names) == {"radial_nufft_sense", "full_sense"}
    result = np.abs(open_series(out, names["radial_nufft_sense"]).numpy()[0])
    assert np.corrcoef(result.ravel(), np.abs(image).ravel())[0, 1] > 0.9
    assert main(["recon", str(radial), "-o", str(out), "--method", "sense", "--no-progress"]) == 2
    with pytest.raises(InputError, match="needs a method"):
        Job(inputs=[str(radial)], output=out, method="auto")
