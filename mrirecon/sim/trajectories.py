"""Non-Cartesian trajectories in cycles/FOV (k in [-N/2, N/2) per axis), as (..., ndim) float64 arrays.

The last axis is ordered like the image axes: (ky, kx) in 2D, (kz, ky, kx) in 3D. ``matrix`` is the
image size N the trajectory is meant for (Nyquist spacing = 1 cycle/FOV).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

GOLDEN_RATIO = (1.0 + math.sqrt(5.0)) / 2.0
ORDERINGS = ("uniform", "golden", "tiny_golden")


def spoke_angles(n_spokes: int, ordering: str = "golden", tiny_n: int = 7) -> np.ndarray:
    """Angles (radians) of full-diameter spokes.

    uniform: pi * j / n_spokes (evenly spread over 180 degrees); golden: j * pi / phi (111.25 degrees,
    Winkelmann et al., IEEE TMI 26:68, 2007); tiny_golden: j * pi / (phi + tiny_n - 1) (23.63 degrees for
    tiny_n = 7, Wundrak et al., MRM 75:2372, 2016).
    """
    if n_spokes < 1:
        raise InputError("n_spokes", f"need at least one spoke, got {n_spokes}")
    j = np.arange(n_spokes, dtype=np.float64)
    if ordering == "uniform":
        return math.pi * j / n_spokes
    if ordering == "golden":
        return (j * math.pi / GOLDEN_RATIO) % (2 * math.pi)
    if ordering == "tiny_golden":
        if tiny_n < 1:
            raise InputError("tiny_n", f"tiny golden angle index must be >= 1, got {tiny_n}")
        return (j * math.pi / (GOLDEN_RATIO + tiny_n - 1)) % (2 * math.pi)
    raise InputError("ordering", f"unknown spoke ordering {ordering!r} (known: {', '.join(ORDERINGS)})")


def _readout(n_readout: int, matrix: int | None) -> np.ndarray:
    """Readout positions along a spoke: n_readout samples spanning [-N/2, N/2) evenly, k = 0 at n_readout//2."""
    if n_readout < 2:
        raise InputError("n_readout", f"need at least 2 readout samples, got {n_readout}")
    matrix = n_readout if matrix is None else matrix
    return (np.arange(n_readout) - n_readout // 2) * (matrix / n_readout)


def radial(n_spokes: int, n_readout: int, *, matrix: int | None = None, ordering: str = "golden", tiny_n: int = 7) -> np.ndarray:
    """2D radial trajectory (spoke, readout, 2) with (ky, kx) = k (sin a, cos a) along each spoke."""
    angles = spoke_angles(n_spokes, ordering, tiny_n)
    k = _readout(n_readout, matrix)
    return np.stack([np.sin(angles)[:, None] * k, np.cos(angles)[:, None] * k], axis=-1)


def stack(plane: np.ndarray, n_partitions: int, angles: np.ndarray) -> np.ndarray:
    """3D stack (partition, *plane_dims, 3) of a 2D trajectory ``plane`` (..., 2): Cartesian kz =
    p - n_partitions // 2, the plane rotated by ``angles[p]`` (radians) in partition p."""
    if n_partitions < 1:
        raise InputError("n_partitions", f"need at least one partition, got {n_partitions}")
    c, s = np.cos(angles), np.sin(angles)
    c, s = (a.reshape((n_partitions,) + (1,) * (plane.ndim - 1)) for a in (c, s))
    out = np.empty((n_partitions,) + plane.shape[:-1] + (3,))
    out[..., 0] = (np.arange(n_partitions) - n_partitions // 2).reshape(c.shape)
    out[..., 1] = c * plane[..., 0] + s * plane[..., 1]
    out[..., 2] = -s * plane[..., 0] + c * plane[..., 1]
    return out


def stack_of_stars(
    n_spokes: int, n_readout: int, n_partitions: int, *, matrix: int | None = None, ordering: str = "golden", rotate: bool = True
) -> np.ndarray:
    """3D stack-of-stars (partition, spoke, readout, 3): Cartesian kz, a radial star in each partition.

    ``rotate`` turns the star of partition p by the golden angle times p / n_partitions of a spoke step
    so that neighbouring partitions do not share spokes (incoherent aliasing along z).
    """
    star = radial(n_spokes, n_readout, matrix=matrix, ordering=ordering)
    step = math.pi / GOLDEN_RATIO if ordering != "uniform" else math.pi / n_spokes
    fraction = np.arange(n_partitions) / n_partitions if rotate else np.zeros(n_partitions)
    return stack(star, n_partitions, step * fraction)


def stack_of_spirals(
    n_interleaves: int, n_samples: int, matrix: int, n_partitions: int, *, undersampling: float = 1.0,
    centre_density: float = 1.0, rotate: bool = True,
) -> np.ndarray:
    """3D stack-of-spirals (partition, interleave, sample, 3): Cartesian kz, the variable-density spiral
    of ``spiral`` in each partition; ``rotate`` turns partition p by (p / phi mod 1) of the interleave
    spacing 2 pi / n_interleaves (golden-ratio offsets: no two partitions share interleaves).
    """
    plane = spiral(n_interleaves, n_samples, matrix, undersampling=undersampling, centre_density=centre_density)
    fraction = (np.arange(n_partitions) / GOLDEN_RATIO) % 1.0 if rotate else np.zeros(n_partitions)
    return stack(plane, n_partitions, 2 * math.pi / n_interleaves * fraction)


def radial_3d(n_spokes: int, n_readout: int, *, matrix: int | None = None) -> np.ndarray:
    """3D radial (kooshball) trajectory (spoke, readout, 3) with 2D golden-means directions.

    Directions on the half sphere from the 2D golden means 0.4656, 0.6823 (Chan et al., MRM 61:354,
    2009): cos(polar) = (j * g1) mod 1, azimuth = 2 pi (j * g2) mod 1; each spoke spans the diameter.
    """
    if n_spokes < 1:
        raise InputError("n_spokes", f"need at least one spoke, got {n_spokes}")
    g1, g2 = 0.465571231876768, 0.682327803828019
    j = np.arange(n_spokes, dtype=np.float64)
    cos_polar = (j * g1) % 1.0
    azimuth = 2 * math.pi * ((j * g2) % 1.0)
    sin_polar = np.sqrt(1.0 - cos_polar**2)
    direction = np.stack([cos_polar, sin_polar * np.sin(azimuth), sin_polar * np.cos(azimuth)], axis=-1)
    k = _readout(n_readout, matrix)
    return direction[:, None, :] * k[None, :, None]


def spiral(
    n_interleaves: int, n_samples: int, matrix: int, *, undersampling: float = 1.0, centre_density: float = 1.0
) -> np.ndarray:
    """Variable-density Archimedean spiral (interleave, sample, 2), from the centre out to k = N/2.

    The radial gap between neighbouring turns (all interleaves together) is ``undersampling`` cycles/FOV
    at the edge and ``undersampling / centre_density`` at the centre, linear in radius in between
    (``centre_density`` > 1 oversamples the centre). Samples are evenly spaced in arc length; interleaves
    are rotated copies by 2 pi / n_interleaves.
    """
    if n_interleaves < 1 or n_samples < 2 or matrix < 2:
        raise InputError("spiral", f"need interleaves >= 1, samples >= 2, matrix >= 2; got {n_interleaves}, {n_samples}, {matrix}")
    if undersampling <= 0 or centre_density <= 0:
        raise InputError("spiral", f"undersampling and centre_density must be > 0, got {undersampling}, {centre_density}")
    kmax = matrix / 2
    r = np.linspace(0.0, kmax, 20 * n_samples)
    gap = undersampling * (1.0 / centre_density + (1.0 - 1.0 / centre_density) * r / kmax)
    # One interleave advances by n_interleaves * gap per turn: d(theta)/dr = 2 pi / (n_interleaves * gap).
    dtheta = 2 * math.pi / (n_interleaves * gap)
    theta = np.concatenate([[0.0], np.cumsum(0.5 * (dtheta[1:] + dtheta[:-1]) * np.diff(r))])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(r), r[1:] * np.diff(theta)))])
    s = np.linspace(0.0, arc[-1], n_samples, endpoint=False)
    rs, ts = np.interp(s, arc, r), np.interp(s, arc, theta)
    rot = 2 * math.pi * np.arange(n_interleaves)[:, None] / n_interleaves
    return np.stack([rs * np.sin(ts + rot), rs * np.cos(ts + rot)], axis=-1)
