"""Fused coil kernels: Numba CPU and numba.cuda twins against a plain NumPy reference."""
from __future__ import annotations

import textwrap

import numba
import numpy as np
import pytest

from cudasim import simulated_output
from mrirecon.kernels import coil


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


# (3, 130, 70) has 9100 pixels: more than one CPU block of 8192, with a ragged last block.
SHAPES = [(3, 130, 70), (4, 5, 6, 7), (1, 16, 16)]


@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_kernels_match_numpy(rng, shape):
    maps = _complex(rng, shape)
    image = _complex(rng, shape[1:])
    coil_images = _complex(rng, shape)
    expected_expand = maps.astype(np.complex128) * image
    expected_combine = (np.conj(maps.astype(np.complex128)) * coil_images).sum(axis=0)

    out = np.empty((shape[0], image.size), np.complex64)
    coil.sense_expand_batched_cpu(image.reshape(1, -1), maps.reshape(1, shape[0], -1), out[None])
    np.testing.assert_allclose(out.reshape(shape), expected_expand, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(coil.sense_expand(image, maps), expected_expand, rtol=1e-6, atol=1e-6)

    combined = coil.sense_combine(coil_images, maps)
    assert combined.dtype == np.complex64 and combined.shape == shape[1:]
    np.testing.assert_allclose(combined, expected_combine, rtol=1e-5, atol=1e-5)


def test_single_thread_expand_falls_back_to_numpy(rng):
    maps, image = _complex(rng, (3, 20, 30)), _complex(rng, (20, 30))
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        out = coil.sense_expand(image, maps)
    finally:
        numba.set_num_threads(threads)
    assert out.dtype == np.complex64
    np.testing.assert_allclose(out, maps * image, rtol=1e-6, atol=1e-6)


def test_kernels_accept_non_contiguous_input(rng):
    maps = _complex(rng, (4, 20, 30))
    image = _complex(rng, (30, 20)).T  # Fortran-ordered view
    np.testing.assert_allclose(coil.sense_expand(image, maps), maps * image, rtol=1e-6, atol=1e-6)


def test_shape_mismatch_is_reported(rng):
    with pytest.raises(ValueError, match="do not match"):
        coil.sense_combine(_complex(rng, (4, 8, 8)), _complex(rng, (4, 8, 9)))


_SIM_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import coil

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(7)
    shape = (3, 9, 11)  # 99 pixels: a partial thread block
    c = lambda s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    maps, image, y = c(shape).reshape(3, -1), c(shape[1:]).reshape(-1), c(shape).reshape(3, -1)
    gpu_e, cpu_e = np.zeros_like(maps), np.zeros_like(maps)
    coil.sense_expand_batched_cuda(image[None], maps[None], gpu_e[None])
    coil.sense_expand_batched_cpu(image[None], maps[None], cpu_e[None])
    gpu_c, cpu_c = np.zeros_like(image), np.zeros_like(image)
    coil.sense_combine_batched_cuda(y[None], maps[None], gpu_c[None])
    coil.sense_combine_batched_cpu(y[None], maps[None], cpu_c[None])
    print(np.abs(gpu_e - cpu_e).max(), np.abs(gpu_c - cpu_c).max())
    """
)


def test_cuda_kernels_match_cpu_under_simulator():
    """The numba.cuda twins run under NUMBA_ENABLE_CUDASIM=1 (set before numba.cuda is imported)."""
    out = simulated_output(_SIM_SCRIPT)
    err_expand, err_combine = (float(v) for v in out)
    assert err_expand < 1e-6 and err_combine < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES)
def test_cupy_kernels_match_cpu(rng, shape):
    import cupy as cp

    maps, image, y = _complex(rng, shape), _complex(rng, shape[1:]), _complex(rng, shape)
    np.testing.assert_allclose(
        cp.asnumpy(coil.sense_expand(cp.asarray(image), cp.asarray(maps))), coil.sense_expand(image, maps), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        cp.asnumpy(coil.sense_combine(cp.asarray(y), cp.asarray(maps))), coil.sense_combine(y, maps), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "shape, axes",
    [((3, 16, 12), (-2, -1)), ((3, 18, 10), (-2, -1)), ((2, 6, 8, 10), (-3, -2, -1)), ((5, 8, 6), (1, 2)),
     ((3, 15, 12), (-2, -1)), ((8, 6), (0,))],
)
def test_centred_fft_matches_shifted_reference(rng, shape, axes):
    """fftc/ifftc (checkerboard path for even trailing axes, incl. N = 2 mod 4; shifts otherwise) equal
    fftshift(fft(ifftshift(x))) computed in complex128."""
    from mrirecon.kernels.fft import fftc, ifftc

    x = _complex(rng, shape)
    x128 = x.astype(np.complex128)
    original = x.copy()
    for fn, ref in ((fftc, np.fft.fftn), (ifftc, np.fft.ifftn)):
        expected = np.fft.fftshift(ref(np.fft.ifftshift(x128, axes=axes), axes=axes, norm="ortho"), axes=axes)
        out = fn(x, axes)
        assert out.dtype == np.complex64
        # complex64 round-off: measured <= 8e-7 (max abs, entries O(1)); a wrong sign or shift gives O(1)
        np.testing.assert_allclose(out, expected, atol=2e-6, rtol=0)
        np.testing.assert_array_equal(x, original)  # the in-place FFT works on a copy, never the input


def _planes_reference(x: np.ndarray, axis: int) -> np.ndarray:
    """moveaxis(fftshift(ifft(ifftshift(x))), axis, 0) along ``axis`` in complex128, orthonormal."""
    y = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(x.astype(np.complex128), axes=axis), axis=axis, norm="ortho"), axes=axis)
    return np.moveaxis(y, axis, 0)


@pytest.mark.parametrize("shape, axis", [((3, 8, 6, 5), 1), ((3, 10, 4, 4), 1), ((2, 6, 5, 9), -1), ((2, 4, 6, 12), -1)])
def test_ifftc_planes_is_the_centred_readout_fft_moved_to_the_front(rng, shape, axis):
    """Even sizes: out-of-place FFT + sign and roll folded into the transposing copy; odd: plain shifts."""
    from mrirecon.kernels.fft import ifftc_planes

    x = _complex(rng, shape)
    before = x.copy()
    ref = _planes_reference(x, axis)
    out = ifftc_planes(x, axis)
    assert out.flags.c_contiguous and out.dtype == np.complex64 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=2e-6 * np.abs(ref).max())
    keep = [shape[axis] - 1, 0, 2]
    np.testing.assert_allclose(ifftc_planes(x, axis, keep), ref[keep], atol=2e-6 * np.abs(ref).max())
    np.testing.assert_array_equal(x, before)  # the input is left intact


@pytest.mark.parametrize("shape, axis", [((3, 8, 6, 5), 1), ((2, 6, 5, 9), -1), ((4, 8, 3, 7, 5), 2)])
def test_ifftc_planes_in_small_blocks_equals_one_block(rng, shape, axis, monkeypatch):
    """The CPU path cuts the lines into blocks run side by side: blocks of a few elements give the same planes."""
    from mrirecon.kernels import fft
    from mrirecon.kernels.threads import limit_cpu_threads

    x = _complex(rng, shape)
    ref = _planes_reference(x, axis)
    monkeypatch.setattr(fft, "_PLANE_BLOCK_BYTES", 3 * shape[axis] * x.itemsize)  # 3 elements of the rest per block
    with limit_cpu_threads(2):
        out = fft.ifftc_planes(x, axis, [shape[axis] - 1, 0, 2, 1])
    np.testing.assert_allclose(out, ref[[shape[axis] - 1, 0, 2, 1]], atol=2e-6 * np.abs(ref).max())
    assert len(fft._blocks(tuple(np.delete(shape, axis % len(shape))), 3)) > 2


@pytest.mark.gpu
def test_ifftc_planes_on_cupy_matches_cpu(rng):
    import cupy as cp

    from mrirecon.kernels.fft import ifftc_planes

    x = _complex(rng, (3, 8, 6, 5))
    np.testing.assert_allclose(cp.asnumpy(ifftc_planes(cp.asarray(x), 1, [7, 0, 3])), ifftc_planes(x, 1, [7, 0, 3]),
                               atol=1e-6)


@pytest.mark.parametrize("shared_weight", [True, False])
def test_batched_dispatchers_equal_per_entry_calls(rng, shared_weight):
    """Expand, combine and weight with a leading batch axis (2 x 3 entries) equal the unbatched calls per
    entry (the same row kernels: bit-identical), with a weight per entry or shared by all."""
    batch, shape = (2, 3), (4, 130, 70)
    maps, image, y = _complex(rng, batch + shape), _complex(rng, batch + shape[1:]), _complex(rng, batch + shape)
    weight = rng.standard_normal(shape[1:] if shared_weight else batch + shape[1:]).astype(np.float32)
    expanded = coil.sense_expand(image, maps, batch_ndim=2)
    combined = coil.sense_combine(y, maps, batch_ndim=2)
    weighted = y.copy()
    coil.apply_weight(weighted, weight, batch_ndim=2)
    assert expanded.shape == maps.shape and combined.shape == image.shape
    for index in np.ndindex(*batch):
        w = weight if shared_weight else weight[index]
        np.testing.assert_array_equal(expanded[index], coil.sense_expand(image[index], maps[index]))
        np.testing.assert_array_equal(combined[index], coil.sense_combine(y[index], maps[index]))
        single = y[index].copy()
        coil.apply_weight(single, w)
        np.testing.assert_array_equal(weighted[index], single)
    with pytest.raises(ValueError, match="do not match"):
        coil.sense_expand(image[:, :2], maps, batch_ndim=2)


_SIM_BATCHED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import cuda
    from mrirecon.kernels import coil

    assert cuda.is_available(), "CUDA simulator not active"
    rng = np.random.default_rng(8)
    c = lambda s: (rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(np.complex64)
    n_batch, n_coils, n = 3, 2, 300  # two thread blocks per entry, the second partial
    maps, image, y = c((n_batch, n_coils, n)), c((n_batch, n)), c((n_batch, n_coils, n))
    errors = []
    for args, out_shape, gpu_fn, cpu_fn in (
        ((image, maps), maps.shape, coil.sense_expand_batched_cuda, coil.sense_expand_batched_cpu),
        ((y, maps), image.shape, coil.sense_combine_batched_cuda, coil.sense_combine_batched_cpu),
    ):
        gpu, cpu = np.zeros(out_shape, np.complex64), np.zeros(out_shape, np.complex64)
        gpu_fn(*args, gpu)
        cpu_fn(*args, cpu)
        errors.append(np.abs(gpu - cpu).max())
    for rows in (n_batch, 1):  # a weight per entry, then one shared
        w = rng.standard_normal((rows, n)).astype(np.float32)
        gpu, cpu = y.copy(), y.copy()
        coil.weight_batched_cuda(gpu, w)
        coil.weight_batched_cpu(cpu, w)
        errors.append(np.abs(gpu - cpu).max() + np.abs(cpu - y * w[:, None]).max())
    print(*errors)
    """
)


def test_batched_cuda_kernels_match_cpu_under_simulator():
    """The batched numba.cuda twins (a grid over pixels x batch entries) under NUMBA_ENABLE_CUDASIM=1."""
    out = simulated_output(_SIM_BATCHED_SCRIPT)
    errors = [float(v) for v in out]
    assert len(errors) == 4 and max(errors) < 1e-5, errors


@pytest.mark.gpu
def test_cupy_batched_kernels_match_cpu(rng):
    import cupy as cp

    batch, shape = (3,), (4, 33, 20)
    maps, image, y = _complex(rng, batch + shape), _complex(rng, batch + shape[1:]), _complex(rng, batch + shape)
    weight = rng.standard_normal(batch + shape[1:]).astype(np.float32)
    g = cp.asarray
    np.testing.assert_allclose(
        cp.asnumpy(coil.sense_expand(g(image), g(maps), batch_ndim=1)), coil.sense_expand(image, maps, batch_ndim=1), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        cp.asnumpy(coil.sense_combine(g(y), g(maps), batch_ndim=1)), coil.sense_combine(y, maps, batch_ndim=1), rtol=1e-5, atol=1e-5
    )
    weighted, weighted_gpu = y.copy(), g(y)
    coil.apply_weight(weighted, weight, 1)
    coil.apply_weight(weighted_gpu, g(weight), 1)
    np.testing.assert_allclose(cp.asnumpy(weighted_gpu), weighted, rtol=1e-6, atol=1e-6)
