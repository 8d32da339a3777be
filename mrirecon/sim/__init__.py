"""Phantoms and simulated acquisitions: ground-truth objects, coil maps, masks, noise, k-space.

    from mrirecon import sim
    img = sim.shepp_logan((256, 256))
    maps = sim.birdcage_maps(8, img.shape)
    ksp = sim.simulate(img, maps, sim.poisson_disc_mask(img.shape, 4), noise_sigma=1e-3)
"""
from .acquire import SIMULATED_PATIENT, add_noise, complex_noise, simulate
from .coils import birdcage_maps
from .masks import equispaced_mask, poisson_disc_mask, variable_density_mask
from .mni import BRAIN_FOV_MM, brain
from .phantom import shepp_logan
from .trajectories import radial, radial_3d, spiral, spoke_angles, stack_of_spirals, stack_of_stars

__all__ = [
    "BRAIN_FOV_MM",
    "SIMULATED_PATIENT",
    "add_noise",
    "birdcage_maps",
    "brain",
    "complex_noise",
    "equispaced_mask",
    "poisson_disc_mask",
    "radial",
    "radial_3d",
    "shepp_logan",
    "simulate",
    "spiral",
    "spoke_angles",
    "stack_of_spirals",
    "stack_of_stars",
    "variable_density_mask",
]
