"""Modified (Toft) Shepp–Logan phantom in 2D and 3D: a piecewise-constant object with known values.

Grid convention (shared by every ``mrirecon.sim`` object): an axis of ``n`` samples spans [-1, 1)
with index ``n // 2`` at coordinate 0, the same centre as the centred FFT (``kernels.fftc``).
Rows run from the top of the object (y = +1) downwards, as in the published figure; columns run
along +x; slices along +z.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

# Toft's modified 2D Shepp–Logan table (P. Toft, "The Radon Transform", 1996):
# intensity, semi-axis a (x), semi-axis b (y), centre x0, centre y0, rotation phi (degrees).
_TOFT_2D = np.array(
    [
        [1.0, 0.69, 0.92, 0.0, 0.0, 0.0],
        [-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0],
        [-0.2, 0.11, 0.31, 0.22, 0.0, -18.0],
        [-0.2, 0.16, 0.41, -0.22, 0.0, 18.0],
        [0.1, 0.21, 0.25, 0.0, 0.35, 0.0],
        [0.1, 0.046, 0.046, 0.0, 0.1, 0.0],
        [0.1, 0.046, 0.046, 0.0, -0.1, 0.0],
        [0.1, 0.046, 0.023, -0.08, -0.605, 0.0],
        [0.1, 0.023, 0.023, 0.0, -0.606, 0.0],
        [0.1, 0.023, 0.046, 0.06, -0.605, 0.0],
    ]
)

# Modified 3D Shepp–Logan (Kak & Slaney 3D geometry with Toft's intensities, as tabulated in
# M. Schabel's phantom3d): intensity, semi-axes a, b, c, centre x0, y0, z0, Euler angles
# phi, theta, psi (degrees, z-x-z convention).
_TOFT_3D = np.array(
    [
        [1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0.0, 0.0, 0.0],
        [-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18.0, 0.0, 10.0],
        [-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18.0, 0.0, 10.0],
        [0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15, 0.0, 0.0, 0.0],
        [0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.25, 0.0, 0.0, 0.0],
        [0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.25, 0.0, 0.0, 0.0],
        [0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0.0, 0.0, 0.0],
        [0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0.0, 0.0, 0.0],
        [0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0.0, 0.0, 0.0],
    ]
)


def grid_coordinates(shape: Sequence[int]) -> list[np.ndarray]:
    """Normalised coordinates of every grid axis: [-1, 1) with index ``n // 2`` at 0 (float64)."""
    return [(np.arange(n) - n // 2) / (n / 2.0) for n in shape]


def _check_shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(what, f"shape must be 2D (ny, nx) or 3D (nz, ny, nx) with positive sizes, got {shape}")
    return shape


def _euler_zxz(phi: float, theta: float, psi: float) -> np.ndarray:
    """Rotation matrix (z-x-z Euler angles in degrees) taking object to ellipsoid-frame coordinates."""
    p, t, s = np.deg2rad([phi, theta, psi])
    cp, sp, ct, st, cs, ss = np.cos(p), np.sin(p), np.cos(t), np.sin(t), np.cos(s), np.sin(s)
    return np.array(
        [
            [cs * cp - ct * sp * ss, cs * sp + ct * cp * ss, ss * st],
            [-ss * cp - ct * sp * cs, -ss * sp + ct * cp * cs, cs * st],
            [st * sp, -st * cp, ct],
        ]
    )


def shepp_logan(shape: Sequence[int], dtype: np.dtype | type = np.complex64) -> np.ndarray:
    """Modified Shepp–Logan phantom, (ny, nx) or (nz, ny, nx), values in [0, 1].

    Sums the ellipse (ellipsoid) indicator functions of Toft's table over the whole grid at once;
    one pass per ellipse, none per pixel.
    """
    shape = _check_shape(shape, "shepp_logan")
    coords = grid_coordinates(shape)
    out = np.zeros(shape, dtype=np.float64)
    if len(shape) == 2:
        y = -coords[0][:, None]
        x = coords[1][None, :]
        for rho, a, b, x0, y0, phi in _TOFT_2D:
            c, s = np.cos(np.deg2rad(phi)), np.sin(np.deg2rad(phi))
            xr = (x - x0) * c + (y - y0) * s
            yr = -(x - x0) * s + (y - y0) * c
            out += rho * ((xr / a) ** 2 + (yr / b) ** 2 <= 1.0)
    else:
        z = coords[0][:, None, None]
        y = -coords[1][None, :, None]
        x = coords[2][None, None, :]
        for rho, a, b, c, x0, y0, z0, phi, theta, psi in _TOFT_3D:
            r = _euler_zxz(phi, theta, psi)
            d = (x - x0, y - y0, z - z0)
            u = r[0, 0] * d[0] + r[0, 1] * d[1] + r[0, 2] * d[2]
            v = r[1, 0] * d[0] + r[1, 1] * d[1] + r[1, 2] * d[2]
            w = r[2, 0] * d[0] + r[2, 1] * d[1] + r[2, 2] * d[2]
            out += rho * ((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2 <= 1.0)
    # Overlaps of +/-0.1 ellipses are exact sums of table entries; rounding removes float dust.
    return np.clip(np.round(out, 12), 0.0, 1.0).astype(dtype)
