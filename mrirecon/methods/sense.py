"""CG-SENSE on ESPIRiT, Walsh or Inati coil maps: min_x ||M F S x - y||^2 + lam_abs ||x||^2, solved by conjugate gradients."""
from __future__ import annotations

from typing import Any

from ..coils import max_coil_power, sampled_mask, task_maps
from ..data import KSpace
from ..kernels.backend import get_array_module
from ..linop import CartesianSense, SenseNormal
from ..solvers import conjugate_gradient
from . import register, register_batch, require_cartesian
from .params import CoilMapParams


@register(
    "sense",
    summary="CG-SENSE with ESPIRiT, Walsh or Inati coil maps (Tikhonov-regularised least squares)",
    reference="Pruessmann et al., MRM 46:638 (2001); Uecker et al., MRM 71:990 (2014); Walsh et al., MRM 43:682 (2000)",
)
def sense(
    ksp: KSpace,
    *,
    lam: float = 0.01,
    max_iter: int = 30,
    tol: float = 1e-4,
    coils: CoilMapParams = CoilMapParams(),
) -> Any:
    """SENSE image (*spatial), 2D or 3D Cartesian, any undersampling pattern.

    Without a mask, samples that are zero in every coil count as not acquired.

    lam: Tikhonov weight relative to the data: the absolute weight is lam * max_r sum_c |S_c(r)|^2,
        the bound of the largest eigenvalue of A^H A (1 for ESPIRiT maps).
    max_iter: conjugate-gradient iterations.
    tol: stop early when the CG residual falls below tol * ||A^H y||.
    coils: coil maps: maps, coil_maps, calib, kernel, thresh, crop (``CoilMapParams``).
    """
    y, maps, mask = _prepare(ksp, coils)
    return _cg_sense(y, maps, mask, lam * max_coil_power(maps), max_iter, tol)


@register_batch("sense")
def sense_batch(tasks: list[KSpace], params: list[dict[str, Any]]) -> Any:
    """``sense`` on every task as one batched CG (images (n, *spatial)): one set of operator calls and no
    host round trip per iteration for all tasks, instead of one solve per task (on a GPU, 160 slices of
    8x256x256 make each kernel too small to hide its launch). Maps and masks per task (given or estimated
    as ``sense`` does), the Tikhonov weight scaled per task; ``lam``, ``max_iter`` and ``tol`` must agree.
    Each image equals ``sense`` on its task (CG freezes each system at its own tolerance).
    """
    solver = {(p["lam"], p["max_iter"], p["tol"]) for p in params}
    if len(solver) != 1:
        raise ValueError(f"sense_batch: the tasks' lam, max_iter and tol differ: {sorted(solver)}")
    (lam, max_iter, tol), = solver
    prepared = [_prepare(task, p["coils"]) for task, p in zip(tasks, params)]
    xp = get_array_module(prepared[0][0])
    y, maps, mask = (xp.stack([entry[i] for entry in prepared]) for i in range(3))
    del prepared  # the per-task maps (a coil-sized array each) are stacked now
    lam_abs = (lam * max_coil_power(maps, batch_ndim=1)).astype(xp.float32)
    return _cg_sense(y, maps, mask, lam_abs.reshape((-1,) + (1,) * (y.ndim - 2)), max_iter, tol, batch_ndim=1)


def _prepare(ksp: KSpace, coils: CoilMapParams) -> tuple[Any, Any, Any]:
    """One task's k-space (coil, *spatial), coil maps (given or estimated) and sampling mask (*spatial)."""
    require_cartesian(ksp, "sense")
    maps = task_maps(ksp, coils, "sense")
    return ksp.data, maps, sampled_mask(ksp.data, ksp.mask)


def _cg_sense(y, maps, mask, lam_abs, max_iter: int, tol: float, batch_ndim: int = 0) -> Any:
    """CG on ``(A^H A + lam_abs) x = A^H y`` with ``A = CartesianSense(maps, mask)``: the centred image(s).

    ``batch_ndim``: leading axes of independent problems (``lam_abs`` a float or one per problem).
    """
    a = CartesianSense(maps, mask, batch_ndim)
    # CG runs where the FFT centring is folded into maps and mask (no shift copies per iteration)
    normal = SenseNormal.of(a, lam_abs)  # shares the model's folded maps and coil buffer
    rhs = normal.uncentre(a.H(y))
    return normal.centre(conjugate_gradient(normal, rhs, max_iter=max_iter, tol=tol, batch_ndim=batch_ndim))
