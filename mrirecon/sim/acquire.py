"""Simulated multi-coil Cartesian acquisition: image x coil maps -> FFT -> mask -> noise -> KSpace.

Works on NumPy or CuPy inputs alike (the image decides). Random numbers are drawn with NumPy from
``seed`` and then moved to the data's device, so a simulation gives the same k-space on every device.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..data import Geometry, KSpace, KSpaceHeader, PatientInfo, SequenceParams
from ..errors import InputError
from ..kernels.backend import device_of, get_array_module, to_device, to_numpy
from ..kernels.fft import fftc
from .mni import BRAIN_FOV_MM

SLICE_THICKNESS_MM = 5.0  # default slice thickness of simulated 2D acquisitions

# Identifiers of the simulated subject: clearly fake, but present, so that de-identification has
# something to remove. No real person is described.
SIMULATED_PATIENT = PatientInfo(
    name="PHANTOM^SIMULATED",
    id="SIM0001",
    birth_date="19700101",
    sex="O",
    weight_kg=70.0,
    study_date="20260101",
    study_time="120000",
    study_uid="2.25.1000000000000000000000000000000001",
    study_description="mrirecon simulation",
    accession_number="SIMACC0001",
    referring_physician="REFERRER^SIMULATED",
    institution="mrirecon simulated site",
    frame_of_reference_uid="2.25.1000000000000000000000000000000002",
)


def _noise_factor(covariance, n_coils: int) -> np.ndarray:
    """Cholesky factor L (L L^H = covariance) after checking shape and positive definiteness."""
    cov = np.asarray(to_numpy(covariance), dtype=np.complex128)
    if cov.shape != (n_coils, n_coils):
        raise InputError("covariance", f"noise covariance must be ({n_coils}, {n_coils}), got {cov.shape}")
    if not np.allclose(cov, cov.conj().T, rtol=1e-6, atol=1e-9 * np.abs(cov).max()):
        raise InputError("covariance", "noise covariance must be Hermitian")
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise InputError("covariance", "noise covariance must be positive definite") from None


def complex_noise(
    shape: Sequence[int], sigma: float, seed: int | Sequence[int] = 0, covariance=None, coil_axis: int = 0
) -> np.ndarray:
    """Zero-mean circular complex Gaussian noise (NumPy, complex64) of ``shape``.

    Without ``covariance`` every sample has E|n|^2 = sigma^2 (sigma^2 / 2 per real/imaginary part).
    With a (coil, coil) ``covariance`` C the noise along ``coil_axis`` has E[n n^H] = sigma^2 C.
    """
    if not np.isfinite(sigma) or sigma < 0:
        raise InputError("sigma", f"noise standard deviation must be finite and >= 0, got {sigma!r}")
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    noise = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * (sigma / np.sqrt(2.0))
    if covariance is not None:
        if not -len(shape) <= coil_axis < len(shape):
            raise InputError("coil_axis", f"axis {coil_axis} out of range for shape {shape}")
        factor = _noise_factor(covariance, shape[coil_axis])
        noise = np.moveaxis(np.tensordot(factor, np.moveaxis(noise, coil_axis, 0), axes=1), 0, coil_axis)
    return noise.astype(np.complex64)


def add_noise(x, sigma: float, seed: int = 0, covariance=None, coil_axis: int = 0):
    """``x`` plus complex Gaussian noise (see ``complex_noise``), complex64 on ``x``'s device."""
    noise = complex_noise(x.shape, sigma, seed, covariance, coil_axis)
    xp = get_array_module(x)
    return x.astype(xp.complex64) + to_device(noise, device_of(x))


def _fov(fov_mm: float | Sequence[float] | None, ndim: int) -> tuple[float, float, float]:
    """(z, y, x) FOV in mm; for 2D, z is the slice thickness. A number means every spatial axis."""
    if fov_mm is None:
        fov_mm = BRAIN_FOV_MM
    values = (float(fov_mm),) * ndim if np.isscalar(fov_mm) else tuple(float(v) for v in fov_mm)
    if ndim == 2 and len(values) == 2:
        values = (SLICE_THICKNESS_MM, *values)
    if len(values) != 3 or not min(values) > 0:
        raise InputError("fov_mm", f"need {ndim} (2D: or 3) positive FOV values in mm, got {fov_mm!r}")
    return values


def calibration_shape(mask: np.ndarray) -> tuple[int, ...]:
    """Size of the largest fully sampled box grown from the centre (index n // 2) of ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    lo = [n // 2 for n in mask.shape]
    hi = [n // 2 + 1 for n in mask.shape]
    if not mask[tuple(lo)]:
        return (0,) * mask.ndim
    grown = True
    while grown:
        grown = False
        for axis, n in enumerate(mask.shape):
            for side in (0, 1):  # the low side first: an even box has its extra line below centre
                edge = lo[axis] - 1 if side == 0 else hi[axis]
                if not 0 <= edge < n:
                    continue
                box = [slice(a, b) for a, b in zip(lo, hi)]
                box[axis] = slice(edge, edge + 1)
                if mask[tuple(box)].all():
                    lo[axis], hi[axis] = (edge, hi[axis]) if side == 0 else (lo[axis], edge + 1)
                    grown = True
    return tuple(b - a for a, b in zip(lo, hi))


def nominal_acceleration(mask: np.ndarray, calib: Sequence[int]) -> tuple[int, int]:
    """(kz, ky) acceleration for the header, from a mask over (ky, kx) or (kz, ky, kx).

    A phase-encode axis whose sampled positions outside the calibration box are regularly spaced
    by R > 1 (equispaced lines) has acceleration R; the rest of the overall reduction
    (size / samples) is given to ky, as for Poisson-disc and random patterns.
    """
    mask = np.asarray(mask, dtype=bool)
    overall = mask.size / max(int(mask.sum()), 1)
    steps = []
    for axis in range(mask.ndim - 1):  # phase-encode axes: all but kx
        n = mask.shape[axis]
        sampled = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        start = n // 2 - calib[axis] // 2
        outside = sampled[(sampled < start) | (sampled >= start + calib[axis])]
        gaps = np.diff(outside)
        steps.append(int(gaps.min()) if gaps.size else 1)
    step_z = steps[0] if mask.ndim == 3 else 1
    step_y = steps[-1]
    if step_y == 1:
        step_y = max(1, int(round(overall / step_z)))
    return step_z, step_y


def simulate(
    image,
    maps,
    mask=None,
    noise_sigma: float = 0.0,
    seed: int = 0,
    fov_mm: float | Sequence[float] | None = None,
    *,
    noise_covariance=None,
    noise_scans: int = 0,
) -> KSpace:
    """Multi-coil Cartesian k-space of ``image`` (ny, nx) or (nz, ny, nx) seen through ``maps``.

    k = M F(S_c x) + n: centred orthonormal FFT of each coil image, sampled by ``mask`` (bool,
    broadcastable to the spatial shape, e.g. a (kz, ky) pattern as ``mask[..., None]``; None =
    fully sampled), complex Gaussian noise of standard deviation ``noise_sigma`` (coil covariance
    ``noise_sigma**2 * noise_covariance``) on acquired samples only. ``noise_scans`` > 0 adds that
    many noise-only samples per coil as ``KSpace.noise`` (same covariance, independent draws).
    The header describes an axial acquisition centred at the isocentre with fake patient
    identifiers (``SIMULATED_PATIENT``).
    """
    xp = get_array_module(image)
    ndim = image.ndim
    if ndim not in (2, 3):
        raise InputError("image", f"image must be 2D (ny, nx) or 3D (nz, ny, nx), got shape {tuple(image.shape)}")
    if maps.ndim != ndim + 1 or tuple(maps.shape[1:]) != tuple(image.shape):
        raise InputError(
            "maps", f"coil maps {tuple(maps.shape)} do not match image {tuple(image.shape)}: need (coil, *image.shape)"
        )
    if not np.isfinite(noise_sigma) or noise_sigma < 0:
        raise InputError("noise_sigma", f"must be finite and >= 0, got {noise_sigma!r}")
    if noise_scans < 0:
        raise InputError("noise_scans", f"must be >= 0, got {noise_scans}")
    spatial = tuple(int(s) for s in image.shape)
    n_coils = int(maps.shape[0])
    device = device_of(image)
    axes = tuple(range(1, ndim + 1))
    ksp = fftc(xp.asarray(maps, dtype=xp.complex64) * xp.asarray(image, dtype=xp.complex64), axes=axes)
    full_mask = np.ones(spatial, dtype=bool)
    if mask is not None:
        mask_np = np.asarray(to_numpy(mask), dtype=bool)
        try:
            full_mask = np.broadcast_to(mask_np, spatial)
        except ValueError:
            raise InputError("mask", f"sampling mask {mask_np.shape} does not broadcast to k-space {spatial}") from None
    sampled = to_device(full_mask, device)
    if noise_sigma > 0:
        ksp = add_noise(ksp, noise_sigma, seed, noise_covariance, coil_axis=0)
    ksp = ksp * sampled
    noise = None
    if noise_scans:
        # (seed, 1) is a stream apart from every integer seed used for the k-space noise.
        noise = to_device(complex_noise((n_coils, noise_scans), noise_sigma, (seed, 1), noise_covariance), device)
    calib = calibration_shape(full_mask)
    nz = spatial[0] if ndim == 3 else 1
    ny, nx = spatial[-2:]
    header = KSpaceHeader(
        encoded_matrix=(nz, ny, nx),
        recon_matrix=(nz, ny, nx),
        kspace_centre=(nz // 2 if ndim == 3 else 0, ny // 2, nx // 2),
        acceleration=nominal_acceleration(full_mask, calib),
        calibration_shape=calib if mask is not None else None,
        # Axial at the isocentre: readout x towards patient left, phase y posterior, slices superior.
        geometry=Geometry(
            fov_mm=_fov(fov_mm, ndim),
            position=np.zeros((1, 3)),
            read_dir=np.array([1.0, 0.0, 0.0]),
            phase_dir=np.array([0.0, 1.0, 0.0]),
            slice_dir=np.array([0.0, 0.0, 1.0]),
        ),
        sequence=SequenceParams(sequence_name="simulated", trajectory="cartesian", scanner="mrirecon.sim"),
        patient=dataclasses.replace(SIMULATED_PATIENT),
        source="simulated",
        source_format="simulation",
        extra={
            "achieved_acceleration": full_mask.size / max(int(full_mask.sum()), 1),
            "noise_sigma": float(noise_sigma),
        },
    )
    dims = ("coil", "ky", "kx") if ndim == 2 else ("coil", "kz", "ky", "kx")
    return KSpace(
        data=ksp,
        dims=dims,
        header=header,
        mask=None if mask is None else to_device(np.array(mask_np), device),
        noise=noise,
    )
