"""Batched CG-SENSE: ``recon`` of k-space with batch dims as one batched solve (the GPU default) equals
the per-entry solves, for maps given per entry, shared, or estimated per entry by ESPIRiT."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mrirecon import methods, sim
from mrirecon.reconstruction import recon

SHAPE = (48, 40)
N_SLICES = 3


@pytest.fixture(scope="module")
def slices():
    """Three 4-coil slices, each with its own object scale, coil phase and Poisson-disc mask (a 16x16
    centre for ESPIRiT); a zero-filled mask per slice, so each entry has its own sampling. Returns
    (ksp with dims ("slice", "coil", "ky", "kx"), maps (slice, coil, ky, kx))."""
    maps = np.stack([sim.birdcage_maps(4, SHAPE) * np.exp(0.7j * k) for k in range(N_SLICES)]).astype(np.complex64)
    tasks = [
        sim.simulate(sim.shepp_logan(SHAPE) * (k + 1), maps[k], sim.poisson_disc_mask(SHAPE, 2.5, 16, seed=k),
                     noise_sigma=1e-3, seed=k)
        for k in range(N_SLICES)
    ]
    ksp = dataclasses.replace(tasks[0], data=np.stack([t.data for t in tasks]), dims=("slice",) + tasks[0].dims)
    return ksp, maps


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("maps_kind", ["per_entry", "shared", "espirit"])
@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_batched_recon_equals_per_entry_recon(slices, maps_kind, tol):
    ksp, maps = slices
    params = {"per_entry": {"maps": maps}, "shared": {"maps": maps[0]}, "espirit": {"calib": 16}}[maps_kind]
    per_entry = recon(ksp, "sense", batched=False, lam=0.01, max_iter=15, tol=tol, **params)
    batched = recon(ksp, "sense", batched=True, lam=0.01, max_iter=15, tol=tol, **params)
    assert batched.data.shape == (N_SLICES,) + SHAPE and batched.dims == per_entry.dims
    # measured <= 2.0e-6 (complex64: batched FFTs round slightly differently); a wrong entry gives O(1)
    assert _relative_error(batched.data, per_entry.data) < 1e-4
    for k in range(N_SLICES):  # and each entry is recon of that slice alone
        task = ksp.select(slice=k)
        single_params = {**params, "maps": maps[k]} if maps_kind == "per_entry" else params
        alone = recon(task, "sense", lam=0.01, max_iter=15, tol=tol, **single_params).data
        assert _relative_error(batched.data[k], alone) < 1e-4


def test_batched_recon_crops_and_compresses_like_per_entry(slices):
    """Coil compression per entry (the given maps go through each entry's matrix) and the recon-matrix crop."""
    ksp, maps = slices
    ksp = dataclasses.replace(ksp, header=dataclasses.replace(ksp.header, recon_matrix=(1, 32, 40)))
    options = {"maps": maps, "coil_compression": 3, "lam": 0.02, "max_iter": 10, "tol": 0.0}
    per_entry = recon(ksp, "sense", batched=False, **options).data
    batched = recon(ksp, "sense", batched=True, **options).data
    assert batched.shape == (N_SLICES, 32, 40)
    assert _relative_error(batched, per_entry) < 1e-4


def test_batched_switch_and_registry(slices, monkeypatch):
    """``batched=None`` keeps the CPU's side-by-side entries, ``True`` runs the method's batched form;
    the batched form gets every entry's parameters with groups gathered; differing solver settings fail."""
    ksp, maps = slices
    info = methods.get_method("sense")
    assert info.batch_fn is not None and methods.get_method("zerofill").batch_fn is None
    seen = []

    def spy(tasks, params):
        seen.append((len(tasks), params))
        return info.batch_fn(tasks, params)

    monkeypatch.setitem(methods._REGISTRY, "sense", dataclasses.replace(info, batch_fn=spy))
    recon(ksp, "sense", maps=maps, max_iter=3)
    assert seen == []
    recon(ksp, "sense", batched=True, maps=maps, max_iter=3)
    (count, params), = seen
    assert count == N_SLICES and params[1]["max_iter"] == 3
    np.testing.assert_array_equal(params[1]["coils"].maps, maps[1])
    recon(ksp.select(slice=0), "sense", batched=True, maps=maps[0], max_iter=3)  # one entry: no batch
    assert len(seen) == 1
    tasks = [ksp.select(slice=k) for k in range(2)]
    with pytest.raises(ValueError, match="differ"):
        info.solve_batch(tasks, [{"maps": maps[k], "lam": 0.01 * (k + 1)} for k in range(2)])
    images = info.solve_batch(tasks, [{"maps": maps[k], "max_iter": 3} for k in range(2)])
    np.testing.assert_allclose(images[1], info(tasks[1], maps=maps[1], max_iter=3), rtol=0, atol=1e-5 * np.abs(images[1]).max())


@pytest.mark.gpu
@pytest.mark.parametrize("maps_kind", ["per_entry", "espirit"])
def test_gpu_batched_recon_equals_cpu_per_entry(slices, maps_kind):
    import cupy as cp

    ksp, maps = slices
    params = {"per_entry": {"maps": maps}, "espirit": {"calib": 16}}[maps_kind]
    cpu = recon(ksp, "sense", device="cpu", batched=False, max_iter=15, **params).data
    gpu_params = {"maps": cp.asarray(maps)} if maps_kind == "per_entry" else params
    gpu = recon(ksp.to("cuda"), "sense", device="cuda", max_iter=15, **gpu_params)  # batched: the GPU default
    assert isinstance(gpu.data, cp.ndarray)
    assert _relative_error(cp.asnumpy(gpu.data), cpu) < 1e-4  # complex64 FFTs and reductions in other orders
