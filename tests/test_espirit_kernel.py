"""ESPIRiT kernels (``kernels/espirit.py``): the lag DFT against ``ifftc``, the power-iteration twins
against LAPACK eigenvectors and each other, and ``espirit_maps`` against the plain NumPy formulation
(all coil pairs, zero-padded FFT, batched matmul power iteration)."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from cudasim import simulated_output
from mrirecon import sim
from mrirecon.coils import _casorati, _signal_subspace, calibration_region, espirit_maps
from mrirecon.kernels.espirit import lag_images, n_pairs, power_maps
from mrirecon.kernels.fft import ifftc


def _complex(rng, shape) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _packed(w: np.ndarray) -> np.ndarray:
    """(n_pix, n, n) Hermitian matrices -> (n_pairs, n_pix) upper triangles, row-major."""
    rows, cols = np.triu_indices(w.shape[1])
    return np.ascontiguousarray(w[:, rows, cols].T).astype(np.complex64)


def _hermitian_with_gap(rng, n_pix: int, n: int) -> np.ndarray:
    """Hermitian PSD matrices with top eigenvalues spread over [0.5, 1.5] and the rest <= 0.1 of it."""
    q, _ = np.linalg.qr(rng.standard_normal((n_pix, n, n)) + 1j * rng.standard_normal((n_pix, n, n)))
    eig = rng.uniform(0.0, 0.1, (n_pix, n))
    eig[:, 0] = 1.0
    eig *= rng.uniform(0.5, 1.5, (n_pix, 1))
    return np.einsum("pij,pj,pkj->pik", q, eig, q.conj())


@pytest.mark.parametrize(
    "spatial, n_lags", [((24, 20), (5, 7)), ((15, 17), (5, 3)), ((9, 8, 10), (3, 5, 3)), ((12,), (7,))]
)
def test_lag_images_equal_zero_padded_ifftc(rng, spatial, n_lags):
    """Even and odd sizes, 1D to 3D: the direct DFT equals ifftc of the centred zero-padded lags."""
    lags = _complex(rng, (3, *n_lags))
    grid = np.zeros((3, *spatial), np.complex128)
    box = tuple(slice(n // 2 - k // 2, n // 2 - k // 2 + k) for n, k in zip(spatial, n_lags))
    grid[(slice(None), *box)] = lags
    axes = tuple(range(1, 1 + len(spatial)))
    expected = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(grid, axes=axes), axes=axes), axes=axes) * grid[0].size
    np.testing.assert_allclose(ifftc(grid.astype(np.complex64), axes) * np.sqrt(grid[0].size), expected, atol=1e-4)
    out = lag_images(lags, spatial)
    assert out.shape == (3, *spatial) and out.dtype == np.complex64
    np.testing.assert_allclose(out, expected, atol=1e-5 * np.abs(expected).max())


def test_power_maps_are_top_eigenvectors_cropped_and_phase_aligned(rng):
    n, n_pix = 6, 300  # pixels over two CPU blocks, the second partial
    w = _hermitian_with_gap(rng, n_pix, n)
    maps = power_maps(_packed(w), n, 30, 0.95)
    val, vec = np.linalg.eigh(w)
    top = vec[:, :, -1] * np.exp(-1j * np.angle(vec[:, :1, -1]))  # coil 0 real, >= 0
    kept = val[:, -1] > 0.95
    assert 0 < kept.sum() < n_pix
    np.testing.assert_allclose(maps.T[kept], top[kept], atol=2e-5)
    assert not maps[:, ~kept].any()
    np.testing.assert_array_less(-1e-6, maps[0, kept].real)
    np.testing.assert_allclose(maps[0, kept].imag, 0.0, atol=1e-6)


def test_power_maps_checks_packed_shape():
    with pytest.raises(ValueError, match="do not fit 4 coils"):
        power_maps(np.zeros((n_pairs(4) - 1, 10), np.complex64), 4, 5, 0.9)


def test_signal_subspace_spans_the_kept_right_singular_vectors(rng):
    """Both branches (fewer rows than columns: via A A^H; else A^H A) give the SVD's projector."""
    for rows, cols in ((40, 60), (60, 40)):
        s = np.geomspace(1.0, 1e-3, min(rows, cols))  # 0.02 keeps 23 of 40
        u, _ = np.linalg.qr(rng.standard_normal((rows, rows)) + 1j * rng.standard_normal((rows, rows)))
        v, _ = np.linalg.qr(rng.standard_normal((cols, cols)) + 1j * rng.standard_normal((cols, cols)))
        a = (u[:, : len(s)] * s) @ v[:, : len(s)].conj().T
        basis = _signal_subspace(a, 0.02)
        ref = v[:, : int(np.sum(s > 0.02))]
        assert basis.shape == ref.shape
        np.testing.assert_allclose(basis.conj().T @ basis, np.eye(ref.shape[1]), atol=1e-9)
        np.testing.assert_allclose(basis @ basis.conj().T, ref @ ref.conj().T, atol=1e-9)


def _espirit_reference(kspace: np.ndarray, calib: int, kernel: int, thresh: float, crop: float, max_iter: int):
    """ESPIRiT in plain NumPy: SVD of the calibration matrix, every coil pair's W image by a zero-padded
    centred FFT of the kernels' cross-correlations, batched-matmul power iteration, phase of coil 0."""
    n_coils, *spatial = kspace.shape
    ndim = len(spatial)
    a = _casorati(calibration_region(kspace, calib).astype(np.complex128), kernel)
    _, s, vh = np.linalg.svd(a, full_matrices=False)
    kernels = vh[s > thresh * s[0]].reshape((-1, n_coils) + (kernel,) * ndim)
    axes = tuple(range(2, 2 + ndim))
    spectra = np.fft.fftn(kernels, s=(2 * kernel - 1,) * ndim, axes=axes)
    corr = np.fft.fftshift(np.fft.ifftn(np.einsum("jc...,jd...->cd...", spectra, spectra.conj()), axes=axes), axes=axes)
    grid = np.zeros((n_coils, n_coils, *spatial), np.complex128)
    box = tuple(slice(n // 2 - kernel + 1, n // 2 + kernel) for n in spatial)
    grid[(slice(None), slice(None), *box)] = corr * np.prod(spatial) / kernel**ndim
    w = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(grid, axes=axes), axes=axes), axes=axes)
    w = np.moveaxis(w.reshape(n_coils, n_coils, -1), 2, 0)
    vec = w.sum(axis=2)
    for _ in range(max_iter):
        vec /= np.maximum(np.linalg.norm(vec, axis=1), 1e-30)[:, None]
        w_vec = np.matmul(w, vec[:, :, None])[:, :, 0]
        eig = np.sum(vec.conj() * w_vec, axis=1).real
        vec = w_vec
    vec /= np.maximum(np.linalg.norm(vec, axis=1), 1e-30)[:, None]
    vec *= (eig > crop)[:, None] * np.exp(-1j * np.angle(vec[:, :1]))
    return vec.T.reshape(kspace.shape)


@pytest.mark.parametrize("shape, n_coils, calib, kernel", [((48, 40), 8, 16, 5), ((12, 16, 14), 4, 8, 3)])
def test_espirit_maps_equal_numpy_reference(shape, n_coils, calib, kernel):
    """2D (fewer calibration rows than columns) and 3D (more rows): equal to the reference to float32
    round-off where kept, the same pixels cropped (none near the crop threshold here)."""
    image = sim.shepp_logan(shape)
    ksp = sim.simulate(image, sim.birdcage_maps(n_coils, shape), noise_sigma=1e-3, seed=0).data
    est = espirit_maps(ksp, calib=calib, kernel=kernel, thresh=0.02, crop=0.9, max_iter=30)
    ref = _espirit_reference(ksp, calib, kernel, 0.02, 0.9, 30)
    kept = np.abs(ref).sum(0) > 0
    assert kept.any() and not kept.all()
    np.testing.assert_array_equal(np.abs(est).sum(0) > 0, kept)
    assert np.linalg.norm(est - ref) / np.linalg.norm(ref) < 1e-5


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import espirit

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(3)
    n, n_pix = 5, 150  # two thread blocks, the second partial
    a = rng.standard_normal((n_pix, n, n)) + 1j * rng.standard_normal((n_pix, n, n))
    w = a @ a.conj().transpose(0, 2, 1) / (2 * n)
    rows, cols = np.triu_indices(n)
    gram = np.ascontiguousarray(w[:, rows, cols].T).astype(np.complex64)
    crop = float(np.median(np.linalg.eigvalsh(w)[:, -1]))  # half the pixels cropped
    cpu, gpu = np.empty((n, n_pix), np.complex64), np.empty((n, n_pix), np.complex64)
    espirit.power_maps_cpu(gram, 20, np.float32(crop), cpu)
    espirit.power_maps_cuda(gram, 20, crop, gpu)
    print(np.abs(gpu - cpu).max(), int((np.abs(cpu).sum(0) > 0).sum()))
    """
)


def test_cuda_power_maps_match_cpu_under_simulator():
    """The numba.cuda twin runs under NUMBA_ENABLE_CUDASIM=1 (set before numba.cuda is imported)."""
    out = simulated_output(_SIM_SCRIPT)
    err, n_kept = out
    assert 0 < int(n_kept) < 150  # both the kept and the cropped branch ran
    assert float(err) < 1e-5


@pytest.mark.gpu
def test_power_maps_cupy_match_cpu(rng):
    import cupy as cp

    w = _hermitian_with_gap(rng, 1000, 8)
    cpu = power_maps(_packed(w), 8, 30, 0.95)
    gpu = power_maps(cp.asarray(_packed(w)), 8, 30, 0.95)
    assert isinstance(gpu, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, atol=1e-5)
