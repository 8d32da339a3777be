"""BART .cfl/.hdr and NumPy .npy: round trips, dim mapping, masks from zeros, the real brain file."""
from __future__ import annotations

import numpy as np
import pytest

from mrirecon.io import detect_format, open_raw, read, read_cfl, write_cfl


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_cfl_bytes_are_fortran_order_complex64(tmp_path, rng):
    a = _complex(rng, (5, 4, 3))
    write_cfl(tmp_path / "img", a)
    assert (tmp_path / "img.hdr").read_text() == "# Dimensions\n5 4 3\n"
    raw = np.fromfile(tmp_path / "img.cfl", dtype=np.complex64)
    np.testing.assert_array_equal(raw, a.ravel(order="F"))
    for name in ("img", "img.cfl", "img.hdr"):
        np.testing.assert_array_equal(read_cfl(tmp_path / name), a)


def test_cfl_as_kspace_maps_bart_dims(tmp_path, rng):
    # BART: READ=16, PHS1=12, PHS2=1, COIL=4, then SLICE (dim 13) = 2
    dims = [16, 12, 1, 4] + [1] * 9 + [2]
    a = _complex(rng, tuple(dims))
    a[:, ::2] = 0  # every other phase-encoding line not acquired
    write_cfl(tmp_path / "ksp", a)
    assert detect_format(tmp_path / "ksp") == "cfl"
    ksp = read(tmp_path / "ksp.cfl")
    assert ksp.dims == ("slice", "coil", "ky", "kx") and ksp.data.shape == (2, 4, 12, 16)
    np.testing.assert_array_equal(ksp.data[1, 3, 5, 7], a[7, 5, 0, 3, *([0] * 9), 1])
    np.testing.assert_array_equal(ksp.data, a[:, :, 0].reshape(16, 12, 4, 2, order="F").transpose(3, 2, 1, 0))
    expected_mask = np.zeros((12, 16), dtype=bool)
    expected_mask[1::2] = True
    np.testing.assert_array_equal(ksp.mask, expected_mask)
    one = read(tmp_path / "ksp", slices=1)
    np.testing.assert_array_equal(one.data, ksp.data[1:])
    assert ksp.header.source == "ksp.cfl" and ksp.header.source_format == "cfl"


def test_cfl_3d_volume(tmp_path, rng):
    a = _complex(rng, (8, 6, 4, 2))
    write_cfl(tmp_path / "vol", a)
    ksp = read(tmp_path / "vol")
    assert ksp.dims == ("coil", "kz", "ky", "kx")
    np.testing.assert_array_equal(ksp.data, a.transpose(3, 2, 1, 0))
    assert ksp.mask is None


def test_npy_defaults_and_dims_hint(tmp_path, rng):
    a3 = _complex(rng, (3, 8, 6))
    np.save(tmp_path / "k3.npy", a3)
    k3 = read(tmp_path / "k3.npy")
    assert k3.dims == ("slice", "coil", "ky", "kx")
    np.testing.assert_array_equal(k3.data[0], a3)
    assert k3.mask is None

    a4 = _complex(rng, (2, 3, 8, 6))
    np.save(tmp_path / "k4.npy", a4)
    np.testing.assert_array_equal(read(tmp_path / "k4.npy", slices=[1]).data, a4[1:])

    hinted = _complex(rng, (8, 6, 3))  # (ky, kx, coil)
    np.save(tmp_path / "hint.npy", hinted)
    kh = read(tmp_path / "hint.npy", dims=("ky", "kx", "coil"))
    np.testing.assert_array_equal(kh.data[0], hinted.transpose(2, 0, 1))


def test_npy_mask_from_zeros_of_all_coils(tmp_path, rng):
    a = _complex(rng, (2, 6, 5))
    a[:, 1] = 0
    a[0, 3, 2] = 0  # zero in one coil only: still acquired
    np.save(tmp_path / "u.npy", a)
    ksp = read(tmp_path / "u.npy")
    expected = np.ones((6, 5), dtype=bool)
    expected[1] = False
    np.testing.assert_array_equal(ksp.mask, expected)


@pytest.mark.realdata
def test_real_brain_npy(shared_raw):
    path = shared_raw / "sigpy-brain-8ch" / "cartesian_ksp.npy"
    with open_raw(path) as raw:
        info = raw.info()
        ksp = raw.read()
    assert info["format"] == "npy" and info["shape"] == [1, 8, 230, 180]
    assert ksp.dims == ("slice", "coil", "ky", "kx") and ksp.data.shape == (1, 8, 230, 180)
    # Poisson-disc undersampled: measured 12.43 % of (ky, kx) positions acquired (5148 of 41400)
    assert int(ksp.mask.sum()) == 5148
    assert ksp.mask[115, 90]  # the k-space centre is acquired
    # every coil is non-zero exactly where the mask says acquired
    np.testing.assert_array_equal(ksp.data[0] != 0, np.broadcast_to(ksp.mask, ksp.data[0].shape))
    assert info["sha256"] == ksp.header.source_sha256 and len(info["sha256"]) == 64
