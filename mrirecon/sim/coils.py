"""Birdcage-style receive coil sensitivities: smooth, complex, one coil per rung position.

Each coil is a short conductor parallel to z at angle ``theta_c`` on a circle of ``radius`` (in the
normalised grid units of ``phantom.grid_coordinates``, where the object spans [-1, 1)). Its
sensitivity follows the quasi-static field of a line current, B_x - i B_y ~ 1 / (x + i y) in the
plane of the coil, with a 1/distance² fall-off along z for 3D ring arrays.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .phantom import grid_coordinates


def _coil_positions(n_coils: int, n_rings: int) -> list[tuple[float, float]]:
    """(angle, z) of every coil: ``n_coils // n_rings`` per ring, rings evenly spread in z.

    Successive rings are rotated by half a coil spacing so that no two coils line up in z.
    """
    per_ring = n_coils // n_rings
    positions = []
    for ring in range(n_rings):
        z = -1.0 + (2 * ring + 1) / n_rings
        for c in range(per_ring):
            positions.append((2 * np.pi * (c + 0.5 * ring) / per_ring, z))
    return positions


def birdcage_maps(
    n_coils: int,
    shape: Sequence[int],
    *,
    radius: float = 1.5,
    n_rings: int | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """Coil sensitivities (n_coils, *shape), complex64, for a 2D (ny, nx) or 3D (nz, ny, nx) grid.

    ``n_rings`` (3D only; default 2 rings when ``n_coils`` is even and >= 8, else 1) splits the
    coils into rings along z. With ``normalize`` the maps are scaled so that sum_c |S_c|^2 = 1 at
    every voxel (SENSE then reduces to a coil combination with unit gain).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError("birdcage_maps", f"shape must be 2D (ny, nx) or 3D (nz, ny, nx), got {shape}")
    if n_coils < 1:
        raise InputError("n_coils", f"need at least one coil, got {n_coils}")
    if not radius > np.sqrt(2.0):
        # The grid's corners lie at sqrt(2): a coil inside would put a singularity in the image.
        raise InputError("radius", f"radius {radius} must exceed sqrt(2) to keep the coils outside the grid")
    if n_rings is None:
        n_rings = 2 if len(shape) == 3 and n_coils >= 8 and n_coils % 2 == 0 else 1
    if n_rings < 1 or n_coils % n_rings or (len(shape) == 2 and n_rings != 1):
        raise InputError("n_rings", f"{n_rings} rings cannot hold {n_coils} coils on a {len(shape)}D grid")
    coords = grid_coordinates(shape)
    # Rows run from y = +1 downwards (see phantom.py); a 2D grid has no z.
    if len(shape) == 2:
        z, y, x = None, -coords[0][:, None], coords[1][None, :]
    else:
        z, y, x = coords[0][:, None, None], -coords[1][None, :, None], coords[2][None, None, :]
    maps = np.empty((n_coils, *shape), dtype=np.complex128)
    for c, (theta, zc) in enumerate(_coil_positions(n_coils, n_rings)):
        d = (x - radius * np.cos(theta)) + 1j * (y - radius * np.sin(theta))
        dz2 = 0.0 if z is None else (z - zc) ** 2
        # conj(d) / |d|^2 equals 1/d in the coil plane; off-plane the distance includes dz.
        maps[c] = np.exp(1j * theta) * np.conj(d) / (np.abs(d) ** 2 + dz2)
    if normalize:
        maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return maps.astype(np.complex64)
