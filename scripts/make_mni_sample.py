"""Make the reduced MNI152 template shipped in sample_data/mni152/ (2 mm isotropic, uint8 npz).

Reads the full 1 mm nilearn copy (default: the shared raw-data folder), averages 2x2x2 blocks,
stores T1/GM/WM as (z, y, x) arrays in LPS order (what ``mrirecon.sim.brain()`` reads) and copies
the template's licence and citation notice next to it.

    .venv/bin/python scripts/make_mni_sample.py [--source DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from mrirecon.sim.mni import SAMPLE_FILE, SHIPPED_DIR, TEMPLATE_FILES, read_template_lps, shared_template_dir

FACTOR = 2  # block size: 1 mm -> 2 mm

LICENSE_TEXT = """# MNI ICBM152 2009 template (reduced copy)

`{sample}` holds the T1-weighted, grey-matter and white-matter maps of the MNI ICBM152 2009
nonlinear symmetric template (version 09a, as re-encoded to uint8 by nilearn 0.14.1), averaged over
2x2x2 blocks to 2 mm isotropic and stored as (z, y, x) arrays in LPS order. It was made by
`scripts/make_mni_sample.py` from these files (sha256 of the 1 mm originals):

{checksums}

## Licence of the template

Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological
Institute, McGill University. Permission to use, copy, modify, and distribute this software and its
documentation for any purpose and without fee is hereby granted, provided that the above copyright
notice appear in all copies. The authors and McGill University make no representations about the
suitability of this software for any purpose. It is provided "as is" without express or implied
warranty.

The files came from the nilearn wheel (nilearn: BSD 3-Clause, "Copyright (c) The nilearn developers").

## Citation

Fonov VS et al. Unbiased average age-appropriate atlases for pediatric studies.
NeuroImage 54(1), 2011. doi:10.1016/j.neuroimage.2010.07.033
"""


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``^3 blocks (edge-padded to a multiple of ``factor``), rounded to uint8."""
    pad = [(0, (-n) % factor) for n in volume.shape]
    v = np.pad(volume.astype(np.float32), pad, mode="edge")
    nz, ny, nx = (n // factor for n in v.shape)
    v = v.reshape(nz, factor, ny, factor, nx, factor).mean(axis=(1, 3, 5))
    return np.clip(np.round(v), 0, 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=shared_template_dir(), help="folder with the nilearn .nii.gz files"
    )
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR, help="output folder")
    args = parser.parse_args()
    maps, voxel = read_template_lps(args.source)
    reduced = {key: block_mean(maps[key], FACTOR) for key in TEMPLATE_FILES}
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / SAMPLE_FILE, voxel_mm=np.float32(voxel * FACTOR), **reduced)
    checksums = "\n".join(
        f"- `{name}` `{hashlib.sha256((args.source / name).read_bytes()).hexdigest()}`"
        for name in TEMPLATE_FILES.values()
    )
    (args.out / "LICENSE.md").write_text(LICENSE_TEXT.format(sample=SAMPLE_FILE, checksums=checksums))
    size = (args.out / SAMPLE_FILE).stat().st_size
    print(f"wrote {args.out / SAMPLE_FILE} ({size / 1e6:.2f} MB, shape {reduced['t1'].shape}, {voxel * FACTOR:g} mm)")


if __name__ == "__main__":
    main()
