"""``mrirecon convert``: twix -> ISMRMRD v1, validated with the ismrmrd package, round trip identical."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("twixtools")

from test_twix import synthetic  # noqa: F401  (fixture: the synthetic multi-RAID twix file)

from mrirecon import recon
from mrirecon.cli import main
from mrirecon.io import read


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore::mrirecon.io.twix.PulseqSequenceMissing")  # 160052 has no .seq
@pytest.mark.parametrize("name", ["twixtools-phantom/meas_MID00273_FID117236_gre_bodycoil.dat",
                                  "pulseq-mr-physics/2024-02-06-160052.dat"])
def test_convert_round_trip(shared_raw, tmp_path, name):
    ismrmrd = pytest.importorskip("ismrmrd")
    source = shared_raw / name
    target = tmp_path / "out.h5"
    assert main(["convert", str(source), "-o", str(target)]) == 0
    dataset = ismrmrd.Dataset(str(target), "dataset", create_if_needed=False)
    header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())  # schema-valid XML
    assert header.acquisitionSystemInformation.receiverChannels == read(source).n_coils
    first = dataset.read_acquisition(0)
    twix, mrd = read(source), read(target)
    np.testing.assert_allclose(np.array(first.read_dir), twix.header.geometry.read_dir, atol=1e-6)
    assert mrd.dims == twix.dims
    np.testing.assert_array_equal(mrd.data, twix.data)
    np.testing.assert_allclose(mrd.header.geometry.position, twix.header.geometry.position, atol=1e-4)
    a, b = (recon(k, "zerofill", device="cpu").numpy() for k in (twix, mrd))
    np.testing.assert_array_equal(a, b)


def test_convert_bad_input_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.dat"
    bad.write_bytes(b"\x00" * 64)
    assert main(["convert", str(bad), "-o", str(tmp_path / "x.h5")]) == 2
    assert "broken.dat" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.realdata
def test_convert_keeps_noise_acs_slices_and_partial_fourier(synthetic, tmp_path):  # noqa: F811 (fixture)
    """The synthetic multi-RAID twix (noise measurement, 2 slices, ACS, 6/8 partial Fourier) through ISMRMRD."""
    source, _ = synthetic
    target = tmp_path / "synthetic.h5"
    assert main(["convert", str(source), "-o", str(target)]) == 0
    twix, mrd = read(source), read(target)
    np.testing.assert_array_equal(mrd.data, twix.data)
    np.testing.assert_array_equal(mrd.noise, twix.noise)
    np.testing.assert_array_equal(mrd.calibration, twix.calibration)
    np.testing.assert_array_equal(mrd.sampling_mask(), twix.sampling_mask())
    np.testing.assert_allclose(mrd.header.geometry.position, twix.header.geometry.position, atol=1e-4)
    a, b = (recon(k, "zerofill", device="cpu").numpy() for k in (twix, mrd))
    np.testing.assert_array_equal(a, b)
