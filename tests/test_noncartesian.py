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
from mrirecon.methods.noncartesian import nyquist_box
from mrirecon.nufft import NUFFT
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


def test_cg_sense_beats_gridding_on_undersampled_golden_angle(phantom):
    x, coil_images = phantom
    ksp = radial_kspace(coil_images, sim.radial(24, 2 * N, matrix=N, ordering="golden"))  # R ~ 3 against pi/2 N
    gridded = nrmse(recon(ksp, "gridding", device="cpu").data, x)
    sense = nrmse(recon(ksp, "nufft_sense", device="cpu").data, x)
    # measured: gridding 0.419, CG-SENSE (ESPIRiT maps from the gridded centre) 0.180
    assert sense < 0.2 and gridded - sense > 0.2


def test_recon_loops_over_slices_with_one_trajectory(phantom):
    coil_images = phantom[1]
    traj = sim.radial(40, 2 * N, matrix=N)
    y = NUFFT(traj, (N, N), (2, COILS))(np.stack([coil_images, 2 * coil_images]).astype(np.complex64))
    ksp = KSpace(y, ("slice", "coil", "spoke", "readout"), KSpaceHeader(recon_matrix=(1, N, N)), trajectory=traj)
    image = recon(ksp, "gridding", device="cpu")
    assert image.dims == ("slice", "y", "x") and image.data.shape == (2, N, N)
    assert np.allclose(np.abs(image.data[1]), 2 * np.abs(image.data[0]), rtol=1e-3, atol=1e-3 * np.abs(image.data).max())


def test_stack_of_stars_gridding():
    shape = (8, 32, 32)
    x = sim.shepp_logan(shape)
    traj = sim.stack_of_stars(50, 64, 8, matrix=32)
    y = NUFFT(traj, shape, (1,), accuracy="high")(x[None].astype(np.complex64))
    ksp = KSpace(y, ("coil", "partition", "spoke", "readout"), KSpaceHeader(recon_matrix=shape), trajectory=traj)
    image = recon(ksp, "gridding", device="cpu")
    assert image.dims == ("z", "y", "x") and image.data.shape == shape
    _, ky, kx = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    cylinder_truth = ifftc(fftc(x, (0, 1, 2)) * (np.hypot(ky, kx) < 16), (0, 1, 2))
    assert nrmse(image.data, cylinder_truth) < 0.16  # measured 0.146 (32 pixels across: coarser than the 2D case)


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

    src = shared_raw / "pulseq-tutorials" / "11_06_EPI_singleTraj.dat"
    out = tmp_path / "out.zarr"
    assert main(["recon", str(src), "-o", str(out), "--method", "gridding", "--no-progress"]) == 0
    stored = open_series(out, list_series(out)[0])
    direct = recon(read(src), "gridding", device="cpu")
    assert stored.dims == direct.dims == ("slice", "y", "x")
    np.testing.assert_allclose(np.abs(stored.numpy()), np.abs(direct.numpy()), rtol=1e-5, atol=1e-9)
