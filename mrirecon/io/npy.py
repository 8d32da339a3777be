"""NumPy ``.npy`` k-space: a complex array whose dim names come from a hint or from its rank."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .array import ArrayFile
from .base import canonical_dims

DEFAULT_DIMS = {3: ("coil", "ky", "kx"), 4: ("slice", "coil", "ky", "kx")}


class NpyFile(ArrayFile):
    """A ``.npy`` file, memory-mapped so that a slice selection reads only those slices."""

    format = "npy"

    def __init__(self, path: Path, dims: Sequence[str] | None = None) -> None:
        path = Path(path)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(path, f"not a readable .npy array ({exc})") from None
        if not isinstance(array, np.ndarray):
            raise InputError(path, "holds an .npz archive, expected a single .npy array")
        if dims is None:
            if array.ndim not in DEFAULT_DIMS:
                raise InputError(path, f"array has {array.ndim} axes {array.shape}: give dims=..., e.g. "
                                       "('coil', 'kz', 'ky', 'kx')")
            dims = DEFAULT_DIMS[array.ndim]
        if len(dims) != array.ndim:
            raise InputError(path, f"dims {tuple(dims)} do not match the array's {array.ndim} axes {array.shape}")
        ordered, order = canonical_dims(dims, path)
        super().__init__(path, np.transpose(array, order), ordered, [])
