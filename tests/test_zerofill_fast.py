"""The shift-free zero-filled reconstruction, the fused RSS kernels (CPU, numba.cuda under the simulator,
CuPy) and the one-read finite check, each against an independent complex128 NumPy reference."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
from cudasim import simulated_output
from mrirecon.kernels.rss import rss_combine

import mrirecon
from mrirecon import KSpace
from mrirecon.coils import rss
from mrirecon.errors import InputError
from mrirecon.methods.zerofill import zerofill


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _reference_zerofill(data: np.ndarray) -> np.ndarray:
    """sqrt(sum_c |fftshift(ifftn(ifftshift(y_c)))|^2) in complex128, shifts over the spatial axes."""
    axes = tuple(range(1, data.ndim))
    x = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(data.astype(np.complex128), axes=axes), axes=axes,
                                     norm="ortho"), axes=axes)
    return np.sqrt((np.abs(x) ** 2).sum(axis=0))


def _reference_rss(y: np.ndarray, shift: tuple[int, ...]) -> np.ndarray:
    return np.roll(np.sqrt((np.abs(y.astype(np.complex128)) ** 2).sum(axis=0)), shift, axis=tuple(range(y.ndim - 1)))


# even, N = 2 mod 4, odd and mixed sizes; 2D and 3D
ZF_SHAPES = [(4, 16, 12), (3, 18, 10), (5, 15, 9), (2, 7, 8), (3, 6, 8, 10), (2, 5, 4, 7)]


@pytest.mark.parametrize("shape", ZF_SHAPES)
def test_zerofill_equals_centred_reference(rng, shape):
    """The output fftshift folded into the RSS write, and the input shift dropped, change nothing: a wrong
    roll or a missing shift moves the image by N/2 and gives errors of order 1."""
    data = _complex(rng, shape)
    original = data.copy()
    dims = ("coil", *("kz", "ky", "kx")[-(len(shape) - 1):])
    out = zerofill(KSpace(data, dims))
    expected = _reference_zerofill(data)
    assert out.dtype == np.complex64 and out.shape == shape[1:]
    np.testing.assert_array_equal(out.imag, 0)
    # complex64 FFT round-off: entries O(1), measured <= 1e-6
    np.testing.assert_allclose(out.real, expected, rtol=0, atol=5e-6 * expected.max())
    np.testing.assert_array_equal(data, original)  # the out-of-place FFT leaves the k-space intact


def test_recon_zerofill_batched_and_cropped(rng):
    """Through recon(): two slices, each equal to the reference, cropped to the header's recon matrix."""
    data = _complex(rng, (2, 4, 20, 16))
    header = mrirecon.KSpaceHeader(recon_matrix=(1, 10, 16))
    image = mrirecon.recon(KSpace(data, ("slice", "coil", "ky", "kx"), header=header), "zerofill", device="cpu")
    assert image.data.shape == (2, 10, 16)
    for s in range(2):
        expected = _reference_zerofill(data[s])[5:15]
        np.testing.assert_allclose(image.data[s].real, expected, rtol=0, atol=5e-6 * expected.max())


@pytest.mark.parametrize("shape, shift", [((4, 9, 11), (4, 5)), ((3, 8, 6), (0, 0)), ((2, 4, 6, 5), (2, 3, 2)),
                                          ((5, 13), (6,)), ((16, 20, 24), (10, 12))])
@pytest.mark.parametrize("dtype", [np.float32, np.complex64])
def test_rss_combine_matches_numpy(rng, shape, shift, dtype):
    y = _complex(rng, shape)
    out = rss_combine(y, dtype=dtype, shift=shift)
    assert out.dtype == dtype and out.shape == shape[1:]
    np.testing.assert_allclose(out.real if dtype == np.complex64 else out, _reference_rss(y, shift), rtol=2e-6)


def test_rss_uses_kernel_for_coil_axis_and_numpy_otherwise(rng):
    """coils.rss: axis 0 (kernel), a non-contiguous view, axis 1 and complex128 (NumPy) agree with the reference."""
    y = _complex(rng, (6, 10, 14))
    np.testing.assert_allclose(rss(y), _reference_rss(y, (0, 0)), rtol=2e-6)
    view = y[:, ::2, 1:]
    np.testing.assert_allclose(rss(view), _reference_rss(view, (0, 0)), rtol=2e-6)
    np.testing.assert_allclose(rss(y, axis=1), np.linalg.norm(y.astype(np.complex128), axis=1), rtol=2e-6)
    assert rss(y).dtype == np.float32 and rss(y.astype(np.complex128)).dtype == np.float64


def test_rss_of_empty_coil_images():
    """Zero-size spatial dims give an empty image (no division by a zero length when rolling)."""
    assert rss(np.zeros((3, 0, 4), np.complex64)).shape == (0, 4)
    assert rss_combine(np.zeros((3, 4, 0), np.complex64), np.complex64, (2, 0)).shape == (4, 0)


def test_rss_combine_rejects_too_many_dims(rng):
    with pytest.raises(ValueError, match="1 to 3 spatial dims"):
        rss_combine(_complex(rng, (2, 2, 3, 4, 5)))


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import rss

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(5)
    y = (rng.standard_normal((3, 2, 7, 9)) + 1j * rng.standard_normal((3, 2, 7, 9))).astype(np.complex64)
    ref = np.roll(np.sqrt((np.abs(y.astype(np.complex128)) ** 2).sum(0)), (1, 3, 4), axis=(0, 1, 2))
    worst = 0.0
    for dtype in (np.float32, np.complex64):
        gpu, cpu = np.zeros((2, 7, 9), dtype), np.zeros((2, 7, 9), dtype)
        rss.rss_cuda(y, (1, 3, 4), gpu)  # 126 pixels: a partial thread block
        rss.rss_cpu(y, (1, 3, 4), cpu)
        worst = max(worst, float(np.abs(gpu - ref).max()), float(np.abs(cpu - ref).max()))
    print(worst)
    """
)


def test_cuda_rss_matches_cpu_under_simulator():
    """The numba.cuda twin runs under NUMBA_ENABLE_CUDASIM=1 (set before numba.cuda is imported)."""
    out = simulated_output(_SIM_SCRIPT)
    assert float(out[-1]) < 1e-6


@pytest.mark.gpu
@pytest.mark.parametrize("shape", ZF_SHAPES)
def test_zerofill_on_gpu_matches_cpu(rng, shape):
    import cupy as cp

    data = _complex(rng, shape)
    dims = ("coil", *("kz", "ky", "kx")[-(len(shape) - 1):])
    gpu = cp.asnumpy(zerofill(KSpace(cp.asarray(data), dims)))
    np.testing.assert_allclose(gpu, zerofill(KSpace(data, dims)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cp.asnumpy(rss(cp.asarray(data))), rss(data), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, complex(0, np.nan), complex(np.inf, 0)])
def test_non_finite_kspace_is_rejected(rng, bad):
    data = _complex(rng, (2, 8, 8))
    data[1, 3, 5] = bad
    with pytest.raises(InputError, match="NaN or Inf"):
        mrirecon.recon(KSpace(data, ("coil", "ky", "kx")), "zerofill", device="cpu")


def test_opposite_infinities_are_rejected(rng):
    """+Inf and -Inf sum to NaN: still not finite."""
    data = _complex(rng, (2, 8, 8))
    data[0, 0, 0], data[1, 2, 2] = np.inf, -np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        KSpace(data, ("coil", "ky", "kx")).check_finite()


def test_large_finite_kspace_is_accepted():
    """Samples near float32's maximum overflow the sum to Inf; the element-wise fallback accepts them."""
    data = np.full((2, 8, 8), 3e38 + 3e38j, dtype=np.complex64)
    with np.errstate(over="ignore"):
        assert not np.isfinite(data.sum())
    KSpace(data, ("coil", "ky", "kx")).check_finite()  # no error
