"""NIfTI-1 export of an ``Image`` (nibabel), with the patient geometry carried into the affine.

NIfTI world coordinates are RAS+, DICOM patient coordinates (``Image.affine``) are LPS+, so the
affine's x and y rows are negated. Data are written as (x, y, z[, other dims]) because NIfTI voxel
index i runs along the first axis; qform and sform both hold the affine (code 1, scanner space).
"""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from mrirecon.atomic import atomic_path
from mrirecon.data import Image
from mrirecon.errors import OutputError
from mrirecon.kernels.backend import to_numpy

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SCANNER_CODE = 1


def nifti_suffix(path: Path) -> str:
    """``.nii.gz`` or ``.nii``; ``OutputError`` for any other name."""
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise OutputError(path, "a NIfTI file name must end in .nii or .nii.gz")


def to_nifti_array(image: Image, *, magnitude: bool = True) -> np.ndarray:
    """The image data as (x, y, z-or-slice, remaining batch dims...), float32 magnitude by default."""
    data = to_numpy(image.data)
    dims = image.dims
    spatial = [d for d in ("x", "y", "z") if d in dims]
    if "z" not in dims and "slice" in dims:
        spatial.append("slice")
    rest = [d for d in dims if d not in spatial]
    out = np.transpose(data, [dims.index(d) for d in spatial + rest])
    if len(spatial) == 2:
        out = out[:, :, np.newaxis]
    if magnitude:
        return np.abs(out).astype(np.float32)
    return out.astype(np.complex64 if np.iscomplexobj(out) else np.float32)


def write_nifti(image: Image, path: str | os.PathLike, *, magnitude: bool = True) -> Path:
    """Write ``image`` to ``path`` (.nii or .nii.gz) atomically: temp file in the folder, then rename.

    ``magnitude=False`` keeps complex data as complex64. Raises ``OutputError`` when the file cannot
    be written; no partial file is left behind.
    """
    path = Path(path)
    nifti_suffix(path)  # refuses names that are not .nii / .nii.gz
    affine = LPS_TO_RAS @ image.affine
    nii = nib.Nifti1Image(to_nifti_array(image, magnitude=magnitude), affine)
    nii.set_qform(affine, code=SCANNER_CODE)
    nii.set_sform(affine, code=SCANNER_CODE)
    nii.header.set_xyzt_units(xyz="mm", t="msec")
    with atomic_path(path, "NIfTI") as tmp:
        nib.save(nii, tmp)
    return path

