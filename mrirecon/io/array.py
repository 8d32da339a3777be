"""K-space stored as one plain array with known dim names (``.npy``, BART ``.cfl``).

Such files carry no header: matrices come from the array shape, geometry is the default, and the
sampling mask is read off the samples (exact zeros in every coil mean "not acquired").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import SPATIAL_KDIMS, Geometry, KSpace, KSpaceHeader
from ..errors import InputError
from .base import Layout, RawFile, mask_from_samples


class ArrayFile(RawFile):
    """A raw file whose k-space is ``array`` (a memory map where possible) with canonical ``dims``.

    2D k-space without a ``slice`` dim gets a leading ``slice`` axis of size 1, as every reader gives.
    """

    def __init__(self, path: Path, array: np.ndarray, dims: tuple[str, ...], notes: list[str]) -> None:
        super().__init__(path)
        if array.dtype.kind != "c":
            raise InputError(self.path, f"k-space array has dtype {array.dtype}; expected complex")
        if "kz" not in dims and "slice" not in dims:
            array, dims = array[None], ("slice", *dims)
        if 0 in array.shape:
            zero = [d for d, n in zip(dims, array.shape) if n == 0]
            what = "zero coils" if zero == ["coil"] else f"empty axes {zero}"
            raise InputError(self.path, f"k-space array has {what} (shape {array.shape})")
        self._array = array
        self._dims = dims
        self._notes = ["no header: FOV, geometry and sequence parameters unknown (1 mm voxels at the isocentre assumed)", *notes]

    def _layout(self) -> Layout:
        return Layout(dims=self._dims, shape=tuple(self._array.shape), uninterpreted=list(self._notes))

    def _header(self) -> KSpaceHeader:
        spatial = [self._array.shape[self._dims.index(d)] for d in self._dims if d in SPATIAL_KDIMS]
        matrix = tuple([1] * (3 - len(spatial)) + spatial)
        # Unknown FOV: assume 1 mm voxels so that images keep their aspect ratio in viewers.
        geometry = Geometry(fov_mm=tuple(float(n) for n in matrix))
        return KSpaceHeader(
            encoded_matrix=matrix,
            recon_matrix=matrix,
            kspace_centre=tuple(n // 2 for n in matrix),
            geometry=geometry,
        )

    def _load(self, slices: np.ndarray | None, include_ignored: bool) -> KSpace:
        array = self._array
        if slices is not None and "slice" in self._dims:
            array = np.take(array, slices, axis=self._dims.index("slice"))
        try:
            data = np.array(array, dtype=np.complex64)
        except (OSError, ValueError) as exc:
            raise InputError(self.path, f"cannot read the k-space samples ({exc})") from None
        n_spatial = sum(d in SPATIAL_KDIMS for d in self._dims)
        return KSpace(data=data, dims=self._dims, header=self._header(), mask=mask_from_samples(data, n_spatial))
