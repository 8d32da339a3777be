"""Pulseq scans whose SLC / ECO labels number several slices or echoes, and the 32-channel spin echo read
with its .seq. The labelled sequences are built here with pypulseq, their ADC samples simulated exactly
(a direct DFT of a known phantom per slice/echo at the sequence's own k-space positions)."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest

pp = pytest.importorskip("pypulseq")

from mrirecon.errors import InputError
from mrirecon.io.pulseq import (
    _per_adc,
    label_batch,
    read_sequence,
    slice_offsets,
    split_adcs,
    to_cartesian,
    to_noncartesian,
)

N = 16  # matrix
FOV = 0.2  # m
THICKNESS = 5e-3  # m
COILS = 2


def _system():
    return pp.Opts(max_grad=30, grad_unit="mT/m", max_slew=120, slew_unit="T/m/s",
                   rf_ringdown_time=20e-6, rf_dead_time=100e-6, adc_dead_time=10e-6)


def _write_gre(path: Path, n_slices: int = 1, n_echoes: int = 1, radial: bool = False) -> Path:
    """A small 2D GRE (N lines, or N radial spokes) with SLC and ECO labels; echo 2 is read with the opposite
    readout polarity (bipolar). Slice s is excited at (s - (n_slices - 1) / 2) * THICKNESS along z."""
    system = _system()
    seq = pp.Sequence(system)
    rf, gz, gz_reph = pp.make_sinc_pulse(flip_angle=np.deg2rad(15), duration=2e-3, slice_thickness=THICKNESS,
                                         apodization=0.5, time_bw_product=4, delay=system.rf_dead_time,
                                         system=system, return_gz=True, use="excitation")
    dk = 1 / FOV
    flat, rise, pre = 3.2e-3, 2e-4, 1e-3
    read = pp.make_trapezoid("x", flat_area=N * dk, flat_time=flat, rise_time=rise, system=system)
    adc = pp.make_adc(num_samples=N, duration=flat, delay=rise, system=system)
    for s in range(n_slices):
        rf.freq_offset = gz.amplitude * THICKNESS * (s - (n_slices - 1) / 2)
        for line in range(N):
            seq.add_block(rf, gz)
            if radial:  # spoke at angle pi * line / N through the centre
                c, si = np.cos(np.pi * line / N), np.sin(np.pi * line / N)
                axes = {"x": c, "y": si}
                pre_x, pre_y = (pp.make_trapezoid(a, area=-read.area / 2 * f, duration=pre, system=system)
                                for a, f in axes.items())
                readouts = [[pp.make_trapezoid(a, flat_area=sign * N * dk * f, flat_time=flat, rise_time=rise,
                                               system=system) for a, f in axes.items()] for sign in (1, -1)]
            else:
                pre_x = pp.make_trapezoid("x", area=-read.area / 2, duration=pre, system=system)
                pre_y = pp.make_trapezoid("y", area=(line - N / 2) * dk, duration=pre, system=system)
                readouts = [[read], [pp.scale_grad(read, -1)]]
            seq.add_block(pre_x, pre_y, gz_reph)
            for e in range(n_echoes):
                seq.add_block(*readouts[e % 2], adc, pp.make_label("SLC", "SET", s), pp.make_label("ECO", "SET", e),
                              pp.make_label("LIN", "SET", line))
            seq.add_block(pp.make_delay(1e-3))
    seq.set_definition("FOV", [FOV, FOV, THICKNESS])
    seq.set_definition("Name", "gre_label_test")
    seq.write(str(path))
    return path


def _phantoms(n: int) -> np.ndarray:
    """n distinct (N, N) complex test objects: off-centre rectangles with a phase ramp."""
    y, x = np.mgrid[:N, :N]
    out = np.zeros((n, N, N), np.complex128)
    for i in range(n):
        out[i, 1 + i: 8 + i, 2 + i: 7 + 2 * i] = 1 + i
        out[i, 12:15, 1 + 2 * i: 3 + 2 * i] = 2
        out[i] *= np.exp(1j * 0.2 * (x - y) * (i + 1))
    return out


def _simulate(seq, images_of_adc: np.ndarray, phantoms: np.ndarray, sens: np.ndarray) -> list[np.ndarray]:
    """Each ADC's (coil, sample) data: a direct DFT of its image's phantom (times coil sensitivity) at the
    sequence's (kx, ky) in cycles/FOV, pixel (y, x) at (y - N/2, x - N/2) / N of the FOV."""
    r = np.arange(N) - N / 2
    adcs = []
    for k, image in zip(_per_adc(seq), images_of_adc):
        ex = np.exp(-2j * np.pi * np.outer(k[:, 0], r) / N)  # (sample, x)
        ey = np.exp(-2j * np.pi * np.outer(k[:, 1], r) / N)  # (sample, y)
        obj = sens * phantoms[image]  # (coil, y, x)
        adcs.append(np.einsum("sy,cyx,sx->cs", ey, obj, ex).astype(np.complex64))
    return adcs


def _image(kspace: np.ndarray) -> np.ndarray:
    """Centred inverse DFT (k = 0 at index N // 2), numpy's own, independent of the project's FFT."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1))), axes=(-2, -1))


def _nrmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _sens() -> np.ndarray:
    y, x = np.mgrid[:N, :N] / N
    return np.stack([np.exp(-((x - 0.2) ** 2 + (y - 0.3) ** 2)), 0.5 + 0.5j * y])


@pytest.mark.parametrize(("n_slices", "n_echoes", "dims"), [
    (3, 1, ("slice",)), (1, 2, ("echo",)), (2, 2, ("slice", "echo")),
])
def test_labelled_slices_and_echoes_reconstruct_their_own_phantoms(tmp_path, n_slices, n_echoes, dims):
    """3 slices, 2 bipolar echoes, and both: every slice/echo image equals its own phantom (NRMSE ~1e-6, float32),
    all images share one line mask, and the slice offsets come from the RF frequency offsets."""
    seq = read_sequence(_write_gre(tmp_path / "gre.seq", n_slices, n_echoes))
    batch = label_batch(seq)
    assert batch.dims == dims and seq.n_adc == N * n_slices * n_echoes
    phantoms, sens = _phantoms(n_slices * n_echoes), _sens()
    cart = to_cartesian(_simulate(seq, batch.index, phantoms, sens), seq, tmp_path / "scan.dat")
    shape = tuple(n for n in (n_slices, n_echoes) if n > 1)
    assert cart.batch_dims == dims and cart.kspace.shape == (*shape, COILS, N, N) and cart.line_mask.all()
    images = _image(cart.kspace.reshape(-1, COILS, N, N))
    for image, phantom in zip(images, phantoms):
        assert _nrmse(np.abs(image), np.abs(sens * phantom)) < 1e-4
        assert _nrmse(np.abs(image), np.abs(sens * phantoms[(phantoms != phantom).any(axis=(1, 2))][0])) > 0.3
    if n_echoes > 1:  # echo 2 read backwards (every line of it), echo 1 forwards
        reflected = cart.reflected.reshape(-1, n_echoes, N)
        assert reflected[:, 1].all() and not reflected[:, 0].any()
    offsets = slice_offsets(seq)
    if n_slices == 1:
        assert offsets is None
        return
    expected = (np.arange(n_slices) - (n_slices - 1) / 2) * THICKNESS
    np.testing.assert_allclose(offsets[:, 2], expected, atol=1e-6)
    np.testing.assert_allclose(offsets[:, :2], 0, atol=1e-9)


def test_labelled_radial_slices_keep_their_own_spokes(tmp_path):
    """Radial, 3 slices: (slice, coil, spoke, sample) data, each slice its own samples, one trajectory of spokes at
    angles pi * i / N with |k| up to N/2 - 0.5."""
    seq = read_sequence(_write_gre(tmp_path / "radial.seq", n_slices=3, radial=True))
    batch = label_batch(seq)
    phantoms, sens = _phantoms(3), _sens()
    adcs = _simulate(seq, batch.index, phantoms, sens)
    nc = to_noncartesian(adcs, seq, tmp_path / "scan.dat")
    assert nc.batch_dims == ("slice",) and nc.kspace.shape == (3, COILS, N, N) and nc.matrix == N
    angle = np.pi * np.arange(N) / N
    radius = np.arange(N) - N / 2 + 0.5
    np.testing.assert_allclose(nc.trajectory[..., 0], np.outer(np.sin(angle), radius), atol=1e-3)
    np.testing.assert_allclose(nc.trajectory[..., 1], np.outer(np.cos(angle), radius), atol=1e-3)
    for s in range(3):
        np.testing.assert_array_equal(nc.kspace[s], np.stack(adcs[s * N:(s + 1) * N], axis=1))


def test_single_image_sequences_keep_their_layout(tmp_path):
    """No SLC/ECO labels with several values: (coil, ky, kx), (ky,) polarity, as before the labels were split."""
    seq = read_sequence(_write_gre(tmp_path / "one.seq"))
    cart = to_cartesian(_simulate(seq, np.zeros(N, int), _phantoms(1), _sens()), seq, tmp_path / "scan.dat")
    assert cart.batch_dims == () and cart.kspace.shape == (COILS, N, N) and cart.reflected.shape == (N,)
    assert _nrmse(np.abs(_image(cart.kspace)), np.abs(_sens() * _phantoms(1)[0])) < 1e-4


def _keep_adcs(seq, keep: np.ndarray):
    """``seq`` with only the ADCs where ``keep`` is True."""
    per_sample = np.repeat(keep, seq.adc_samples)
    return dataclasses.replace(seq, adc_samples=seq.adc_samples[keep], kspace=seq.kspace[per_sample],
                               labels={k: v[keep] for k, v in seq.labels.items()},
                               excited_offset_m=seq.excited_offset_m[keep])


def test_labelled_images_that_cannot_share_a_grid_are_refused(tmp_path):
    """Slice 2 acquires fewer lines than slice 1 (one mask cannot describe both), radial slices with different
    spoke counts, and a raw file with fewer ADC samples than the sequence: InputError naming raw file and .seq."""
    seq = read_sequence(_write_gre(tmp_path / "three.seq", n_slices=3))
    raw = tmp_path / "scan.dat"
    adcs = _simulate(seq, label_batch(seq).index, _phantoms(3), _sens())
    keep = np.ones(seq.n_adc, bool)
    keep[-3:] = False  # the last slice misses its last 3 lines
    cut = _keep_adcs(seq, keep)
    lines = r"three.seq labels 3 slices \(SLC\) whose k-space lines \(\[16, 16, 13\] lines\) differ"
    with pytest.raises(InputError, match=lines) as err:
        to_cartesian([a for a, k in zip(adcs, keep) if k], cut, raw)
    assert err.value.source == str(raw)
    with pytest.raises(InputError, match=r"three.seq labels 3 slices \(SLC\) whose spokes") as err:
        to_noncartesian([a for a, k in zip(adcs, keep) if k], cut, raw)
    assert err.value.source == str(raw)
    samples = np.concatenate(adcs, axis=-1)[:, :-N]
    with pytest.raises(InputError, match=f"does not match sequence three.seq: the raw file has {samples.shape[-1]}"):
        split_adcs(samples, seq, raw)


@pytest.mark.realdata
@pytest.mark.slow
def test_spin_echo_read_with_its_sequence(shared_raw):
    """The 32-channel spin echo with se_2D_sinc_img.seq (Pulseq 1.4.0, no RF use in the file): 64 lines ky -31..32
    (the refocusing pulse inverts k-space; taken for an excitation it reset it and every line had ky 0, giving
    shape (1, 32, 2, 64)). The image equals the ADC-order read without the .seq: measured correlation 1.0000."""
    from mrirecon.io.twix import PulseqSequenceMissing, TwixFile

    folder = shared_raw / "pulseq-mr-physics"
    raw = folder / "meas_MID00243_FID33257_pulseq.dat"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PulseqSequenceMissing)
        plain = TwixFile(raw).read()
    with TwixFile(raw, sequence=folder / "se_2D_sinc_img.seq") as scan:
        ksp = scan.read()
    assert ksp.dims == ("slice", "coil", "ky", "kx") and ksp.data.shape == (1, 32, 64, 64)
    ky = np.array([k[:, 1].mean() for k in _per_adc(scan.sequence)])
    np.testing.assert_allclose(ky, np.arange(-31, 33), atol=1e-3)
    a, b = (np.sqrt((np.abs(_image(k.data[0])) ** 2).sum(axis=0)) for k in (plain, ksp))
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.95


def _pulseq_twix(shared_raw: Path, path: Path, adcs: list[np.ndarray]) -> Path:
    """A synthetic Pulseq twix: the 2-channel body-coil scan's protocol and headers, its ADCs replaced by ``adcs``
    (line counters just number the ADCs, as the interpreter writes them)."""
    import contextlib
    import io

    twixtools = pytest.importorskip("twixtools")
    with contextlib.redirect_stdout(io.StringIO()):
        scan = twixtools.read_twix(str(shared_raw / "pulseq-mr-physics/2024-02-06-160115.dat"), keep_acqend=True,
                                   parse_pmu=False, verbose=False)[-1]
    base, end = scan["mdb"][0].convert_to_local(), scan["mdb"][-1]
    mdbs = []
    for k, data in enumerate(adcs):
        m = twixtools.mdb.Mdb_local(data)
        m.mdh = type(base.mdh).from_buffer_copy(bytes(base.mdh))
        m.channel_hdr = [type(c).from_buffer_copy(bytes(c)) for c in base.channel_hdr]
        m.data = data
        m.mdh.Counter.Lin = k
        mdbs.append(m)
    scan["mdb"] = [*mdbs, end]
    with contextlib.redirect_stdout(io.StringIO()):
        twixtools.write_twix([scan], str(path), version_is_ve=True)
    return path


@pytest.mark.realdata
def test_labelled_pulseq_twix_read_with_its_sequence(shared_raw, tmp_path, capsys):
    """A synthetic Pulseq twix of a 3-slice, 2-echo labelled GRE read with its .seq: (slice, echo, coil, ky, kx)
    images of their own phantoms, slice positions 5 mm apart along the slice normal, one slice on request, and
    ``mrirecon info --seq`` lists the slices and echoes."""
    from mrirecon import recon
    from mrirecon.cli import main
    from mrirecon.io.twix import TwixFile

    seq_path = _write_gre(tmp_path / "multi.seq", n_slices=3, n_echoes=2)
    seq = read_sequence(seq_path)
    phantoms, sens = _phantoms(6), _sens()
    raw = _pulseq_twix(shared_raw, tmp_path / "multi.dat", _simulate(seq, label_batch(seq).index, phantoms, sens))
    with TwixFile(raw, sequence=seq_path) as scanfile:
        info, ksp, one = scanfile.info(), scanfile.read(), scanfile.read(slices=[1])
    assert info["dims"] == ["slice", "echo", "coil", "ky", "kx"] and info["shape"] == [3, 2, COILS, N, N]
    assert info["slices"] == 3 and info["contrasts"] == 2
    images = recon(ksp, "zerofill", device="cpu").numpy().reshape(6, N, N)
    truth = N * np.sqrt((np.abs(sens[None] * phantoms[:, None]) ** 2).sum(axis=1))  # the FFT is orthonormal
    for image, expected in zip(images, truth):
        assert _nrmse(image, expected) < 1e-3
    geometry = ksp.header.geometry
    steps = np.diff(geometry.position, axis=0)
    np.testing.assert_allclose(steps, np.tile(1000 * THICKNESS * geometry.slice_dir, (2, 1)), atol=1e-6)
    np.testing.assert_array_equal(one.data[0], ksp.data[1])
    np.testing.assert_allclose(one.header.geometry.position, geometry.position[1:2])
    assert main(["info", str(raw), "--seq", str(seq_path)]) == 0
    out = capsys.readouterr().out
    assert "slice=3, echo=2, coil=2, ky=16, kx=16" in out
    assert "3 slices (SLC labels [0, 1, 2]) as separate images" in out and "2 echoes (ECO labels [0, 1])" in out
    assert "trajectory:    cartesian" in out  # bipolar echoes: each echo one readout direction, not EPI


@pytest.mark.realdata
def test_labelled_radial_pulseq_twix_keeps_slices_apart(shared_raw, tmp_path):
    """The 3-slice radial sequence as a synthetic twix: (slice, coil, spoke, readout) with one trajectory, each
    slice holding its own ADCs, one slice on request."""
    from mrirecon.io.twix import TwixFile

    seq_path = _write_gre(tmp_path / "radial.seq", n_slices=3, radial=True)
    seq = read_sequence(seq_path)
    adcs = _simulate(seq, label_batch(seq).index, _phantoms(3), _sens())
    with TwixFile(_pulseq_twix(shared_raw, tmp_path / "radial.dat", adcs), sequence=seq_path) as scanfile:
        ksp, one = scanfile.read(), scanfile.read(slices=[2])
    assert ksp.dims == ("slice", "coil", "spoke", "readout") and ksp.data.shape == (3, COILS, N, N)
    assert ksp.trajectory.shape == (N, N, 2) and ksp.header.geometry.position.shape == (3, 3)
    for s in range(3):
        np.testing.assert_array_equal(ksp.data[s], np.stack(adcs[s * N:(s + 1) * N], axis=1))
    np.testing.assert_array_equal(one.data[0], ksp.data[2])
