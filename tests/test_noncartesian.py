"""Trajectories and non-Cartesian methods (gridding, CG-SENSE) on a phantom sampled by a direct DFT."""
from __future__ import annotations

import math

import numpy as np
import pytest
from mrirecon.kernels.fft import fftc, ifftc
from test_nufft import ndft_matrix

from mrirecon import sim
from mrirecon.data import KSpace, KSpaceHeader
from mrirecon.errors import InputError
from mrirecon.methods.noncartesian import SenseNUFFT, nufft_for, nyquist_box
from mrirecon.nufft import NUFFT, StackedNUFFT
from mrirecon.reconstruction import recon

N, COILS = 48, 8


def nrmse(a, b) -> float:
    a, b = np.abs(a), np.abs(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """Shepp-Logan (N, N) and its 8 birdcage coil images (sum |S|^2 = 1), float64."""
    x = sim.shepp_logan((N, N)).astype(np.complex128)
    return x, sim.birdcage_maps(COILS, (N, N)).astype(np.complex128) * x


def radial_kspace(coil_images: np.ndarray, traj: np.ndarray) -> KSpace:
    """k-space of ``coil_images`` at ``traj`` by the float64 non-uniform DFT (independent of the NUFFT)."""
    coords = traj.reshape(-1, 2)
    flat = coil_images.reshape(COILS, -1)
    y = np.concatenate([flat @ ndft_matrix(coords[s : s + 1024], (N, N)).T for s in range(0, len(coords), 1024)], axis=1)
    return KSpace(
        y.reshape((COILS,) + traj.shape[:-1]), ("coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, N, N)), trajectory=traj
    )


def test_spoke_orderings():
    assert np.allclose(np.diff(sim.spoke_angles(5, "uniform")), math.pi / 5)
    golden = np.degrees(np.diff(sim.spoke_angles(4, "golden")))
    assert np.allclose(golden % 360, 111.2461, atol=1e-3)
    tiny = np.degrees(np.diff(sim.spoke_angles(4, "tiny_golden", tiny_n=7)))
    assert np.allclose(tiny, 23.6281, atol=1e-3)
    with pytest.raises(InputError, match="unknown spoke ordering"):
        sim.spoke_angles(4, "random")


def test_trajectory_shapes_and_ranges():
    r = sim.radial(10, 64, matrix=32)
    assert r.shape == (10, 64, 2) and np.abs(r).max() <= 16 and np.allclose(r[:, 32], 0)
    sos = sim.stack_of_stars(10, 32, 6)
    assert sos.shape == (6, 10, 32, 3) and np.array_equal(np.unique(sos[..., 0]), np.arange(-3, 3))
    k3 = sim.radial_3d(200, 32)
    radius = np.linalg.norm(k3, axis=-1)
    assert k3.shape == (200, 32, 3) and radius.max() <= 16 + 1e-9
    assert np.allclose(radius[:, 0], 16)  # every spoke reaches the edge
    # golden means spread the directions: each octant of the half sphere gets 1/8 +- 2% of them
    directions = k3[:, 0] / 16
    octant = (directions[:, 1] > 0).astype(int) * 2 + (directions[:, 2] > 0)
    assert np.abs(np.bincount(octant, minlength=4) / 200 - 0.25).max() < 0.02


def test_variable_density_spiral_spacing():
    n = 64
    traj = sim.spiral(8, 2000, n, undersampling=1.0, centre_density=2.0)
    assert traj.shape == (8, 2000, 2) and np.allclose(traj[:, 0], 0)
    radius = np.hypot(traj[..., 0], traj[..., 1])
    assert radius.max() <= n / 2 and radius.max() > n / 2 - 0.2
    # One interleave's turns are 8 gaps apart; the gap grows linearly from 1/2 cycle/FOV (centre) to 1 (edge).
    theta = np.unwrap(np.arctan2(traj[0, :, 0], traj[0, :, 1]))
    full_turn = theta + 2 * np.pi < theta[-1]
    r_next = np.interp(theta + 2 * np.pi, theta, radius[0])
    gap = ((r_next - radius[0]) / 8)[full_turn]
    expected = 0.5 + 0.5 * (0.5 * (r_next + radius[0]))[full_turn] / (n / 2)
    assert np.abs(gap / expected - 1).max() < 0.005  # measured 0.0013 (gaps 0.53 .. 0.94)


def test_nyquist_box_of_radial():
    # n full spokes are Nyquist-sampled up to radius ~ sqrt(2) n / pi; the box must fit in that disc
    assert nyquist_box(sim.radial(24, 96, matrix=48), 48) == 13
    assert nyquist_box(sim.radial(76, 96, matrix=48), 24) == 24


def test_gridding_recovers_phantom(phantom):
    """Fully sampled radial (76 uniform spokes ~ pi/2 N): gridding = the phantom band-limited to the disc."""
    x, coil_images = phantom
    ky, kx = np.meshgrid(np.arange(N) - N // 2, np.arange(N) - N // 2, indexing="ij")
    disc_truth = ifftc(fftc(x) * (np.hypot(ky, kx) < N / 2))
    ksp = radial_kspace(coil_images, sim.radial(76, 2 * N, matrix=N, ordering="uniform"))
    for dcf in ("pipe_menon", "ramp"):
        image = recon(ksp, "gridding", device="cpu", dcf=dcf)
        assert image.data.shape == (N, N) and image.dims == ("y", "x")
        assert nrmse(image.data, disc_truth) < 0.09  # measured 0.081 (Pipe-Menon), 0.079 (ramp)


@pytest.fixture(scope="module")
def golden24(phantom) -> tuple[KSpace, float]:
    """24 golden-angle spokes (R ~ 3 against pi/2 N) by the NDFT, and the NRMSE of their gridding."""
    x, coil_images = phantom
    ksp = radial_kspace(coil_images, sim.radial(24, 2 * N, matrix=N, ordering="golden"))
    return ksp, nrmse(recon(ksp, "gridding", device="cpu").data, x)


def test_cg_sense_beats_gridding_on_undersampled_golden_angle(phantom, golden24):
    x = phantom[0]
    ksp, gridded = golden24
    sense = nrmse(recon(ksp, "nufft_sense", device="cpu").data, x)
    # measured: gridding 0.419, CG-SENSE (ESPIRiT maps from the gridded centre) 0.180
    assert sense < 0.2 and gridded - sense > 0.2
    walsh = nrmse(recon(ksp, "nufft_sense", device="cpu", coil_maps="walsh").data, x)
    assert walsh < 0.26 and gridded - walsh > 0.15  # Walsh maps from the gridded coil images: measured 0.241


def test_dcf_preconditioned_cg_sense_converges_faster(phantom, golden24):
    x = phantom[0]
    ksp = golden24[0]
    maps = sim.birdcage_maps(COILS, (N, N)).astype(np.complex64)  # the true maps: the solver alone differs
    plain = nrmse(recon(ksp, "nufft_sense", device="cpu", max_iter=10, maps=maps).data, x)
    weighted = nrmse(recon(ksp, "nufft_sense", device="cpu", max_iter=10, maps=maps, dcf="pipe_menon").data, x)
    assert weighted < 0.235 and plain - weighted > 0.08  # measured after 10 iterations: 0.224 against 0.318


@pytest.mark.parametrize(
    "method, coil_maps, limit",
    # measured NRMSE (gridding 0.419): l1wavelet 0.197 (ESPIRiT) / 0.193 (Walsh), tv 0.083 (ESPIRiT) / 0.100 (Walsh)
    [("l1wavelet", "espirit", 0.21), ("tv", "espirit", 0.09), ("tv", "walsh", 0.11)],
)
def test_compressed_sensing_beats_gridding_on_undersampled_golden_angle(phantom, golden24, method, coil_maps, limit):
    """L1-wavelet and TV run on the NUFFT SENSE model when k-space carries a trajectory."""
    x = phantom[0]
    ksp, gridded = golden24
    image = recon(ksp, method, device="cpu", coil_maps=coil_maps)
    assert image.data.shape == (N, N)
    assert nrmse(image.data, x) < limit and gridded - nrmse(image.data, x) > 0.2


def test_sense_nufft_normal_is_the_toeplitz_of_forward_and_adjoint(phantom, rng):
    traj = sim.radial(30, 2 * N, matrix=N)
    maps = sim.birdcage_maps(COILS, (N, N)).astype(np.complex64)
    a = SenseNUFFT(NUFFT(traj, (N, N), (COILS,)), maps)
    v = (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))).astype(np.complex64)
    direct = a.H(a(v))
    assert np.linalg.norm(a.N(v) - direct) / np.linalg.norm(direct) < 1e-3  # measured 2.9e-4


def test_recon_loops_over_slices_with_one_trajectory(phantom):
    coil_images = phantom[1]
    traj = sim.radial(40, 2 * N, matrix=N)
    y = NUFFT(traj, (N, N), (2, COILS))(np.stack([coil_images, 2 * coil_images]).astype(np.complex64))
    ksp = KSpace(y, ("slice", "coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, N, N)), trajectory=traj)
    image = recon(ksp, "gridding", device="cpu")
    assert image.dims == ("slice", "y", "x") and image.data.shape == (2, N, N)
    assert np.allclose(np.abs(image.data[1]), 2 * np.abs(image.data[0]), rtol=1e-3, atol=1e-3 * np.abs(image.data).max())


@pytest.mark.parametrize(
    "kind, limit",
    # measured 0.146 (stars), 0.188 (spirals): 32 pixels across, coarser than the 2D case
    [("stars", 0.16), ("spirals", 0.2)],
)
def test_stack_gridding(kind, limit):
    """Stacks simulated by the 3D NUFFT (high accuracy) and gridded by the FFT-along-kz + 2D NUFFT path."""
    shape = (8, 32, 32)
    x = sim.shepp_logan(shape)
    traj = sim.stack_of_stars(50, 64, 8, matrix=32) if kind == "stars" else sim.stack_of_spirals(8, 200, 32, 8)
    y = NUFFT(traj, shape, (1,), accuracy="high")(x[None].astype(np.complex64))
    ksp = KSpace(y, ("coil", "partition", "spoke", "readout"), KSpaceHeader(recon_matrix=shape), trajectory=traj)
    assert isinstance(nufft_for(ksp), StackedNUFFT)
    image = recon(ksp, "gridding", device="cpu")
    assert image.dims == ("z", "y", "x") and image.data.shape == shape
    _, ky, kx = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    cylinder_truth = ifftc(fftc(x, (0, 1, 2)) * (np.hypot(ky, kx) < 16), (0, 1, 2))
    assert nrmse(image.data, cylinder_truth) < limit


def test_stack_of_spirals_partitions():
    traj = sim.stack_of_spirals(4, 50, 16, 5)
    assert traj.shape == (5, 4, 50, 3) and np.array_equal(np.unique(traj[..., 0]), np.arange(-2, 3))
    angle = np.arctan2(traj[:, 0, -1, 1], traj[:, 0, -1, 2])  # the same sample's angle in every partition
    offset = np.mod(angle - angle[0], 2 * np.pi / 4) / (2 * np.pi / 4)
    assert np.allclose(offset, (np.arange(5) / ((1 + 5**0.5) / 2)) % 1)  # golden-ratio fractions of a step
    assert np.allclose(sim.stack_of_spirals(4, 50, 16, 5, rotate=False)[:, ..., 1:], sim.spiral(4, 50, 16))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"trajectory": sim.radial(10, 20)}, "does not match the samples"),
        ({"header": KSpaceHeader()}, "cannot size the image"),
    ],
)
def test_bad_noncartesian_input(change, match):
    traj = sim.radial(12, 32, matrix=16)
    args = {"data": np.zeros((2, 12, 32), np.complex64), "dims": ("coil", "spoke", "readout"),
            "header": KSpaceHeader(recon_matrix=(1, 16, 16)), "trajectory": traj, **change}
    with pytest.raises(InputError, match=match):
        recon(KSpace(**args), "gridding", device="cpu")


def test_dcf_choice_and_cartesian_methods_are_checked():
    ksp = KSpace(np.ones((2, 12, 32), np.complex64), ("coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, 16, 16)),
                 trajectory=sim.radial(12, 32, matrix=16))
    with pytest.raises(InputError, match="unknown density compensation"):
        recon(ksp, "gridding", device="cpu", dcf="voronoi")
    with pytest.raises(InputError, match="needs Cartesian"):
        recon(ksp, "sense", device="cpu")


@pytest.mark.slow
def test_real_radial_scan_matches_cartesian_scan(shared_raw):
    """The 4-channel Pulseq radial scan (trajectory from its .seq) against the Cartesian scan of the same phantom."""
    from mrirecon.io.twix import TwixFile

    folder = shared_raw / "pulseq-ankara-course"
    radial = TwixFile(folder / "meas_MID00118_FID33075_sol24.dat", sequence=folder / "sol24_gre2radial_chen.seq").read()
    cartesian = TwixFile(folder / "meas_MID00107_FID33064_sol12.dat", sequence=folder / "ex12_gre2d_lbl_chen.seq").read()
    assert radial.trajectory is not None and radial.dims[-2:] == ("spoke", "readout")
    gridded = np.abs(recon(radial, "gridding", device="cpu").numpy()).ravel()
    reference = np.abs(recon(cartesian, "zerofill", device="cpu").numpy()).ravel()
    assert gridded.shape == reference.shape
    assert np.corrcoef(gridded, reference)[0, 1] > 0.98  # measured 0.988


@pytest.mark.realdata
def test_cli_recon_of_a_non_cartesian_file_matches_the_python_api(shared_raw, tmp_path):
    """The file pipeline plans non-Cartesian series from the recon matrix and gives what ``recon`` gives."""
    from mrirecon import read, recon
    from mrirecon.cli import main
    from mrirecon.pipelines.store import list_series, open_series

    src = shared_raw / "pulseq-ankara-course" / "meas_MID00118_FID33075_sol24.dat"  # radial, 4 coils
    seq = src.with_name("sol24_gre2radial_chen.seq")
    out = tmp_path / "out.zarr"
    assert main(["recon", str(src), "--seq", str(seq), "-o", str(out), "--method", "gridding", "--no-progress"]) == 0
    stored = open_series(out, list_series(out)[0])
    direct = recon(read(src, sequence=seq), "gridding", device="cpu")
    assert stored.dims == direct.dims == ("slice", "y", "x")
    np.testing.assert_allclose(np.abs(stored.numpy()), np.abs(direct.numpy()), rtol=1e-5, atol=1e-9)


def test_mrd_round_trip_of_radial_kspace_with_traj(tmp_path, rng):
    """``write_ismrmrd`` stores each spoke's ``traj``; the reader gives back the same KSpace, and the
    ``ismrmrd`` package reads the file with the MRD layout: traj (samples, dims) ordered (kx, ky)."""
    import ismrmrd

    from mrirecon.io.mrd import MrdFile
    from mrirecon.io.mrd_writer import write_ismrmrd

    traj = sim.radial(12, 32, matrix=16).astype(np.float32).astype(np.float64)  # the file holds float32
    y = (rng.standard_normal((2, 3, 12, 32)) + 1j * rng.standard_normal((2, 3, 12, 32))).astype(np.complex64)
    noise = (rng.standard_normal((3, 64)) + 1j * rng.standard_normal((3, 64))).astype(np.complex64)
    ksp = KSpace(y, ("slice", "coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, 16, 16)), trajectory=traj, noise=noise)
    path = tmp_path / "radial.h5"
    write_ismrmrd(path, ksp)
    with MrdFile(path) as f:
        back = f.read()
    assert back.dims == ksp.dims and back.image_shape == (16, 16)
    assert np.array_equal(back.data, y) and np.array_equal(back.trajectory, traj) and np.array_equal(back.noise, noise)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as ds:
        header = ismrmrd.xsd.CreateFromDocument(ds.read_xml_header())
        acq = ds.read_acquisition(ds.number_of_acquisitions() - 1)  # slice 1, spoke 11
    assert header.encoding[0].trajectory.value == "other" and header.encoding[0].encodedSpace.matrixSize.x == 16
    assert acq.trajectory_dimensions == 2 and acq.idx.slice == 1 and acq.idx.kspace_encode_step_1 == 11
    assert np.array_equal(acq.traj, traj[11][:, ::-1]) and np.array_equal(acq.data, y[1, :, 11])


def test_mrd_traj_normalised_to_half_is_scaled_to_the_matrix(tmp_path, phantom):
    """A file whose traj spans +-0.5 (Gadgetron's convention) reads in cycles/FOV and grids like the original."""
    import h5py

    from mrirecon.io.mrd import MrdFile
    from mrirecon.io.mrd_writer import write_ismrmrd

    traj = sim.radial(40, 2 * N, matrix=N)
    y = NUFFT(traj, (N, N), (1, COILS))(phantom[1][None].astype(np.complex64))
    path = tmp_path / "radial.h5"
    write_ismrmrd(path, KSpace(y, ("slice", "coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, N, N)), trajectory=traj))
    with h5py.File(path, "r+") as h5:
        table = h5["dataset/data"][:]
        for row in table:
            row["traj"] = row["traj"] / N
        h5["dataset/data"][:] = table
    with MrdFile(path) as f:
        back = f.read()
    assert np.abs(back.trajectory - traj).max() < 1e-5 * N
    np.testing.assert_allclose(np.abs(recon(back, "gridding", device="cpu").data), np.abs(recon(
        KSpace(y, back.dims, back.header, trajectory=traj), "gridding", device="cpu").data), rtol=1e-3, atol=1e-4)
