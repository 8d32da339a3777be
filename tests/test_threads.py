"""Thread budgets (``kernels.threads``) and ``recon`` running batch entries side by side."""
from __future__ import annotations

import dataclasses
import threading

import numba
import numpy as np
import pytest

from mrirecon import sim
from mrirecon.errors import InputError
from mrirecon.kernels.threads import concurrent_kernels_safe, cpu_threads, limit_cpu_threads, parallel_map
from mrirecon.reconstruction import recon


def test_limit_is_thread_local_and_restored():
    before = cpu_threads()
    seen = {}
    with limit_cpu_threads(1) as n:
        assert n == 1 and cpu_threads() == 1 and numba.get_num_threads() == 1
        other = threading.Thread(target=lambda: seen.setdefault("other", cpu_threads()))
        other.start()
        other.join()
    assert seen["other"] == before  # another thread keeps the default budget
    assert cpu_threads() == before


def test_parallel_map_splits_the_budget_and_keeps_order():
    if not concurrent_kernels_safe():
        pytest.skip("Numba's threading layer here cannot run kernels from two threads at once")
    barrier = threading.Barrier(2, timeout=10)

    def probe(k: int) -> tuple[int, int, int, str]:
        barrier.wait()  # both items run at the same time, on two threads
        return k, cpu_threads(), numba.get_num_threads(), threading.current_thread().name

    with limit_cpu_threads(2):
        out = parallel_map(probe, [0, 1])
    assert [o[0] for o in out] == [0, 1]
    assert all(o[1] == 1 and o[2] == 1 for o in out)
    assert out[0][3] != out[1][3]


def test_parallel_map_with_one_thread_runs_in_the_caller():
    with limit_cpu_threads(1):
        names = parallel_map(lambda _: threading.current_thread().name, [0, 1, 2])
    assert names == [threading.current_thread().name] * 3


def test_parallel_map_raises_the_item_error():
    def fail(k: int) -> int:
        if k == 1:
            raise ValueError("item 1 is bad")
        return k

    with limit_cpu_threads(2), pytest.raises(ValueError, match="item 1 is bad"):
        parallel_map(fail, [0, 1, 2])


@pytest.fixture(scope="module")
def two_slices():
    """Two 2D slices of different objects, coil maps and masks stacked as a ``slice`` batch dim."""
    truths, maps, data = [], [], []
    mask = sim.poisson_disc_mask((64, 64), 3, (12, 12), seed=4)
    for k in range(2):
        truth = sim.shepp_logan((64, 64)) * (1.0 + k)
        m = sim.birdcage_maps(4, (64, 64), radius=1.5 + 0.5 * k)
        truths.append(truth)
        maps.append(m)
        data.append(sim.simulate(truth, m, mask, noise_sigma=0.001, seed=k))
    stacked = dataclasses.replace(data[0], data=np.stack([d.data for d in data]), dims=("slice",) + data[0].dims)
    return stacked, np.stack(maps), data


def test_recon_with_per_slice_maps_equals_slice_by_slice(two_slices):
    stacked, maps, singles = two_slices
    params = dict(lam=0.01, max_iter=10, tol=0.0)
    with limit_cpu_threads(2):  # the side-by-side path (when the threading layer allows it)
        together = recon(stacked, "sense", maps=maps, **params).data
    for k, single in enumerate(singles):
        alone = recon(single, "sense", maps=maps[k], **params).data
        np.testing.assert_allclose(together[k], alone, rtol=1e-4, atol=1e-5 * np.abs(alone).max())
    # one set of maps for both slices is another problem: slice 1's own maps must have been used
    shared = recon(stacked, "sense", maps=maps[0], **params).data
    assert np.linalg.norm(shared[1] - together[1]) > 0.05 * np.linalg.norm(together[1])


def test_recon_rejects_per_entry_maps_of_another_batch(two_slices):
    stacked, maps, _ = two_slices
    with pytest.raises(InputError, match="batch dims do not match"):
        recon(stacked, "sense", maps=np.concatenate([maps, maps]), lam=0.01, max_iter=2)


def test_single_blas_thread_is_lifted_by_the_last_of_overlapping_blocks(monkeypatch):
    """Two threads whose blocks overlap (A enters, B enters, A leaves, B leaves): the BLAS limit is set
    once, by A, and lifted once, when B leaves (nested limits would have restored in A's order)."""
    import threadpoolctl

    from mrirecon.kernels.threads import single_blas_thread

    events: list[str] = []

    class Limiter:
        def __init__(self, limits: int, user_api: str):
            events.append(f"limit {limits} {user_api}")

        def restore_original_limits(self) -> None:
            events.append("restore")

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", Limiter)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a() -> None:
        with single_blas_thread():
            a_in.set()
            b_in.wait(10)
        events.append("A left")
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with single_blas_thread():
            b_in.set()
            a_out.wait(10)
        events.append("B left")

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["limit 1 blas", "A left", "restore", "B left"]
