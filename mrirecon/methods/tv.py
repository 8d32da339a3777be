"""Total-variation compressed sensing on the SENSE model, 2D or 3D, solved by PDHG (Chambolle-Pock).

Problem: ``min_x ||M F S x - y||^2 / 2 + lam_abs ||G x||_1`` with ``G`` periodic finite differences
along every spatial axis (``M F`` is the NUFFT for k-space with a trajectory); anisotropic (each difference shrinks on its own, as SigPy's
``TotalVariationRecon``) or isotropic (the gradient vector at a voxel shrinks as one).
PDHG splits both terms through their conjugates, so no inner solve is needed: per iteration one
``A``, one ``A^H``, one ``G`` and one ``G^H``. The dual steps are balanced per block (the data and the
differences), which converges far faster than one step for both (measured in ``tv``'s docstring).
"""
from __future__ import annotations

from typing import Any

from ..data import KSpace
from ..errors import InputError
from ..finite_difference import FiniteDifference
from ..kernels.backend import get_array_module
from ..linop import CartesianSense
from ..prox import prox_l2_conjugate
from ..solvers import pdhg
from . import register
from .l1wavelet import absolute_weight, inverse_lipschitz, sense_model
from .params import CoilMapParams


@register(
    "tv",
    summary="Total-variation compressed sensing on the SENSE model (ESPIRiT, Walsh or Inati maps), PDHG",
    reference="Block, Uecker, Frahm, MRM 57:1086 (2007); Chambolle & Pock, J Math Imaging Vis 40:120 (2011)",
)
def tv(
    ksp: KSpace,
    *,
    lam: float = 0.002,
    relative: bool = True,
    max_iter: int = 100,
    isotropic: bool = False,
    step_ratio: float = 10.0,
    power_iter: int = 30,
    coils: CoilMapParams = CoilMapParams(),
) -> Any:
    """Total-variation image (*spatial), 2D or 3D, Cartesian (any undersampling) or non-Cartesian.

    Minimises ||A S x - y||^2 / 2 + lam_abs ||G x||_1 (the 1/2 as in SigPy, so lam means the same).
    Steps: G counts as G / ||G|| (||G||^2 <= 4 ndim), the dual steps are 1 / step_ratio (data) and
    1 / (step_ratio 4 ndim) (differences), tau = step_ratio / lambda_max(A^H A + G^H G / (4 ndim)).

    lam: TV weight relative to the data: lam_abs = lam * max|A^H y| (A^H y is the coil-combined
        zero-filled image, so the same lam suits any k-space scaling).
    relative: False uses lam as the absolute weight lam_abs (e.g. to match another package).
    max_iter: PDHG iterations.
    isotropic: True couples the differences of a voxel (isotropic TV); False shrinks each alone.
    step_ratio: primal over dual step (tau / sigma, G normalised): larger moves the image faster.
        With 10, 60 iterations reach NRMSE 0.015 on the 2D R=4 phantom at lam 0.003 (SigPy's steps,
        sigma = 1 and G unnormalised: 0.18) and come within 1.5 % of the converged real brain at
        lam_abs 0.005 (SigPy's steps: 3.6 % after 100).
    power_iter: power iterations on A^H A + G^H G / (4 ndim) for the primal step.
    coils: coil maps: maps, coil_maps, calib, kernel, thresh, crop (``CoilMapParams``).
    """
    a, y = sense_model(ksp, "tv", coils)
    xp = get_array_module(y)
    g = FiniteDifference(a.ishape)
    lam_abs = absolute_weight(lam, relative, a.H(y) if relative else None)
    if step_ratio <= 0:
        raise InputError(None, f"step_ratio must be > 0, got {step_ratio}")
    g_norm2 = 4.0 * len(a.ishape)
    normal_a, normal_g = a.N, g.N
    tau = step_ratio * inverse_lipschitz(lambda v: normal_a(v) + normal_g(v) / g_norm2, a.ishape, xp, power_iter)
    group = 0 if isotropic else None
    # fused dual blocks (one pass per step, see pdhg) where the operator has one, else operator + prox
    if isinstance(a, CartesianSense):
        data, data_prox = a.l2_dual(y), None
    else:
        data, data_prox = a, lambda s, v: prox_l2_conjugate(s, v, y)
    return pdhg(
        [data, g.linf_dual(lam_abs, group)],
        [data_prox, None],
        xp.zeros(a.ishape, dtype=xp.complex64),
        tau,
        sigma=(1 / step_ratio, 1 / (step_ratio * g_norm2)),
        max_iter=max_iter,
    )
