"""fastMRI HDF5 reader and writer: multi-/single-coil layout, mask handling, XML header mapping."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from mrirecon.data import KSpace, KSpaceHeader, SequenceParams
from mrirecon.io import open_raw, read, write_fastmri

ismrmrd = pytest.importorskip("ismrmrd")

N_SLICES, N_COILS, N_READ, N_PHASE = 3, 4, 16, 10  # fastMRI kspace (slice, coil, 16 readout, 10 phase)


def _fastmri_xml() -> str:
    x = ismrmrd.xsd
    enc = x.encodingType(
        encodedSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=N_READ, y=N_PHASE, z=1),
                                         fieldOfView_mm=x.fieldOfViewMm(x=280.0, y=140.0, z=4.5)),
        reconSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=8, y=6, z=1),
                                       fieldOfView_mm=x.fieldOfViewMm(x=140.0, y=105.0, z=4.5)),
        encodingLimits=x.encodingLimitsType(kspace_encoding_step_1=x.limitType(minimum=0, maximum=N_PHASE - 1, center=5)),
        trajectory=x.trajectoryType.CARTESIAN,
    )
    header = x.ismrmrdHeader(experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_000_000),
                             encoding=[enc])
    return ismrmrd.xsd.ToXML(header)


def _kspace(rng: np.random.Generator, shape: tuple[int, ...], columns: np.ndarray) -> np.ndarray:
    k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    return k * columns


@pytest.fixture
def columns() -> np.ndarray:
    c = np.zeros(N_PHASE, dtype=bool)
    c[::3] = True
    c[4:7] = True
    return c


def test_multicoil_with_mask_and_header(tmp_path, rng, columns):
    k = _kspace(rng, (N_SLICES, N_COILS, N_READ, N_PHASE), columns)
    path = tmp_path / "file_brain.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = k
        f["mask"] = columns.astype(np.float32)
        f["ismrmrd_header"] = _fastmri_xml().encode()
        f.attrs["acquisition"] = "AXT2"
        f.attrs["patient_id"] = "abc123"
    ksp = read(path)
    assert ksp.dims == ("slice", "coil", "ky", "kx")
    np.testing.assert_array_equal(ksp.data, k)
    np.testing.assert_array_equal(ksp.mask, np.broadcast_to(columns, (N_READ, N_PHASE)))
    h = ksp.header
    # XML x (readout, 16) is our ky axis: recon (x=8, y=6) -> (1, 8, 6); FOV (z, x, y)
    assert h.encoded_matrix == (1, N_READ, N_PHASE) and h.recon_matrix == (1, 8, 6)
    assert h.geometry.fov_mm == (4.5, 140.0, 105.0)
    assert h.sequence.protocol_name == "AXT2" and h.patient.id == "abc123"
    assert h.source_format == "fastmri"
    with open_raw(path) as raw:
        info = raw.info()
    assert info["counts"]["acquired_columns"] == int(columns.sum()) and "patient" not in info


def test_single_coil_and_derived_mask(tmp_path, rng, columns):
    k = _kspace(rng, (2, N_READ, N_PHASE), columns)
    path = tmp_path / "file_knee.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = k
    ksp = read(path, slices=[1])
    assert ksp.data.shape == (1, 1, N_READ, N_PHASE)
    np.testing.assert_array_equal(ksp.data[0, 0], k[1])
    np.testing.assert_array_equal(ksp.mask, np.broadcast_to(columns, (N_READ, N_PHASE)))
    assert ksp.header.recon_matrix == (1, N_READ, N_PHASE)


def test_write_fastmri_round_trip(tmp_path, rng, columns):
    k = _kspace(rng, (N_SLICES, N_COILS, N_READ, N_PHASE), columns)
    header = KSpaceHeader(recon_matrix=(1, 8, 6), sequence=SequenceParams(protocol_name="CORPD"))
    ksp = KSpace(k, ("slice", "coil", "ky", "kx"), header=header, mask=np.broadcast_to(columns, (N_READ, N_PHASE)))
    rss = np.abs(k).sum(axis=1)[:, :8, :6]
    write_fastmri(tmp_path / "out.h5", ksp, reconstruction_rss=rss)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["mask"][()], columns)  # stored per column, as fastMRI does
        assert f.attrs["max"] == pytest.approx(float(rss.max()))
        np.testing.assert_allclose(f["reconstruction_rss"][()], rss)
    back = read(tmp_path / "out.h5")
    np.testing.assert_array_equal(back.data, k)
    np.testing.assert_array_equal(back.mask, ksp.mask)
    assert back.header.recon_matrix == (1, 8, 6) and back.header.sequence.protocol_name == "CORPD"
