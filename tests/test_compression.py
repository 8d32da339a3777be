"""SVD coil compression: orthonormal virtual coils, energy kept, SENSE close to uncompressed, ACS arrays."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mrirecon.pipelines.store import open_series

from mrirecon import sim
from mrirecon.cli import main
from mrirecon.coils import coil_covariance
from mrirecon.compression import compress, compression_matrix
from mrirecon.errors import InputError
from mrirecon.io import write_ismrmrd
from mrirecon.reconstruction import bind_params, recon


def _nrmse(x: np.ndarray, ref: np.ndarray) -> float:
    x, y = np.abs(x).ravel(), np.abs(ref).ravel()
    return float(np.linalg.norm(np.dot(x, y) / np.dot(x, x) * x - y) / np.linalg.norm(y))


def test_compression_matrix_keeps_the_dominant_subspace(rng):
    # 6 coils that really carry 2 independent signals, plus a little noise
    mixing = rng.standard_normal((6, 2)) + 1j * rng.standard_normal((6, 2))
    x = mixing @ (rng.standard_normal((2, 5000)) + 1j * rng.standard_normal((2, 5000)))
    x += 1e-3 * (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape))
    m, kept = compression_matrix(x.astype(np.complex64), 2)
    assert m.shape == (2, 6) and m.dtype == np.complex64
    np.testing.assert_allclose(m @ m.conj().T, np.eye(2), atol=1e-6)  # orthonormal rows
    assert kept > 0.99999  # measured 0.9999997: the noise is all that is lost
    # the virtual coils are uncorrelated, ordered by energy (eigenvalues of the Gram matrix)
    gram = coil_covariance(m @ x)
    assert abs(gram[0, 1]) < 1e-6 * gram[0, 0].real and gram[0, 0].real > gram[1, 1].real
    np.testing.assert_allclose(m.conj().T @ (m @ x), x, atol=2e-2 * np.abs(x).max())


def test_compressed_sense_stays_close_to_uncompressed(phantom_r4):
    image, _, ksp = phantom_r4
    reference = recon(ksp, "sense").data
    out = recon(ksp, "sense", coil_compression=4)
    assert out.provenance.parameters["coil_compression"] == 4
    # measured NRMSE to the 8-coil result 0.0211 (6 coils: 0.0112, 3 coils: 0.0458); to the truth
    # 0.115 against 0.108 uncompressed; the 4 virtual coils keep 99.65% of the calibration energy
    assert _nrmse(out.data, reference) < 0.023
    assert _nrmse(out.data, image) < 0.12
    assert compress(ksp, 4).header.extra["coil_compression"]["energy"] == pytest.approx(0.99646, abs=1e-4)


def test_compression_maps_separate_calibration_and_noise_arrays():
    """GRAPPA-style data: R=3 lines without a centre, 24 separate ACS lines, noise scans."""
    shape = (96, 96)
    image = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(8, shape)
    full = sim.simulate(image, maps, noise_sigma=2e-3, seed=4, noise_scans=500)
    lines = np.zeros(shape, bool)
    lines[::3] = True
    ksp = dataclasses.replace(full, data=full.data * lines, mask=lines, calibration=full.data[:, 36:60].copy())
    out = compress(ksp, 5)
    assert out.data.shape == (5, 96, 96) and out.calibration.shape == (5, 24, 96) and out.noise.shape == (5, 500)
    m, _ = compression_matrix(ksp.calibration, 5)  # fitted to the ACS lines, not the aliased data
    np.testing.assert_allclose(out.calibration, np.tensordot(m, ksp.calibration, axes=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out.data[:, 1::3] == 0, True)  # skipped lines stay empty
    # SENSE from the separate calibration: measured NRMSE to the 8-coil result 0.0222 (to the truth
    # 0.167 against 0.165 with 8 coils; equispaced R=3 on 96^2 is harder than Poisson R=4 on 128^2)
    reference = recon(ksp, "sense", whiten=False).data
    assert _nrmse(recon(ksp, "sense", whiten=False, coil_compression=5).data, reference) < 0.025


def test_compression_with_batch_dims_uses_every_slice(phantom_r4):
    _, _, ksp = phantom_r4
    stack = dataclasses.replace(ksp, data=np.stack([ksp.data, 2 * ksp.data]), dims=("slice", *ksp.dims))
    out = compress(stack, 3)
    assert out.dims == stack.dims and out.data.shape == (2, 3, 128, 128)
    np.testing.assert_allclose(out.data[1], 2 * out.data[0], rtol=1e-5, atol=1e-6)  # one matrix for both


def test_bad_compression_requests(phantom_r4):
    ksp = phantom_r4[2]
    with pytest.raises(InputError, match="cannot compress 8 coils to 9"):
        recon(ksp, "zerofill", coil_compression=9)
    with pytest.raises(InputError, match="positive number of virtual coils"):
        recon(ksp, "zerofill", coil_compression=0)
    with pytest.raises(InputError, match="need 1..8"):
        compress(ksp, 0)
    with pytest.raises(InputError, match="source must be one of"):
        compress(ksp, 2, source="acs")
    # what a pipeline checks before any task runs: method parameters and preprocessing together
    assert bind_params("zerofill", {"coil_compression": 4, "whiten": False}) == {"coil_compression": 4, "whiten": False}
    with pytest.raises(InputError, match="coil_compression must be a positive number"):
        bind_params("zerofill", {"coil_compression": 2.5})
    with pytest.raises(InputError, match="unknown parameter 'coils'"):
        bind_params("zerofill", {"coils": 4})


def test_cli_coils_flag(tmp_path, capsys):
    image = sim.shepp_logan((64, 64))
    raw = tmp_path / "p.h5"
    write_ismrmrd(raw, sim.simulate(image, sim.birdcage_maps(8, image.shape), noise_sigma=1e-3))
    store = tmp_path / "out.zarr"
    assert main(["recon", str(raw), "-o", str(store), "--method", "zerofill", "--coils", "3", "--device", "cpu",
                 "--no-progress"]) == 0
    name = capsys.readouterr().out.split(f"{store}/")[1].split()[0]
    assert open_series(store, name).provenance.parameters["coil_compression"] == 3
    assert main(["recon", str(raw), "-o", str(store), "--coils", "0"]) == 2  # argparse: not positive
    assert main(["recon", str(raw), "-o", str(store), "--method", "zerofill", "--coils", "9", "--no-progress"]) == 2
    assert "cannot compress 8 coils to 9" in capsys.readouterr().err


@pytest.mark.gpu
def test_compression_on_gpu_matches_cpu(phantom_r4):
    import cupy as cp

    ksp = phantom_r4[2]
    cpu = compress(ksp, 4)
    gpu = compress(ksp.to("cuda"), 4)
    assert isinstance(gpu.data, cp.ndarray)
    # eigenvectors are unique up to a phase per virtual coil: compare what the phase cannot change
    np.testing.assert_allclose(np.abs(cp.asnumpy(gpu.data)), np.abs(cpu.data), atol=1e-4 * np.abs(cpu.data).max())
