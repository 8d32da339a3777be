"""Bad input through the CLI: exit code 2, one line naming the file and the problem, no traceback,
and no output left looking complete."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.cli import main, phantom_kspace, write_phantom
from mrirecon.kernels.backend import gpu_available
from mrirecon.pipelines.store import is_complete, list_series


@pytest.fixture(scope="module")
def kspace() -> np.ndarray:
    """Valid (slice, coil, ky, kx) k-space of a small phantom."""
    return phantom_kspace(matrix=32, slices=2, coils=4).data


def fastmri_file(path: Path, kspace: np.ndarray, mask: np.ndarray | None = None) -> Path:
    """A fastMRI-layout file written with h5py directly (not with the package's writer)."""
    with h5py.File(path, "w") as h5:
        h5.create_dataset("kspace", data=kspace)
        if mask is not None:
            h5.create_dataset("mask", data=mask)
    return path


def check_error(capsys, code: int, *fragments: str) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert err.startswith("mrirecon: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + captured.out
    for fragment in fragments:
        assert fragment in err, err
    return err


def nothing_complete(out: Path) -> bool:
    return not out.exists() or not any(is_complete(out, name) for name in list_series(out))


def _truncated(tmp_path: Path, kspace: np.ndarray) -> Path:
    path = tmp_path / "truncated.h5"
    write_phantom(path, phantom_kspace(matrix=32, slices=2, coils=4), "ismrmrd")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_hdf5(tmp_path: Path, kspace: np.ndarray) -> Path:
    path = tmp_path / "notes.h5"
    path.write_text("this is a text file, not HDF5\n" * 20)
    return path


def _missing_datasets(tmp_path: Path, kspace: np.ndarray) -> Path:
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("something_else", data=np.zeros(4))
    return path


def _wrong_shape(tmp_path: Path, kspace: np.ndarray) -> Path:
    return fastmri_file(tmp_path / "flat.h5", kspace.reshape(-1, 32))


def _nan(tmp_path: Path, kspace: np.ndarray) -> Path:
    bad = kspace.copy()
    bad[1, 2, 16, 16] = np.nan
    return fastmri_file(tmp_path / "nan.h5", bad)


def _zero_coils(tmp_path: Path, kspace: np.ndarray) -> Path:
    return fastmri_file(tmp_path / "nocoils.h5", kspace[:, :0])


def _bad_mask(tmp_path: Path, kspace: np.ndarray) -> Path:
    return fastmri_file(tmp_path / "mask.h5", kspace, mask=np.ones(7, dtype=bool))


def _missing(tmp_path: Path, kspace: np.ndarray) -> Path:
    return tmp_path / "missing.h5"


BAD_FILES = {
    "missing file": (_missing, "no such file"),
    "truncated": (_truncated, "truncated.h5"),
    "not hdf5": (_not_hdf5, "notes.h5"),
    "missing datasets": (_missing_datasets, "empty.h5"),
    "wrong shape": (_wrong_shape, "shape"),
    "nan": (_nan, "NaN"),
    "zero coils": (_zero_coils, "zero coils"),
    "mask mismatch": (_bad_mask, "'mask' has shape (7,)"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file(case, tmp_path, kspace, capsys):
    make, fragment = BAD_FILES[case]
    path = make(tmp_path, kspace)
    out = tmp_path / "out.zarr"
    code = main(["recon", str(path), "-o", str(out), "--method", "zerofill", "--no-progress"])
    check_error(capsys, code, path.name, fragment)
    assert nothing_complete(out)
    if case != "nan":  # NaN sits in slice 1: info (headers only) cannot see it
        check_error(capsys, main(["info", str(path)]), path.name, fragment)


@pytest.fixture
def good_file(tmp_path, kspace) -> Path:
    return fastmri_file(tmp_path / "good.h5", kspace)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--method", "nosuch"], "unknown method 'nosuch'"),
        (["--method", "sense", "--param", "nosuch=1"], "unknown parameter 'nosuch'"),
        (["--method", "sense", "--param", "max_iter=abc"], "parameter 'max_iter'"),
        (["--nifti", "img.png"], ".nii or .nii.gz"),
    ],
)
def test_bad_method_or_parameter_writes_nothing(extra, fragment, tmp_path, good_file, capsys):
    out = tmp_path / "out.zarr"
    code = main(["recon", str(good_file), "-o", str(out), "--no-progress", *extra])
    check_error(capsys, code, fragment)
    assert not out.exists()


def test_output_under_a_file(tmp_path, good_file, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code = main(["recon", str(good_file), "-o", str(blocker / "out.zarr"), "--method", "zerofill", "--no-progress"])
    check_error(capsys, code, "blocker/out.zarr", "a parent of this path is a file")
    code = main(["recon", str(good_file), "-o", str(blocker), "--method", "zerofill", "--no-progress"])
    check_error(capsys, code, "not a directory")
    assert blocker.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_output_in_read_only_dir(tmp_path, good_file, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code = main(["recon", str(good_file), "-o", str(folder / "out.zarr"), "--method", "zerofill", "--no-progress"])
        check_error(capsys, code, "permission denied")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_phantom_into_missing_folder(tmp_path, capsys):
    code = main(["phantom", "-o", str(tmp_path / "nope" / "p.h5"), "--matrix", "16", "--coils", "2"])
    check_error(capsys, code, "p.h5", "does not exist")


@pytest.mark.skipif(gpu_available(), reason="a GPU is present: --device cuda is valid here")
def test_cuda_without_gpu(tmp_path, good_file, capsys):
    out = tmp_path / "out.zarr"
    code = main(["recon", str(good_file), "-o", str(out), "--device", "cuda", "--no-progress"])
    check_error(capsys, code, "--device", "no CUDA GPU")
    assert not out.exists()
