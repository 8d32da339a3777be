"""Siemens twix reader: every real twix file in ../shared/data/raw, and synthetic files written with
twixtools from a real one (multi-slice, noise-adjust scans, ACS lines, partial Fourier, REFLECT)."""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

twixtools = pytest.importorskip("twixtools")
# every test here reads ../shared/data/raw; the Pulseq scans that have no .seq are read on purpose without one
pytestmark = [pytest.mark.realdata, pytest.mark.filterwarnings("ignore::mrirecon.io.twix.PulseqSequenceMissing")]

from mrirecon.kernels.fft import fftc, ifftc

from mrirecon import recon
from mrirecon.cli import main
from mrirecon.errors import InputError
from mrirecon.io import detect_format, open_raw, read
from mrirecon.io.twix import PulseqSequenceMissing

GRE = "twixtools-phantom/gre.dat"
# file -> shape by dim (from each folder's SOURCE.md) and the object/border SNR of the zero-filled
# image measured here; the test floor is 80 % of it (low values: objects that reach the image border).
CARTESIAN = {
    GRE: ({"slice": 1, "coil": 2, "ky": 160, "kx": 160}, 5.3),
    "twixtools-phantom/meas_MID00273_FID117236_gre_bodycoil.dat":
        ({"slice": 1, "repetition": 2, "coil": 2, "ky": 128, "kx": 128}, 4.8),
    "twixtools-phantom/singlechannel.dat": ({"slice": 1, "coil": 1, "ky": 256, "kx": 256}, 54.9),
    "pulseq-mr-physics/2024-02-06-160052.dat": ({"slice": 1, "coil": 16, "ky": 128, "kx": 128}, 62.2),
    "pulseq-mr-physics/2024-02-06-160115.dat": ({"slice": 1, "coil": 2, "ky": 128, "kx": 128}, 30.3),
    "pulseq-mr-physics/2024-02-06-164128.dat": ({"slice": 1, "coil": 16, "ky": 128, "kx": 128}, 37.5),
    "pulseq-mr-physics/2024-02-06-164120.dat": ({"slice": 1, "coil": 2, "ky": 128, "kx": 128}, 16.9),
    "pulseq-mr-physics/meas_MID00243_FID33257_pulseq.dat": ({"slice": 1, "coil": 32, "ky": 64, "kx": 64}, 2.6),
    "pulseq-tutorials/02_01_GRE_example.dat": ({"slice": 1, "coil": 1, "ky": 256, "kx": 256}, 13.9),
    "pulseq-tutorials/11_01_GRE.dat": ({"slice": 1, "coil": 1, "ky": 256, "kx": 256}, 25.5),
    "pulseq-ankara-course/meas_MID00107_FID33064_sol12.dat": ({"slice": 1, "coil": 4, "ky": 256, "kx": 256}, 49.7),
}


def _snr(image: np.ndarray) -> float:
    """Mean of the brightest 20 % over the std of the 8-pixel image border."""
    border = np.concatenate([image[:8].ravel(), image[-8:].ravel(), image[:, :8].ravel(), image[:, -8:].ravel()])
    return float(image[image > np.percentile(image, 80)].mean() / border.std())


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _zerofill(path: Path) -> np.ndarray:
    return np.abs(recon(read(path), "zerofill", device="cpu").numpy())


def _load_twix(path: Path) -> list[dict]:
    with contextlib.redirect_stdout(io.StringIO()):
        return twixtools.read_twix(str(path), verbose=False, keep_acqend=False)


@pytest.mark.parametrize("name", sorted(CARTESIAN))
def test_real_cartesian_file(shared_raw, name):
    path = shared_raw / name
    assert detect_format(path) == "twix"
    ksp = read(path)
    shape, snr = CARTESIAN[name]
    assert dict(zip(ksp.dims, ksp.data.shape)) == shape
    assert ksp.header.sequence.software_version.startswith("syngo MR")
    image = _zerofill(path).reshape(-1, *ksp.spatial_shape)
    assert _snr(image[0]) > 0.8 * snr


def test_head_and_body_coil_images_of_one_slice_agree(shared_raw):
    folder = shared_raw / "pulseq-mr-physics"
    # measured correlations: phantom 0.916, in vivo 0.952
    for head, body, floor in (("160052", "160115", 0.89), ("164128", "164120", 0.93)):
        a, b = (_zerofill(folder / f"2024-02-06-{n}.dat")[0] for n in (head, body))
        assert _corr(a, b) > floor


def _coil_images(path: Path) -> np.ndarray:
    """(coil, y, x) complex images of the file's first slice: plain centred inverse FFT, no combination."""
    return ifftc(read(path).data[0], (-2, -1))


def _object_mask(image: np.ndarray, erode: int) -> np.ndarray:
    """Inside of the object: above 20 % of the 99th percentile, holes filled, ``erode`` pixels in from its edge."""
    mask = image > 0.2 * np.percentile(image, 99)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=2))
    return ndimage.binary_erosion(mask, iterations=erode)


def _masked_lowpass(f: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of ``f`` inside ``mask`` only (normalised convolution: the edge adds no frequencies)."""
    weight = ndimage.gaussian_filter(mask.astype(float), sigma)
    return np.where(mask, ndimage.gaussian_filter(np.where(mask, f, 0.0), sigma) / np.maximum(weight, 1e-6), 0.0)


def _low_frequency_share(f: np.ndarray, mask: np.ndarray, sigma: float = 4.0) -> float:
    """Share of the variance of ``f`` inside ``mask`` that a ``sigma``-pixel low-pass keeps (1: all of it)."""
    residual = (f - _masked_lowpass(f, mask, sigma))[mask]
    return 1.0 - float(residual @ residual / np.sum((f[mask] - f[mask].mean()) ** 2))


def test_receive_field_maps_from_head_and_body_coil_are_smooth(shared_raw):
    """Head-coil images divided by the body-coil image of the same slice are receive-field maps: the object
    cancels, so they keep more of their variance in low spatial frequencies than the images do.

    The single body-coil scans (no repetitions to average) have a third to a fifth of the head coil's SNR, so
    every image is first smoothed alike (normalised 1-pixel Gaussian inside the object); the share is then
    that of a 4-pixel low-pass. Measured shares, phantom / in vivo: RSS image 0.981 / 0.888, body image
    0.989 / 0.809, RSS / body 0.981 / 0.937, least smooth single-coil map 0.991 / 0.980, least smooth single-coil
    image 0.992 / 0.957. The phantom is uniform (its images are smooth already); the brain is where the object
    has to cancel."""
    folder = shared_raw / "pulseq-mr-physics"
    shares = {}
    for head, body in (("160052", "160115"), ("164128", "164120")):
        coils, body_coils = (_coil_images(folder / f"2024-02-06-{n}.dat") for n in (head, body))
        body_image = np.sqrt((np.abs(body_coils) ** 2).sum(axis=0))
        mask = _object_mask(body_image, erode=3)
        smooth = [_masked_lowpass(np.abs(c), mask, 1.0) for c in (*coils, body_image)]
        *coil_maps, body_map = smooth
        rss = np.sqrt(sum(c ** 2 for c in coil_maps))
        inv_body = np.where(mask, 1.0 / np.where(mask, body_map, 1.0), 0.0)
        shares[head] = {
            "rss": _low_frequency_share(rss, mask), "body": _low_frequency_share(body_map, mask),
            "ratio": _low_frequency_share(rss * inv_body, mask),
            "coil_maps": min(_low_frequency_share(c * inv_body, mask) for c in coil_maps),
            "coils": min(_low_frequency_share(c, mask) for c in coil_maps),
        }
    phantom, brain = shares["160052"], shares["164128"]
    assert phantom["ratio"] > 0.97 and phantom["coil_maps"] > 0.98
    assert brain["ratio"] > 0.92 and brain["coil_maps"] > 0.97
    assert brain["ratio"] > brain["rss"] + 0.03 and brain["ratio"] > brain["body"] + 0.1
    assert brain["coil_maps"] > brain["coils"] + 0.01


def test_in_vivo_snr_in_the_brain(shared_raw):
    """RSS SNR inside the brain (object mask 8 pixels in from the scalp), noise from the complex samples of
    the 12x12 image corners of every coil. Measured: 16-channel head coil 120.8, body coil 24.0 (ratio 5.0)."""
    snr = {}
    for name in ("164128", "164120"):
        coils = _coil_images(shared_raw / f"pulseq-mr-physics/2024-02-06-{name}.dat")
        rss = np.sqrt((np.abs(coils) ** 2).sum(axis=0))
        brain = _object_mask(rss, erode=8)
        corners = np.concatenate([coils[:, y, x].reshape(len(coils), -1)
                                  for y in (slice(0, 12), slice(-12, None)) for x in (slice(0, 12), slice(-12, None))], axis=1)
        sigma = np.sqrt(np.mean(corners.real ** 2 + corners.imag ** 2) / 2)
        snr[name] = float(rss[brain].mean() / sigma)
    assert snr["164128"] > 110
    assert snr["164128"] > 4.5 * snr["164120"]


def test_repetitions_are_separate_and_alike(shared_raw):
    image = _zerofill(shared_raw / "twixtools-phantom/meas_MID00273_FID117236_gre_bodycoil.dat")[0]
    assert image.shape[0] == 2 and not np.allclose(image[0], image[1])
    assert _corr(image[0], image[1]) > 0.99  # measured 0.9945


def test_oversampling_removed_like_an_independent_recon(shared_raw):
    """gre.dat: 2x readout oversampling; the image must equal a plain FFT of the raw lines, central half kept."""
    scan = _load_twix(shared_raw / GRE)[-1]
    lines = [m for m in scan["mdb"] if m.is_image_scan()]
    raw = np.zeros((2, 160, 320), dtype=np.complex64)
    for m in lines:
        raw[:, m.cLin] = m.data
    reference = np.sqrt((np.abs(ifftc(raw)) ** 2).sum(axis=0))[:, 80:240]
    ours = _zerofill(shared_raw / GRE)[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-4 * reference.max())


def test_asymmetric_echo_is_placed_at_the_centre_column(shared_raw):
    """singlechannel.dat: 428 of 512 readout samples, echo at sample 172 -> k-space peak at kx 256 -> 128 after OS removal."""
    with open_raw(shared_raw / "twixtools-phantom/singlechannel.dat") as raw:
        info = raw.info()
        ksp = raw.read()
    assert info["counts"]["readout_partial_fourier_samples"] == 428
    peak = np.unravel_index(np.argmax(np.abs(ksp.data[0, 0])), ksp.spatial_shape)
    assert abs(peak[1] - 128) <= 1 and abs(peak[0] - 128) <= 2


def test_info_names_scanner_software_and_what_was_not_used(shared_raw, capsys):
    with open_raw(shared_raw / "twixtools-phantom/epi.dat") as raw:
        info = raw.info()
    assert info["sequence"]["scanner"] == "SIEMENS Skyra" and info["sequence"]["software_version"] == "syngo MR E11"
    assert info["trajectory"] == "epi" and info["counts"]["phase_correction"] == 3
    assert any("segment" in note for note in info["uninterpreted"])
    assert "patient" not in info
    assert main(["info", str(shared_raw / "pulseq-tutorials/11_01_GRE.dat")]) == 0
    out = capsys.readouterr().out
    assert "twix" in out and "k-space positions from the Pulseq sequence 11_01_GRE.seq" in out


# --- synthetic files --------------------------------------------------------------------------
def _with_protocol_lines(hdr_str: np.ndarray, replace: dict[str, str], extra: list[str]) -> np.ndarray:
    """The twix header with ASCCONV lines replaced/added in the MeasYaps buffer (lengths rewritten)."""
    raw = hdr_str.tobytes()
    n_buffers = int(np.frombuffer(raw[4:8], "<u4")[0])
    pos, buffers = 8, []
    for _ in range(n_buffers):
        end = raw.index(b"\0", pos)
        size = int(np.frombuffer(raw[end + 1: end + 5], "<u4")[0])
        buffers.append((raw[pos:end], raw[end + 5: end + 5 + size]))
        pos = end + 5 + size
    out = b""
    for name, content in buffers:
        if name == b"MeasYaps":
            text = content.decode("latin1")
            for old, new in replace.items():
                assert old in text
                text = text.replace(old, new)
            text = text.replace("### ASCCONV END ###", "\n".join(extra) + "\n### ASCCONV END ###")
            content = text.encode("latin1")
        out += name + b"\0" + np.uint32(len(content)).tobytes() + content
    total = -(-(8 + len(out)) // 32) * 32
    blob = np.uint32(total).tobytes() + np.uint32(n_buffers).tobytes() + out
    return np.frombuffer(blob + b"\0" * (total - len(blob)), dtype="S1")


@pytest.fixture(scope="module")
def synthetic(shared_raw, tmp_path_factory) -> tuple[Path, dict]:
    """gre.dat made into a 2-measurement (multi-RAID) file: a noise-adjust measurement, then 2 slices 10 mm
    apart with 6/8 partial Fourier, 24 ACS lines and REFLECT on odd lines."""
    scan = _load_twix(shared_raw / GRE)[-1]
    base = [m.convert_to_local() for m in scan["mdb"] if m.is_image_scan()]
    normal = np.array([6.58423005e-09, 0.0383878015, 0.9992629886])
    pos0 = np.array([-2.58969998377, 53.9224264395, -53.9994745263])
    pos1 = pos0 + 10 * normal
    extra = [f"sSliceArray.asSlice[1].{k}\t = \t{v}" for k, v in (
        ("dThickness", 4.0), ("dPhaseFOV", 200.0), ("dReadoutFOV", 200.0),
        ("sPosition.dSag", pos1[0]), ("sPosition.dCor", pos1[1]), ("sPosition.dTra", pos1[2]),
        ("sNormal.dSag", normal[0]), ("sNormal.dCor", normal[1]), ("sNormal.dTra", normal[2]))]
    header = _with_protocol_lines(scan["hdr_str"], {"sSliceArray.lSize\t = \t1": "sSliceArray.lSize\t = \t2"}, extra)
    rng = np.random.default_rng(0)
    mdbs, truth = [], np.zeros((2, 2, 160, 320), dtype=np.complex64)
    noise = _copy(base[0])
    noise.data = (rng.standard_normal((2, 320)) + 1j * rng.standard_normal((2, 320))).astype(np.complex64)
    noise.clear_all_flags()
    noise.add_flag("NOISEADJSCAN")
    mdbs.append(noise)
    for s, pos in enumerate((pos0, pos1)):
        for m in base:
            lin = m.cLin
            line = m.data * (1 + s)  # slice 1: twice the signal
            truth[s, :, lin] = line
            if 68 <= lin < 92:  # ACS block around the centre line 80
                acs = _copy(m, sli=s, pos=pos, data=line)
                acs.add_flag("PATREFSCAN")
                mdbs.append(acs)
            if lin < 40:  # 6/8 partial Fourier: the first quarter is not acquired
                continue
            img = _copy(m, sli=s, pos=pos, data=line[:, ::-1] if lin % 2 else line)
            if lin % 2:
                img.add_flag("REFLECT")
            mdbs.append(img)
    scan["hdr_str"] = header
    noise_scan = dict(scan, mdb=mdbs[:1])  # multi-RAID: the noise-adjust measurement comes first
    scan["mdb"] = mdbs[1:]
    path = tmp_path_factory.mktemp("twix") / "synthetic.dat"
    with contextlib.redirect_stdout(io.StringIO()):
        twixtools.write_twix([noise_scan, scan], str(path), version_is_ve=True)
    return path, {"truth": truth, "pos": (pos0, pos1), "noise": noise.data}


def _copy(m, *, sli: int = 0, pos: np.ndarray | None = None, data: np.ndarray | None = None):
    """An independent copy of the local MDB ``m`` with slice counter, slice position and samples set."""
    out = twixtools.mdb.Mdb_local(m.data.copy())
    out.mdh = type(m.mdh).from_buffer_copy(bytes(m.mdh))
    out.channel_hdr = [type(c).from_buffer_copy(bytes(c)) for c in m.channel_hdr]
    out.data = np.array(m.data if data is None else data, dtype=np.complex64)
    out.mdh.Counter.Sli = sli
    if pos is not None:
        out.mdh.SliceData.SlicePos.Sag, out.mdh.SliceData.SlicePos.Cor, out.mdh.SliceData.SlicePos.Tra = (float(v) for v in pos)
    return out


def test_synthetic_multislice_noise_acs_partial_fourier(synthetic):
    path, ref = synthetic
    with open_raw(path) as raw:
        info = raw.info()
        ksp = raw.read()
        one = raw.read(slices=[1])
    assert dict(zip(ksp.dims, ksp.data.shape)) == {"slice": 2, "coil": 2, "ky": 160, "kx": 160}
    assert info["counts"]["noise"] == 1 and info["calibration"] == {"mode": "separate", "shape": [24, 160]}
    assert any("2 measurements" in note for note in info["uninterpreted"])
    np.testing.assert_array_equal(ksp.noise, ref["noise"])
    assert ksp.mask is not None and not ksp.mask[:40].any() and ksp.mask[40:].all()  # 6/8 partial Fourier
    truth = fftc(ifftc(ref["truth"], axes=(-1,))[..., 80:240], axes=(-1,))
    # REFLECT lines un-reversed, oversampling removed: acquired lines equal the truth
    np.testing.assert_allclose(ksp.data[:, :, 40:], truth[:, :, 40:], atol=1e-5 * np.abs(truth).max())
    np.testing.assert_allclose(ksp.calibration[1], truth[1, :, 68:92], atol=1e-5 * np.abs(truth).max())
    np.testing.assert_allclose(ksp.header.geometry.position, np.stack(ref["pos"]), atol=1e-6)
    np.testing.assert_allclose(one.data[0], ksp.data[1])
    np.testing.assert_allclose(one.header.geometry.position, [ref["pos"][1]], atol=1e-6)


# --- bad input ----------------------------------------------------------------------------------
def test_truncated_twix_is_refused_with_exit_2(shared_raw, tmp_path, capsys):
    for name in (GRE, "pulseq-tutorials/11_05_EPI.dat"):  # VD and VB
        cut = tmp_path / Path(name).name
        cut.write_bytes((shared_raw / name).read_bytes()[:600_000])
        with pytest.raises(InputError, match="truncated"):
            read(cut)
        assert main(["info", str(cut)]) == 2
        assert cut.name in capsys.readouterr().err


def test_twix_without_imaging_scan_is_refused(shared_raw, tmp_path):
    scan = _load_twix(shared_raw / GRE)[-1]
    for m in scan["mdb"]:
        m.add_flag("NOISEADJSCAN")
    path = tmp_path / "noise_only.dat"
    with contextlib.redirect_stdout(io.StringIO()):
        twixtools.write_twix(scan, str(path), version_is_ve=True)
    with pytest.raises(InputError, match="no imaging scan") as err:
        read(path)
    assert err.value.source == str(path)


# --- Pulseq ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pulseq_sequence_orders_lines_and_regrids_ramps(shared_raw):
    """The ramp-sampled EPI: 96 ADCs of 136 samples become 96 lines on a 98-point readout grid, lines
    ordered by their ky from the .seq (first ADC at the top, ky = +47); both polarities present."""
    pytest.importorskip("pypulseq")
    from mrirecon.io.twix import TwixFile

    with TwixFile(shared_raw / "pulseq-mr-physics/04_03_ramp_sampling_epi_96x96_pe+.dat") as raw:
        info, ksp, cart = raw.info(), raw.read(), raw._pulseq()
    assert info["trajectory"] == "epi" and ksp.data.shape == (1, 1, 96, 98)
    assert ksp.header.extra["pulseq_sequence"] == "04_03_ramp_sampling_epi_96x96_pe+.seq"
    assert cart.regridded and cart.reflected.sum() == 48
    first_adc = raw._table.mdbs[raw._plan().imaging[0]].data[0]
    # the first ADC is the top line (ky = +47 -> index 95): its peak magnitude equals that line's after regridding
    assert np.isclose(np.abs(first_adc).max(), np.abs(ksp.data[0, 0, 95]).max(), rtol=0.1)


@pytest.mark.slow
def test_pulseq_labels_sequence_gives_the_same_image_as_adc_order(shared_raw):
    """ex12 (labelled GRE, named differently from its raw file): with --seq the image equals the ADC-order one."""
    pytest.importorskip("pypulseq")
    from mrirecon.io.twix import TwixFile

    folder = shared_raw / "pulseq-ankara-course"
    plain = TwixFile(folder / "meas_MID00107_FID33064_sol12.dat").read()
    with_seq = TwixFile(folder / "meas_MID00107_FID33064_sol12.dat", sequence=folder / "ex12_gre2d_lbl_chen.seq").read()
    a = np.sqrt((np.abs(ifftc(plain.data[0])) ** 2).sum(axis=0))
    b = np.sqrt((np.abs(ifftc(with_seq.data[0])) ** 2).sum(axis=0))
    assert _corr(a, b) > 0.99


def test_pulseq_labelled_images_with_different_lines_are_refused(tmp_path):
    """SLC (or ECO) labels 0,0,1,1 on lines ky = -2..1 make two images with different lines, which one mask
    or trajectory cannot describe: refused, naming the raw file and the sequence. REP labels (repetitions) are averaged like repeated lines."""
    from mrirecon.io.pulseq import PulseqSequence, to_cartesian, to_noncartesian

    kx = np.arange(4) - 2.0 + 0.5
    kspace = np.concatenate([np.stack([kx, np.full(4, ky)], axis=1) for ky in (-2.0, -1.0, 0.0, 1.0)])
    adcs = [np.full((1, 4), k + 1, np.complex64) for k in range(4)]
    raw = tmp_path / "scan.dat"
    for label in ("SLC", "ECO"):
        seq = PulseqSequence(path=tmp_path / "two.seq", name="", fov_m=(0.1, 0.1, 0.0), adc_samples=np.full(4, 4),
                             kspace=kspace, labels={label: np.array([0, 0, 1, 1])})
        for build in (to_cartesian, to_noncartesian):
            with pytest.raises(InputError, match=f"two.seq labels 2 .* \\({label}\\)") as err:
                build(adcs, seq, raw)
            assert err.value.source == str(raw)
    seq = PulseqSequence(path=tmp_path / "rep.seq", name="", fov_m=(0.1, 0.1, 0.0), adc_samples=np.full(4, 4),
                         kspace=np.concatenate([kspace[:8], kspace[:8]]), labels={"REP": np.array([0, 0, 1, 1])})
    cart = to_cartesian(adcs, seq, raw)
    np.testing.assert_allclose(cart.kspace[0, :2, 0], [2, 3])  # (1 + 3) / 2 and (2 + 4) / 2


@pytest.mark.slow
def test_sequence_not_matching_the_raw_file_exit_2(shared_raw, tmp_path, capsys):
    pytest.importorskip("pypulseq")
    raw = shared_raw / "pulseq-tutorials/11_01_GRE.dat"
    seq = shared_raw / "pulseq-mr-physics/04_03_basic_epi_96x96_pe+.seq"
    with pytest.raises(InputError, match="does not match sequence 04_03_basic_epi_96x96_pe"):
        from mrirecon.io.twix import TwixFile

        TwixFile(raw, sequence=seq).read()
    assert main(["convert", str(raw), "--seq", str(seq), "-o", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "11_01_GRE.dat" in err and "04_03_basic_epi_96x96_pe+.seq" in err


@pytest.mark.slow
def test_pulseq_radial_matches_the_cartesian_scan_of_the_same_slice(shared_raw, tmp_path, capsys):
    """sol24 (radial, 256 spokes, non-Cartesian from its .seq) through ``mrirecon recon --seq --method gridding``
    vs sol12 (Cartesian GRE, same phantom, slice and FOV): measured correlation 0.988 (0.79 or less for any
    flipped orientation)."""
    pytest.importorskip("pypulseq")
    from mrirecon.pipelines.store import list_series, open_series

    from mrirecon.io.twix import TwixFile

    folder = shared_raw / "pulseq-ankara-course"
    raw, seq, out = folder / "meas_MID00118_FID33075_sol24.dat", folder / "sol24_gre2radial_chen.seq", tmp_path / "r.zarr"
    assert main(["info", str(raw), "--seq", str(seq), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dims"] == ["slice", "coil", "spoke", "readout"] and info["shape"] == [1, 4, 256, 256]
    assert main(["recon", str(raw), "--seq", str(seq), "--method", "gridding", "--device", "cpu", "-o", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    (name,) = list_series(out)
    radial = np.abs(open_series(out, name).data[0])
    cartesian = TwixFile(folder / "meas_MID00107_FID33064_sol12.dat", sequence=folder / "ex12_gre2d_lbl_chen.seq").read()
    assert _corr(radial, np.abs(recon(cartesian, "zerofill", device="cpu").numpy()[0])) > 0.97


def test_pulseq_scan_without_its_sequence_is_flagged(shared_raw, tmp_path, capsys):
    """A Pulseq twix scan whose .seq is not found: info lists the warning under "not used", recon warns on
    stderr (its k-space is only read as Cartesian lines in ADC order); a .seq for a non-twix file is refused."""
    raw = shared_raw / "pulseq-ankara-course/meas_MID00118_FID33075_sol24.dat"
    with pytest.warns(PulseqSequenceMissing, match="give --seq"):
        open_raw(raw)
    warning = "mrirecon: warning: meas_MID00118_FID33075_sol24.dat: Pulseq scan without its .seq file"
    with warnings.catch_warnings():  # shown however often the test session has shown it before
        warnings.simplefilter("always")
        assert main(["info", str(raw)]) == 0
        out, err = capsys.readouterr()
        assert "not used:      WARNING: Pulseq scan without its .seq file" in out and warning in err
        assert main(["recon", str(raw), "--method", "zerofill", "--device", "cpu", "-o", str(tmp_path / "o.zarr")]) == 0
        assert warning in capsys.readouterr().err
    npy = tmp_path / "k.npy"
    np.save(npy, np.zeros((2, 8, 8), np.complex64))
    with pytest.raises(InputError, match="applies to Siemens twix files only"):
        open_raw(npy, sequence=shared_raw / "pulseq-ankara-course/sol24_gre2radial_chen.seq")
