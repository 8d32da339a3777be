"""Realistic brain object from the MNI ICBM152 2009 template (T1 + grey/white-matter maps).

Tissue fractions (GM and WM from the template, CSF = the rest of the brain volume: ventricles and
sulci) are mixed with per-tissue signal levels of a chosen contrast, given a smooth phase, and
resampled onto the requested grid with scipy.ndimage. Arrays are held as (z, y, x) with x towards
patient left, y towards posterior and z towards superior (DICOM LPS), so row 0 of an axial slice
is anterior.
"""
from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

from ..errors import InputError
from .phantom import grid_coordinates

#: Field of view (mm, every axis) that ``brain`` maps onto its output grid: the whole head fits.
BRAIN_FOV_MM = 240.0

SAMPLE_FILE = "mni152_2mm.npz"
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# The reduced template ships in the wheel as package data beside this module (pyproject maps
# ``mrirecon.sim.mni152`` to ``sample_data/mni152``); a source checkout or editable install reads it there.
_PACKAGE_DIR = Path(__file__).resolve().parent / "mni152"
SHIPPED_DIR = _PACKAGE_DIR if _PACKAGE_DIR.is_dir() else Path(__file__).resolve().parents[2] / "sample_data" / "mni152"

# Relative signal of (grey matter, white matter, CSF) per contrast; the orderings follow the
# textbook appearance at 1.5-3 T (T1w: WM > GM > CSF; T2w: CSF > GM > WM; PD: CSF > GM > WM).
CONTRASTS: dict[str, tuple[float, float, float]] = {
    "t1": (0.55, 0.85, 0.15),
    "t2": (0.60, 0.45, 1.00),
    "pd": (0.85, 0.70, 0.95),
}


def shared_template_dir() -> Path:
    """The full-resolution template in the shared raw-data folder (``MRIRECON_SHARED_RAW`` overrides)."""
    raw = os.environ.get("MRIRECON_SHARED_RAW")
    root = Path(raw) if raw else Path(__file__).resolve().parents[3] / "shared" / "data" / "raw"
    return root / "mni152-nilearn"


def _has_template(folder: Path) -> bool:
    return (folder / SAMPLE_FILE).is_file() or all((folder / f).is_file() for f in TEMPLATE_FILES.values())


def find_template_dir(template_dir: str | os.PathLike | None = None) -> Path:
    """Where the template is: ``template_dir`` if given, else the shipped copy, else the shared one.

    Raises ``InputError`` naming every place that was looked at when none holds the template.
    """
    candidates = [Path(template_dir)] if template_dir is not None else [SHIPPED_DIR, shared_template_dir()]
    for folder in candidates:
        if _has_template(folder):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise InputError(
        looked,
        f"no MNI152 template found (need {SAMPLE_FILE} or the three nilearn .nii.gz files); "
        "run scripts/make_mni_sample.py or pass template_dir",
    )


def read_template_lps(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], float]:
    """The T1/GM/WM maps (uint8, (z, y, x) in LPS order) and their isotropic voxel size in mm.

    Reads the reduced ``SAMPLE_FILE`` when the folder has one, else the nilearn NIfTI files
    (any orientation; non-uint8 maps are rescaled to 0-255).
    """
    folder = Path(folder)
    if (folder / SAMPLE_FILE).is_file():
        try:
            with np.load(folder / SAMPLE_FILE) as f:
                return {k: f[k] for k in TEMPLATE_FILES}, float(f["voxel_mm"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise InputError(folder / SAMPLE_FILE, f"not a reduced MNI152 template ({exc})") from exc
    import nibabel as nib  # only this fallback needs it; keeps ``import mrirecon.sim`` light

    maps = {}
    voxel = 1.0
    for key, name in TEMPLATE_FILES.items():
        try:
            img = nib.load(folder / name)
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as exc:  # nibabel raises many types for damaged files
            raise InputError(folder / name, f"cannot read template map: {exc}") from exc
        to_lps = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "P", "S"))
        )
        if img.get_data_dtype() != np.uint8:
            data = 255 * data / max(float(data.max()), 1e-12)
        # (x, y, z) in LPS -> (z, y, x), the array order of mrirecon images.
        lps = nib.orientations.apply_orientation(data, to_lps).T
        maps[key] = np.ascontiguousarray(np.clip(np.round(lps), 0, 255).astype(np.uint8))
        voxel = float(np.mean(img.header.get_zooms()[:3]))
    return maps, voxel


@functools.lru_cache(maxsize=2)
def _tissues(folder: Path) -> tuple[dict[str, np.ndarray], float]:
    """Tissue fractions in [0, 1] (float32, template grid): gm, wm, csf.

    The nilearn T1 map is skull-stripped, so the object is the brain alone (no scalp signal); the
    T1 map serves only as the brain outline.
    """
    maps, voxel = read_template_lps(folder)
    gm = maps["gm"].astype(np.float32) / 255
    wm = maps["wm"].astype(np.float32) / 255
    # The skull-stripped T1 map outlines the brain (sulcal CSF included); CSF = what GM and WM leave.
    brain_mask = ndi.binary_fill_holes(maps["t1"] > 0)
    csf = np.where(brain_mask, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    return {"gm": gm, "wm": wm, "csf": csf}, voxel


def _axial_plane(volume: np.ndarray, slice_position: float) -> np.ndarray:
    """The (y, x) plane at ``slice_position`` (fraction inferior -> superior), linear in z."""
    z = slice_position * (volume.shape[0] - 1)
    lo = min(int(np.floor(z)), volume.shape[0] - 2)
    t = z - lo
    return (1 - t) * volume[lo] + t * volume[lo + 1]


def _resample(volume: np.ndarray, shape: tuple[int, ...], voxel: float) -> np.ndarray:
    """Resample onto ``shape`` covering ``BRAIN_FOV_MM`` per axis, centred on the template.

    Smooths first where the output grid is coarser than the template so that thin structures do
    not alias.
    """
    step = np.array([BRAIN_FOV_MM / n / voxel for n in shape])
    sigma = np.maximum(step - 1.0, 0.0) / 2.0
    if sigma.any():
        volume = ndi.gaussian_filter(volume, sigma)
    grids = [(nt - 1) / 2.0 + (np.arange(n) - n // 2) * st for n, nt, st in zip(shape, volume.shape, step)]
    points = np.stack(np.meshgrid(*grids, indexing="ij"))
    return ndi.map_coordinates(volume, points, order=1, mode="constant", cval=0.0)


def _smooth_phase(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth phase map (radians): low-order polynomial, within about ±1 rad over the FOV."""
    coords = np.meshgrid(*grid_coordinates(shape), indexing="ij")
    y, x = coords[-2], coords[-1]
    z = coords[0] if len(shape) == 3 else 0.0
    return 0.5 * x - 0.3 * y + 0.4 * x * y - 0.3 * (x**2 + y**2) + 0.2 * z


def brain(
    shape: Sequence[int],
    *,
    template_dir: str | os.PathLike | None = None,
    slice_position: float = 0.5,
    contrast: str = "t1",
) -> np.ndarray:
    """Complex brain object (complex64, magnitude in [0, 1]): one axial slice (ny, nx) or a volume (nz, ny, nx).

    ``slice_position`` (2D) picks the axial slice as a fraction from the inferior (0) to the
    superior (1) end of the template; ``contrast`` is ``"t1"``, ``"t2"`` or ``"pd"``. The object
    fills a ``BRAIN_FOV_MM`` field of view on every axis.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError("brain", f"shape must be 2D (ny, nx) or 3D (nz, ny, nx) with positive sizes, got {shape}")
    if not 0.0 <= slice_position <= 1.0:
        raise InputError("slice_position", f"must lie in [0, 1], got {slice_position}")
    if contrast not in CONTRASTS:
        raise InputError("contrast", f"unknown contrast {contrast!r}; choose from {sorted(CONTRASTS)}")
    tissues, voxel = _tissues(find_template_dir(template_dir))
    magnitude = np.zeros(shape, dtype=np.float32)
    for key, weight in zip(("gm", "wm", "csf"), CONTRASTS[contrast]):
        volume = tissues[key] if len(shape) == 3 else _axial_plane(tissues[key], slice_position)
        magnitude += weight * _resample(volume, shape, voxel)
    magnitude = np.clip(magnitude, 0.0, 1.0)
    return (magnitude * np.exp(1j * _smooth_phase(shape))).astype(np.complex64)
