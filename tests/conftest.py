"""Shared fixtures: real-data location (skip when absent) and GPU gating."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mrirecon.kernels.backend import gpu_available

REPO = Path(__file__).resolve().parents[1]
SHARED_RAW = Path(os.environ.get("MRIRECON_SHARED_RAW", REPO.parent / "shared" / "data" / "raw"))


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests cleanly when no CUDA GPU with CuPy is present."""
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU with CuPy on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_raw() -> Path:
    """../shared/data/raw, or skip: a user's clone does not have it."""
    if not SHARED_RAW.is_dir():
        pytest.skip(f"real scanner data not present at {SHARED_RAW}")
    return SHARED_RAW


@pytest.fixture(scope="session")
def brain_8ch(shared_raw) -> np.ndarray:
    """The real 8-channel Poisson-undersampled brain, (coil, ky, kx) complex64."""
    return np.load(shared_raw / "sigpy-brain-8ch" / "cartesian_ksp.npy")


@pytest.fixture(scope="session")
def phantom_r4():
    """128x128 Shepp-Logan, 8 birdcage coils, Poisson disc R=4 with a 24x24 centre, noise sigma 5e-3.

    Returns (image, maps, ksp).
    """
    from mrirecon import sim

    shape = (128, 128)
    image = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(8, shape)
    ksp = sim.simulate(image, maps, sim.poisson_disc_mask(shape, 4, 24, seed=0), noise_sigma=5e-3, seed=1)
    return image, maps, ksp


@pytest.fixture(scope="session")
def phantom_3d_r3():
    """16x32x32 Shepp-Logan, 8 birdcage coils, Poisson disc R=3 with a 12x12 centre over (kz, ky), full
    kx, noise sigma 1e-3. Returns (image, maps, ksp)."""
    from mrirecon import sim

    shape = (16, 32, 32)
    image = sim.shepp_logan(shape)
    maps = sim.birdcage_maps(8, shape)
    mask = sim.poisson_disc_mask(shape[:2], 3, (12, 12), seed=0)[:, :, None]
    return image, maps, sim.simulate(image, maps, mask, noise_sigma=1e-3, seed=2)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


from pacs_fixtures import orthanc, pacs, recon_store  # noqa: E402,F401  (DICOM export / PACS tests)


@pytest.fixture(scope="session")
def midtone_fraction():
    """Function: PNG bytes -> fraction of pixels with grey level in (10, 245). A figure whose panels show
    an image has many mid-tones (measured >= 0.16); a blank one, only antialiased text (< 0.005)."""
    import io

    from PIL import Image as PILImage

    def fraction(png: bytes) -> float:
        grey = np.asarray(PILImage.open(io.BytesIO(png)).convert("L"))
        return float(((grey > 10) & (grey < 245)).mean())

    return fraction


from pacs_fixtures import orthanc_tls  # noqa: F401  (DICOMweb over TLS)
