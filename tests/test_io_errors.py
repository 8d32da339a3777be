"""Every bad input gives ``InputError`` naming the file and the problem, never a raw traceback."""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.data import KSpace
from mrirecon.errors import InputError, OutputError
from mrirecon.io import open_raw, read, write_cfl, write_fastmri, write_ismrmrd


def _mrd(path: Path, data: np.ndarray | None = None) -> Path:
    data = np.ones((1, 2, 4, 6), dtype=np.complex64) if data is None else data
    write_ismrmrd(path, KSpace(data, ("slice", "coil", "ky", "kx")))
    return path


def _patch_heads(path: Path, field: str, value: int) -> Path:
    with h5py.File(path, "r+") as f:
        table = f["dataset/data"][:]
        table["head"][field] = value
        f["dataset/data"][...] = table
    return path


def _h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


def _truncated(tmp: Path) -> Path:
    path = _mrd(tmp / "trunc.h5", np.ones((4, 2, 64, 32), dtype=np.complex64))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _mrd_bad_xml(tmp: Path) -> Path:
    path = _mrd(tmp / "badxml.h5")
    with h5py.File(path, "r+") as f:
        del f["dataset/xml"]
        f["dataset"].create_dataset("xml", data=np.array([b"<not xml"], dtype=object), dtype=h5py.vlen_dtype(bytes))
    return path


def _mrd_no_data(tmp: Path) -> Path:
    path = _mrd(tmp / "nodata.h5")
    with h5py.File(path, "r+") as f:
        del f["dataset/data"]
    return path


def _bad_cfl_dims(tmp: Path) -> Path:
    write_cfl(tmp / "maps", np.ones((4, 4, 1, 2, 2), dtype=np.complex64))  # MAPS (dim 4) = 2
    return tmp / "maps"


def _truncated_cfl(tmp: Path) -> Path:
    write_cfl(tmp / "short", np.ones((4, 4, 1, 2), dtype=np.complex64))
    cfl = tmp / "short.cfl"
    cfl.write_bytes(cfl.read_bytes()[:-8])
    return tmp / "short"


def _npy(name: str, array: np.ndarray) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / name, array)
        return tmp / name
    return make


def _text(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name
    return make


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 4, 4), np.complex64))
    return buffer.getvalue()


NAN_KSPACE = np.ones((2, 4, 4), dtype=np.complex64)
NAN_KSPACE[0, 1, 1] = np.nan

CASES = {
    "missing file": (lambda t: t / "absent.h5", {}, "no such file"),
    "directory": (lambda t: t, {}, "directory"),
    "empty file": (_text("empty.dat", b""), {}, "empty"),
    "not HDF5 but .h5": (_text("fake.h5", b"just some text, not HDF5\n"), {}, "not an HDF5 file"),
    "unknown content": (_text("blob.bin", b"\x00\x01garbage" * 10), {}, "unrecognised format"),
    "truncated HDF5": (_truncated, {}, "HDF5"),
    "corrupt HDF5": (_text("corrupt.h5", b"\x89HDF\r\n\x1a\n" + b"\xff" * 200), {}, "corrupt"),
    "HDF5 without known datasets": (lambda t: _h5(t / "other.h5", foo=np.zeros(3)), {}, "neither MRD"),
    "MRD without data": (_mrd_no_data, {"format": "ismrmrd"}, "no MRD group"),
    "MRD bad XML": (_mrd_bad_xml, {}, "not valid XML"),
    "MRD zero coils": (lambda t: _patch_heads(_mrd(t / "zc.h5"), "active_channels", 0), {}, "zero"),
    "MRD data shorter than header": (lambda t: _patch_heads(_mrd(t / "ns.h5"), "number_of_samples", 5), {}, "do not match"),
    "MRD NaN": (lambda t: _mrd(t / "nan.h5", NAN_KSPACE[None]), {}, "NaN"),
    "fastMRI 2-D kspace": (lambda t: _h5(t / "f2.h5", kspace=np.ones((4, 4), np.complex64)), {}, "expected (slice, coil"),
    "fastMRI zero coils": (lambda t: _h5(t / "f0.h5", kspace=np.ones((1, 0, 4, 4), np.complex64)), {}, "zero coils"),
    "fastMRI real kspace": (lambda t: _h5(t / "fr.h5", kspace=np.ones((1, 2, 4, 4))), {}, "expected complex"),
    "fastMRI bad mask": (lambda t: _h5(t / "fm.h5", kspace=np.ones((1, 2, 4, 4), np.complex64), mask=np.ones(7)), {}, "'mask' has shape"),
    "fastMRI Inf": (lambda t: _h5(t / "fi.h5", kspace=np.full((1, 2, 4, 4), np.inf, np.complex64)), {}, "NaN or Inf"),
    "npy NaN": (_npy("nan.npy", NAN_KSPACE), {}, "NaN or Inf"),
    "npy real": (_npy("real.npy", np.ones((2, 4, 4))), {}, "expected complex"),
    "npy zero coils": (_npy("zero.npy", np.ones((0, 4, 4), np.complex64)), {}, "zero coils"),
    "npy 5-D without dims": (_npy("five.npy", np.ones((1, 1, 2, 4, 4), np.complex64)), {}, "give dims"),
    "npy dims of wrong length": (_npy("d.npy", np.ones((2, 4, 4), np.complex64)), {"dims": ("coil", "kx")}, "do not match"),
    "npy unknown dim name": (_npy("u.npy", np.ones((2, 4, 4), np.complex64)), {"dims": ("chan", "ky", "kx")}, "unknown dim"),
    "npy truncated": (lambda t: _text("cut.npy", _npy_bytes()[:-40])(t), {}, "not a readable .npy"),
    "npy pickled object": (_npy("obj.npy", np.array([{"a": 1}], dtype=object)), {}, "not a readable .npy"),
    "dims on HDF5": (lambda t: _mrd(t / "dims.h5"), {"dims": ("coil", "ky", "kx")}, "dims apply to .npy"),
    "unknown format name": (lambda t: _mrd(t / "fmt.h5"), {"format": "dicom"}, "unknown format"),
    "slice out of range": (lambda t: _mrd(t / "range.h5"), {"slices": [3]}, "out of range"),
    "cfl truncated": (_truncated_cfl, {}, "truncated"),
    "cfl missing pair": (_text("lonely.hdr", b"# Dimensions\n2 2\n"), {}, "BART file missing"),
    "cfl bad header": (_text("bad.hdr", b"hello\n"), {"format": "cfl"}, "BART"),
    "cfl unsupported dims": (_bad_cfl_dims, {}, "dims [4]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_the_file(tmp_path, case):
    make, kwargs, problem = CASES[case]
    if case == "cfl bad header":
        (tmp_path / "bad.cfl").write_bytes(b"\0" * 8)
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        read(path, **kwargs)
    assert err.value.source is not None
    assert Path(err.value.source).name.split(".")[0] == Path(path).name.split(".")[0]
    assert problem in err.value.problem, err.value.problem


def test_open_raw_errors_before_reading(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_raw(tmp_path / "gone.npy", format="npy")


def test_writers_refuse_what_the_format_cannot_hold(tmp_path):
    ones = np.ones((2, 2, 4, 4), dtype=np.complex64)
    with pytest.raises(OutputError, match="cannot hold batch dims"):
        write_ismrmrd(tmp_path / "avg.h5", KSpace(ones, ("average", "coil", "ky", "kx")))
    with pytest.raises(OutputError, match="cannot create a file"):
        write_ismrmrd(tmp_path / "no" / "such" / "dir.h5", KSpace(ones, ("slice", "coil", "ky", "kx")))
    with pytest.raises(OutputError, match="2D"):
        write_fastmri(tmp_path / "vol.h5", KSpace(ones, ("coil", "kz", "ky", "kx")))
    assert not any(tmp_path.iterdir())  # nothing half-written left behind
