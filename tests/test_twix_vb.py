"""An old (VB, syngo MR B1x) twix file with a noise-adjust scan, separate ACS lines and R=2 undersampling.

No such product file is in ../shared, and twixtools writes only the VD/VE layout, so the test writes
the VB layout itself (per channel: a 128-byte MDH, then the samples) from the real VB scan of the
Ankara course: its header with the Pulseq sequence name replaced by a product one (same length), so
the reader takes the line counters at their word, as for any product scan.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

twixtools = pytest.importorskip("twixtools")
pytestmark = pytest.mark.realdata

from mrirecon import recon
from mrirecon.io import open_raw

SOURCE = "pulseq-ankara-course/meas_MID00107_FID33064_sol12.dat"  # VB17 MDHs, 4 coils, 256 lines of 256
ACS = range(116, 140)  # 24 lines around the centre line 128


def _vb_mdb(m, data: np.ndarray, flags: tuple[str, ...] = ()) -> tuple[bytes, np.ndarray]:
    """A VB MDH copied from ``m`` with ``flags`` added, and its (coil, samples) data."""
    mdh = type(m.mdh).from_buffer_copy(bytes(m.mdh))
    copy = twixtools.mdb.Mdb_local(data)
    copy.mdh = mdh
    for flag in flags:
        copy.add_flag(flag)
    return copy.mdh, np.asarray(data, np.complex64)


def _write_vb(path: Path, header: bytes, mdbs: list, acqend: bytes) -> None:
    out = bytearray(header)
    for counter, (mdh, data) in enumerate(mdbs, start=1):
        mdh.ScanCounter = counter
        for coil in range(data.shape[0]):
            mdh.ChannelId = coil
            out += bytes(mdh) + np.ascontiguousarray(data[coil]).tobytes()
    path.write_bytes(bytes(out + acqend))


@pytest.fixture(scope="module")
def vb_file(shared_raw, tmp_path_factory) -> tuple[Path, dict]:
    src = shared_raw / SOURCE
    original = src.read_bytes()
    with contextlib.redirect_stdout(io.StringIO()):
        scan = twixtools.read_twix(str(src), verbose=False, keep_acqend=False)[-1]
    header = scan["hdr_str"].tobytes()
    acqend = original[len(header) + sum(m.data.shape[0] * (128 + 8 * m.data.shape[1]) for m in scan["mdb"]):]
    header = header.replace(b"%CustomerSeq%\\pulseq", b"%SiemensSeq%\\fl_test")  # same length: no size change
    lines = {m.mdh.Counter.Lin: m for m in scan["mdb"]}
    noise = (np.random.default_rng(0).standard_normal((4, 256, 2)) @ [1, 1j]).astype(np.complex64)
    mdbs = [_vb_mdb(lines[0], noise, ("NOISEADJSCAN",))]
    mdbs += [_vb_mdb(lines[k], lines[k].data, ("PATREFSCAN",)) for k in ACS]
    mdbs += [_vb_mdb(lines[k], lines[k].data) for k in range(0, 256, 2)]
    path = tmp_path_factory.mktemp("vb") / "vb_noise_acs.dat"
    _write_vb(path, header, mdbs, acqend)
    full = np.stack([lines[k].data for k in range(256)], axis=1)  # (coil, ky, kx) as scanned
    return path, {"noise": noise, "full": full}


def test_vb_noise_and_acs_scans_are_read(vb_file):
    path, ref = vb_file
    with open_raw(path) as raw:
        info = raw.info()
        ksp = raw.read()
    assert info["counts"] == {"imaging": 128, "noise": 1, "calibration": 24, "phase_correction": 0}
    assert info["calibration"] == {"mode": "separate", "shape": [24, 256]}
    assert dict(zip(ksp.dims, ksp.data.shape)) == {"slice": 1, "coil": 4, "ky": 256, "kx": 256}
    np.testing.assert_array_equal(ksp.noise, ref["noise"])
    assert ksp.mask is not None and ksp.mask[::2].all() and not ksp.mask[1::2].any()
    np.testing.assert_array_equal(ksp.data[0][:, ::2], ref["full"][:, ::2])
    np.testing.assert_array_equal(ksp.calibration, ref["full"][:, ACS.start:ACS.stop])  # one slice: (coil, ky, kx)


def test_vb_grappa_with_separate_acs_matches_the_fully_sampled_scan(vb_file):
    path, ref = vb_file
    with open_raw(path) as raw:
        ksp = raw.read()
    full = np.sqrt((np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ref["full"], (-2, -1))), (-2, -1))) ** 2).sum(0))
    truth = full / np.linalg.norm(full)

    def nrmse(image: np.ndarray) -> float:
        image = np.abs(image).reshape(truth.shape)
        return float(np.linalg.norm(image / np.linalg.norm(image) - truth))

    grappa = nrmse(recon(ksp, "grappa", device="cpu").numpy())
    zerofill = nrmse(recon(ksp, "zerofill", device="cpu").numpy())
    assert grappa < 0.5 * zerofill, (grappa, zerofill)
