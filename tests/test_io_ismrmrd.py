"""MRD v1 reader/writer, cross-checked against the independent ``ismrmrd`` Python package."""
from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

ismrmrd = pytest.importorskip("ismrmrd")

from mrirecon.data import Geometry, KSpace, KSpaceHeader, PatientInfo, SequenceParams  # noqa: E402
from mrirecon.io import open_raw, read, write_ismrmrd  # noqa: E402

# Test acquisition: 3 slices x 2 contrasts, 3 coils, readout 16 samples (2x oversampled, recon x 8),
# 12 phase-encoding lines, partial Fourier: counters 0..8 with limit centre 3 -> rows 3..11.
N_SLICES, N_CONTRASTS, N_COILS = 3, 2, 3
ENC_X, RECON_X, N_Y = 16, 8, 12
PF_COUNTERS = np.arange(9)
PF_CENTRE = 3
PF_SHIFT = N_Y // 2 - PF_CENTRE
ACS_COUNTERS = np.arange(2, 6)  # separate calibration lines -> rows 5..8
N_NOISE, NOISE_SAMPLES = 2, 16
REVERSED = (1, 0, 4)  # (slice, contrast, ky counter) stored time-reversed
AVERAGED = (2, 1, 7)  # (slice, contrast, ky counter) acquired twice (average counter 0 and 1)
POSITIONS = np.array([[1.0, -2.0, -5.0], [1.0, -2.0, 0.0], [1.0, -2.0, 5.0]])
READ_DIR, PHASE_DIR, SLICE_DIR = np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])


def _xml_header() -> str:
    x = ismrmrd.xsd
    enc = x.encodingType(
        encodedSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=ENC_X, y=N_Y, z=1),
                                         fieldOfView_mm=x.fieldOfViewMm(x=440.0, y=220.0, z=4.0)),
        reconSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=RECON_X, y=N_Y, z=1),
                                       fieldOfView_mm=x.fieldOfViewMm(x=220.0, y=220.0, z=4.0)),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=int(PF_COUNTERS[-1]), center=PF_CENTRE),
            kspace_encoding_step_2=x.limitType(minimum=0, maximum=0, center=0),
            slice=x.limitType(minimum=0, maximum=N_SLICES - 1, center=0),
            contrast=x.limitType(minimum=0, maximum=N_CONTRASTS - 1, center=0),
        ),
        trajectory=x.trajectoryType.CARTESIAN,
        parallelImaging=x.parallelImagingType(
            accelerationFactor=x.accelerationFactorType(kspace_encoding_step_1=1, kspace_encoding_step_2=1),
            calibrationMode=x.calibrationModeType.SEPARATE),
    )
    header = x.ismrmrdHeader(
        subjectInformation=x.subjectInformationType(patientName="Doe^Jane", patientID="P123",
                                                    patientBirthdate="1970-01-02", patientGender="F"),
        studyInformation=x.studyInformationType(studyDate="2024-03-04", studyInstanceUID="1.2.3.4"),
        acquisitionSystemInformation=x.acquisitionSystemInformationType(
            systemVendor="ACME", systemModel="Scanner", systemFieldStrength_T=3.0, receiverChannels=N_COILS,
            institutionName="Hospital"),
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=127_730_000),
        encoding=[enc],
        sequenceParameters=x.sequenceParametersType(TR=[5.0], TE=[2.0, 4.0], flipAngle_deg=[10.0]),
    )
    return ismrmrd.xsd.ToXML(header)


def _fft_x(k: np.ndarray, inverse: bool) -> np.ndarray:
    f = np.fft.ifft if inverse else np.fft.fft
    return np.fft.fftshift(f(np.fft.ifftshift(k, axes=-1), axis=-1, norm="ortho"), axes=-1)


def _crop_readout(k: np.ndarray) -> np.ndarray:
    """Independent reference of oversampling removal: to image along x, keep the centre half, back."""
    start = ENC_X // 2 - RECON_X // 2
    return _fft_x(_fft_x(k, inverse=True)[..., start: start + RECON_X], inverse=False)


@pytest.fixture(scope="module")
def mrd_case(tmp_path_factory):
    """An MRD file written with the ismrmrd package, and the arrays our reader must give back."""
    rng = np.random.default_rng(7)
    shape = (N_SLICES, N_CONTRASTS, N_COILS, N_Y, ENC_X)
    truth = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    acs = (rng.standard_normal((N_SLICES, N_COILS, len(ACS_COUNTERS), ENC_X))
           + 1j * rng.standard_normal((N_SLICES, N_COILS, len(ACS_COUNTERS), ENC_X))).astype(np.complex64)
    noise = (rng.standard_normal((N_NOISE, N_COILS, NOISE_SAMPLES)) + 0j).astype(np.complex64)
    path = tmp_path_factory.mktemp("mrd") / "scan.h5"
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    ds.write_xml_header(_xml_header())

    def acquisition(data, flags=(), sl=0, contrast=0, ky=0, average=0):
        acq = ismrmrd.Acquisition.from_array(data, center_sample=ENC_X // 2, sample_time_us=5.0)
        for f in flags:
            acq.set_flag(f)
        acq.idx.slice, acq.idx.contrast, acq.idx.kspace_encode_step_1 = sl, contrast, ky
        acq.idx.average = average
        acq.position[:] = POSITIONS[sl]
        acq.read_dir[:], acq.phase_dir[:], acq.slice_dir[:] = READ_DIR, PHASE_DIR, SLICE_DIR
        ds.append_acquisition(acq)

    for n in range(N_NOISE):
        acquisition(noise[n], [ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
    for s in range(N_SLICES):
        for j, ky in enumerate(ACS_COUNTERS):
            acquisition(acs[s, :, j], [ismrmrd.ACQ_IS_PARALLEL_CALIBRATION], sl=s, ky=int(ky))
        for c in range(N_CONTRASTS):
            for ky in PF_COUNTERS:
                line = truth[s, c, :, ky + PF_SHIFT]
                if (s, c, ky) == REVERSED:
                    acquisition(line[:, ::-1], [ismrmrd.ACQ_IS_REVERSE], s, c, int(ky))
                else:
                    acquisition(line, [], s, c, int(ky))
    second = (rng.standard_normal((N_COILS, ENC_X)) + 1j * rng.standard_normal((N_COILS, ENC_X))).astype(np.complex64)
    s, c, ky = AVERAGED
    acquisition(second, [], s, c, ky, average=1)
    # A navigator with counters of a real line: must not land in (or average into) the image.
    acquisition(np.full((N_COILS, ENC_X), 99 + 0j, np.complex64), [ismrmrd.ACQ_IS_NAVIGATION_DATA], 0, 0, 4)
    ds.close()

    truth[s, c, :, ky + PF_SHIFT] = (truth[s, c, :, ky + PF_SHIFT] + second) / 2  # averages are averaged
    acquired = np.zeros((N_Y, 1), dtype=bool)
    acquired[PF_COUNTERS + PF_SHIFT] = True
    expected = _crop_readout(np.where(acquired, truth, 0)).astype(np.complex64)
    expected_cal = np.repeat(_crop_readout(acs)[:, None], N_CONTRASTS, axis=1)
    return {"path": path, "data": expected, "mask": np.broadcast_to(acquired, (N_Y, RECON_X)),
            "calibration": expected_cal, "noise": np.concatenate(list(noise), axis=1)}


def test_reader_matches_independent_writer(mrd_case):
    ksp = read(mrd_case["path"])
    assert ksp.dims == ("slice", "echo", "coil", "ky", "kx")
    assert ksp.data.shape == (N_SLICES, N_CONTRASTS, N_COILS, N_Y, RECON_X)
    # float32 FFT round trip of unit-variance data: measured max error 4.8e-7
    np.testing.assert_allclose(ksp.data, mrd_case["data"], atol=2e-6, rtol=0)
    np.testing.assert_array_equal(ksp.mask, mrd_case["mask"])
    np.testing.assert_array_equal(ksp.noise, mrd_case["noise"])
    assert ksp.calibration.shape == (N_SLICES, N_CONTRASTS, N_COILS, len(ACS_COUNTERS), RECON_X)
    np.testing.assert_allclose(ksp.calibration, mrd_case["calibration"], atol=2e-6, rtol=0)
    h = ksp.header
    assert h.encoded_matrix == (1, N_Y, RECON_X) and h.recon_matrix == (1, N_Y, RECON_X)
    assert h.calibration_shape == (len(ACS_COUNTERS), RECON_X)
    assert h.kspace_centre == (0, N_Y // 2, RECON_X // 2)
    np.testing.assert_array_equal(h.geometry.position, POSITIONS)
    np.testing.assert_array_equal(h.geometry.read_dir, READ_DIR)
    np.testing.assert_array_equal(h.geometry.phase_dir, PHASE_DIR)
    assert h.geometry.fov_mm == (4.0, 220.0, 220.0)
    assert h.sequence.te_ms == (2.0, 4.0) and h.sequence.tr_ms == 5.0 and h.sequence.field_strength_t == 3.0
    assert h.patient.name == "Doe^Jane" and h.patient.birth_date == "19700102" and h.patient.sex == "F"
    assert h.source == "scan.h5" and h.source_format == "ismrmrd" and len(h.source_sha256) == 64


def test_info_counts_and_hides_phi(mrd_case):
    with open_raw(mrd_case["path"]) as raw:
        info = raw.info()
        assert raw.n_slices == N_SLICES
        with_phi = raw.info(include_phi=True)
    counts = info["counts"]
    assert counts["noise"] == N_NOISE
    assert counts["calibration"] == N_SLICES * len(ACS_COUNTERS)
    assert counts["imaging"] == N_SLICES * N_CONTRASTS * len(PF_COUNTERS) + 1  # + the second average
    assert counts["averages"] == 2
    assert counts["ignored_navigation"] == 1 and counts["reverse"] == 1
    assert info["calibration"]["mode"] == "separate" and info["contrasts"] == N_CONTRASTS
    assert "patient" not in info and "Doe" not in repr(info)
    assert with_phi["patient"]["id"] == "P123"


def test_include_ignored_places_the_navigator(mrd_case):
    ksp = read(mrd_case["path"], include_ignored=True)
    row = 4 + PF_SHIFT
    # the navigator (constant 99) is averaged with the imaging line that has the same counters
    navigator = _crop_readout(np.full((N_COILS, ENC_X), 99, dtype=np.complex64))
    expected = (mrd_case["data"][0, 0, :, row] + navigator) / 2
    np.testing.assert_allclose(ksp.data[0, 0, :, row], expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ksp.data[1:], mrd_case["data"][1:], atol=2e-6, rtol=0)


def test_lazy_slice_selection_reads_only_that_slice(mrd_case, monkeypatch):
    full = read(mrd_case["path"])
    selections = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, new_dtype=None):
        selections.append(args)
        return original(self, args, new_dtype=new_dtype)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    one = read(mrd_case["path"], slices=[2])
    monkeypatch.undo()
    np.testing.assert_array_equal(one.data, full.data[2:3])
    np.testing.assert_array_equal(one.calibration, full.calibration[2:3])
    np.testing.assert_array_equal(one.header.geometry.position, POSITIONS[2:3])
    row_reads = [np.asarray(a) for a in selections if isinstance(a, np.ndarray)]
    imaging_rows = N_CONTRASTS * len(PF_COUNTERS) + 1  # slice 2 holds the twice-acquired line
    assert sorted(r.size for r in row_reads) == sorted([len(ACS_COUNTERS), imaging_rows, N_NOISE])


def test_written_file_opens_with_ismrmrd_and_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    shape = (2, 4, 10, 8)
    mask = np.zeros((10, 8), dtype=bool)
    mask[::2] = True
    mask[4:7] = True
    data = ((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * mask).astype(np.complex64)
    header = KSpaceHeader(
        recon_matrix=(1, 10, 8), calibration_shape=(3, 8), acceleration=(1, 2),
        geometry=Geometry(fov_mm=(5.0, 200.0, 160.0), position=[[0, 0, -3.0], [0, 0, 3.0]],
                          read_dir=[0, 1, 0], phase_dir=[1, 0, 0], slice_dir=[0, 0, -1]),
        sequence=SequenceParams(tr_ms=400.0, te_ms=(10.0,), flip_angle_deg=70.0, field_strength_t=1.5,
                                protocol_name="t1_se"),
        patient=PatientInfo(name="Roe^Rick", id="ID9", birth_date="19800506", sex="M", study_date="20240101"),
    )
    noise = (rng.standard_normal((4, 20)) + 1j * rng.standard_normal((4, 20))).astype(np.complex64)
    ksp = KSpace(data, ("slice", "coil", "ky", "kx"), header=header, mask=mask, noise=noise)
    path = tmp_path / "ours.h5"
    write_ismrmrd(path, ksp)

    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:
        xml = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
        acqs = [ds.read_acquisition(i) for i in range(ds.number_of_acquisitions())]
    assert xml.encoding[0].encodedSpace.matrixSize.y == 10
    assert xml.subjectInformation.patientID == "ID9"
    assert xml.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_1 == 2
    noise_acqs = [a for a in acqs if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    np.testing.assert_array_equal(np.concatenate([a.data for a in noise_acqs], axis=1), noise)
    imaging = [a for a in acqs if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    assert len(imaging) == 2 * int(mask.any(axis=1).sum())
    for a in imaging:
        s, ky = a.idx.slice, a.idx.kspace_encode_step_1
        np.testing.assert_array_equal(a.data, data[s, :, ky])
        np.testing.assert_array_equal(np.asarray(a.position), np.float32(header.geometry.position[s]))
    embedded = [a.idx.kspace_encode_step_1 for a in imaging if a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)]
    assert sorted(set(embedded)) == [4, 5, 6]

    back = read(path)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.mask, mask)
    np.testing.assert_array_equal(back.noise, noise)
    assert back.header.calibration_shape == (3, 8) and back.header.acceleration == (1, 2)
    np.testing.assert_allclose(back.header.geometry.position, header.geometry.position)
    assert back.header.patient.birth_date == "19800506" and back.header.sequence.protocol_name == "t1_se"


def test_separate_calibration_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    data = (rng.standard_normal((1, 2, 8, 6)) + 0j).astype(np.complex64)
    cal = (rng.standard_normal((1, 2, 4, 6)) + 1j).astype(np.complex64)
    ksp = KSpace(data, ("slice", "coil", "ky", "kx"), calibration=cal)
    write_ismrmrd(tmp_path / "cal.h5", ksp)
    back = read(tmp_path / "cal.h5")
    np.testing.assert_array_equal(back.calibration, cal)
    np.testing.assert_array_equal(back.data, data)
    assert back.mask is None and back.header.calibration_shape == (4, 6)


def test_header_table_is_read_in_bulk(tmp_path, monkeypatch):
    n_slices, n_y = 20, 1000  # 20,000 acquisitions
    data = np.ones((n_slices, 2, n_y, 4), dtype=np.complex64)
    write_ismrmrd(tmp_path / "big.h5", KSpace(data, ("slice", "coil", "ky", "kx")))
    calls = []
    original = h5py.Dataset.__getitem__

    def counting(self, args, new_dtype=None):
        calls.append(self.name)
        return original(self, args, new_dtype=new_dtype)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    t0 = time.perf_counter()
    with open_raw(tmp_path / "big.h5") as raw:
        info = raw.info()
        ksp = raw.read()
    elapsed = time.perf_counter() - t0
    assert info["counts"]["imaging"] == n_slices * n_y
    assert ksp.data.shape == (n_slices, 2, n_y, 4)
    # xml, the whole 'head' column, then the 'data' column: three HDF5 reads, not 20,000.
    assert calls == ["/dataset/xml", "/dataset/data", "/dataset/data"]
    # measured 0.09 s on 2 shared cores; 1 s leaves room for load, a per-row loop takes far longer
    assert elapsed < 1.0


def test_3d_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    data = (rng.standard_normal((2, 4, 6, 8)) + 1j * rng.standard_normal((2, 4, 6, 8))).astype(np.complex64)
    mask = np.zeros((4, 6, 8), dtype=bool)
    mask[:, ::2] = True
    ksp = KSpace(data * mask, ("coil", "kz", "ky", "kx"), mask=mask)
    write_ismrmrd(tmp_path / "vol.h5", ksp)
    back = read(tmp_path / "vol.h5")
    assert back.dims == ("coil", "kz", "ky", "kx")
    np.testing.assert_array_equal(back.data, data * mask)
    np.testing.assert_array_equal(back.mask, mask)


def test_mask_varying_along_readout_survives_mrd(tmp_path, rng):
    mask = rng.random((8, 10)) < 0.4  # Poisson-like 2D pattern: whole lines written, zeros where not sampled
    mask[4, 5] = True
    data = ((rng.standard_normal((1, 3, 8, 10)) + 1j) * mask).astype(np.complex64)
    write_ismrmrd(tmp_path / "poisson.h5", KSpace(data, ("slice", "coil", "ky", "kx"), mask=mask))
    back = read(tmp_path / "poisson.h5")
    np.testing.assert_array_equal(back.mask, mask)
    np.testing.assert_array_equal(back.data, data)


def test_partial_echo_is_placed_by_center_sample(tmp_path, rng):
    """14 samples, 2 discarded at the start, echo centre at sample 6 -> kept 12 at kx 4..15 of 16."""
    x = ismrmrd.xsd
    space = x.encodingSpaceType(matrixSize=x.matrixSizeType(x=16, y=4, z=1),
                                fieldOfView_mm=x.fieldOfViewMm(x=160.0, y=40.0, z=5.0))
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_000_000),
        encoding=[x.encodingType(encodedSpace=space, reconSpace=space, trajectory=x.trajectoryType.CARTESIAN,
                                 encodingLimits=x.encodingLimitsType(
                                     kspace_encoding_step_1=x.limitType(minimum=0, maximum=3, center=2)))],
    )
    lines = (rng.standard_normal((4, 2, 14)) + 1j * rng.standard_normal((4, 2, 14))).astype(np.complex64)
    path = tmp_path / "echo.h5"
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(ismrmrd.xsd.ToXML(header))
        for ky in range(4):
            acq = ismrmrd.Acquisition.from_array(lines[ky], discard_pre=2, center_sample=6)
            acq.idx.kspace_encode_step_1 = ky
            ds.append_acquisition(acq)
    ksp = read(path)
    expected = np.zeros((2, 4, 16), dtype=np.complex64)
    expected[:, :, 4:] = lines[:, :, 2:].transpose(1, 0, 2)
    np.testing.assert_array_equal(ksp.data[0], expected)
    np.testing.assert_array_equal(ksp.mask, np.broadcast_to(np.arange(16) >= 4, (4, 16)))
