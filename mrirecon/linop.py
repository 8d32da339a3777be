"""A small linear-operator algebra: ``A(x)``, ``A.H``, ``A.N``, ``A @ B``, ``a * A``, ``A + B``.

Shapes are checked on every call so that a mismatch fails with the operator's name, not deep in NumPy.
Operators work on NumPy or CuPy arrays alike (the array decides).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .kernels.backend import get_array_module
from .kernels.coil import apply_weight, sense_combine, sense_expand
from .kernels.fft import checkerboard, fft_uncentred, fftc, ifftc
from .kernels.fused import l2_dual_update

Shape = tuple[int, ...]


class LinearOperator:
    """Base class: subclasses implement ``_apply`` and ``_adjoint`` (``_normal`` optionally)."""

    def __init__(self, oshape: Sequence[int], ishape: Sequence[int], name: str | None = None):
        self.oshape: Shape = tuple(int(s) for s in oshape)
        self.ishape: Shape = tuple(int(s) for s in ishape)
        self.name = name or type(self).__name__

    # -- the three maps ---------------------------------------------------------------------
    def __call__(self, x):
        self._check(x, self.ishape, "input")
        y = self._apply(x)
        self._check(y, self.oshape, "output")
        return y

    def apply_adjoint(self, y):
        self._check(y, self.oshape, "adjoint input")
        return self._adjoint(y)

    def apply_normal(self, x):
        self._check(x, self.ishape, "normal input")
        return self._normal(x)

    def _apply(self, x):
        raise NotImplementedError

    def _adjoint(self, y):
        raise NotImplementedError

    def _normal(self, x):
        return self._adjoint(self._apply(x))

    # -- algebra ------------------------------------------------------------------------------
    @property
    def H(self) -> "LinearOperator":
        return _Adjoint(self)

    @property
    def N(self) -> "LinearOperator":
        return _Normal(self)

    def __matmul__(self, other: "LinearOperator") -> "LinearOperator":
        """``self @ other``; ``(Sampling @ FFT) @ Sense`` over the spatial axes is the fused ``CartesianSense``."""
        fused = _cartesian_sense(self, other)
        return fused if fused is not None else _Compose(self, other)

    def __mul__(self, scalar: complex) -> "LinearOperator":
        return _Scale(self, scalar)

    __rmul__ = __mul__

    def __add__(self, other: "LinearOperator") -> "LinearOperator":
        return _Sum(self, other)

    def _check(self, x, shape: Shape, what: str) -> None:
        if tuple(x.shape) != shape:
            raise ValueError(f"{self.name}: {what} has shape {tuple(x.shape)}, expected {shape}")

    def __repr__(self) -> str:
        return f"<{self.name}: {self.ishape} -> {self.oshape}>"


class _Adjoint(LinearOperator):
    def __init__(self, op: LinearOperator):
        super().__init__(op.ishape, op.oshape, f"{op.name}.H")
        self.op = op

    def _apply(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._apply(y)

    @property
    def H(self) -> LinearOperator:
        return self.op


class _Normal(LinearOperator):
    def __init__(self, op: LinearOperator):
        super().__init__(op.ishape, op.ishape, f"{op.name}.N")
        self.op = op

    def _apply(self, x):
        return self.op._normal(x)

    _adjoint = _apply  # A^H A is self-adjoint


class _Compose(LinearOperator):
    def __init__(self, a: LinearOperator, b: LinearOperator):
        if a.ishape != b.oshape:
            raise ValueError(f"cannot compose {a!r} @ {b!r}: {a.ishape} != {b.oshape}")
        super().__init__(a.oshape, b.ishape, f"{a.name}@{b.name}")
        self.a, self.b = a, b

    def _apply(self, x):
        return self.a._apply(self.b._apply(x))

    def _adjoint(self, y):
        return self.b._adjoint(self.a._adjoint(y))

    def _normal(self, x):
        return self.b._adjoint(self.a._normal(self.b._apply(x)))  # (A B)^H A B = B^H (A^H A) B


def _cartesian_sense(a: LinearOperator, b: LinearOperator) -> CartesianSense | None:
    """``CartesianSense`` when ``a @ b`` is ``(Sampling @ FFT) @ Sense`` with the FFT over all spatial axes."""
    if not (isinstance(b, Sense) and isinstance(a, _Compose) and isinstance(a.a, Sampling) and isinstance(a.b, FFT)):
        return None
    spatial = b.ishape
    if a.b.axes != tuple(range(-len(spatial), 0)) or tuple(a.a.weights.shape) != spatial or a.ishape != b.oshape:
        return None
    return CartesianSense(b.maps, a.a.weights)


class _Scale(LinearOperator):
    def __init__(self, op: LinearOperator, scalar: complex):
        super().__init__(op.oshape, op.ishape, f"{scalar}*{op.name}")
        self.op, self.scalar = op, scalar

    def _apply(self, x):
        return self.op._apply(x) * self.scalar

    def _adjoint(self, y):
        return self.op._adjoint(y) * complex(self.scalar).conjugate()


class _Sum(LinearOperator):
    def __init__(self, a: LinearOperator, b: LinearOperator):
        if (a.ishape, a.oshape) != (b.ishape, b.oshape):
            raise ValueError(f"cannot add {a!r} + {b!r}: shapes differ")
        super().__init__(a.oshape, a.ishape, f"({a.name}+{b.name})")
        self.a, self.b = a, b

    def _apply(self, x):
        return self.a._apply(x) + self.b._apply(x)

    def _adjoint(self, y):
        return self.a._adjoint(y) + self.b._adjoint(y)


class Identity(LinearOperator):
    def __init__(self, shape: Sequence[int]):
        super().__init__(shape, shape)

    def _apply(self, x):
        return x

    _adjoint = _apply


class FFT(LinearOperator):
    """Centred orthonormal FFT over the last ``ndim`` axes (image -> k-space)."""

    def __init__(self, shape: Sequence[int], ndim: int = 2):
        super().__init__(shape, shape)
        self.axes = tuple(range(-ndim, 0))

    def _apply(self, x):
        return fftc(x, self.axes)

    def _adjoint(self, y):
        return ifftc(y, self.axes)

    def _normal(self, x):
        return x


class Multiply(LinearOperator):
    """Element-wise multiplication by a fixed array that broadcasts to ``shape`` (a diagonal operator)."""

    def __init__(self, shape: Sequence[int], weights, name: str | None = None):
        super().__init__(shape, shape, name)
        self.weights = weights
        xp = get_array_module(weights)
        self._conj = xp.conj(weights) if xp.iscomplexobj(weights) else weights

    def _apply(self, x):
        return x * self.weights

    def _adjoint(self, y):
        return y * self._conj


class Sampling(Multiply):
    """Cartesian sampling: zero the k-space samples that were not acquired (mask over spatial dims)."""

    def __init__(self, shape: Sequence[int], mask):
        xp = get_array_module(mask)
        super().__init__(shape, xp.asarray(mask).astype(xp.float32), "Sampling")

    def _normal(self, x):
        return x * self.weights


class Sense(LinearOperator):
    """Coil sensitivities: image (*spatial) -> coil images (coil, *spatial); adjoint sums conj(S)·y.

    Both directions run the fused coil kernels (``kernels/coil.py``) on CPU and GPU.
    """

    def __init__(self, maps):
        super().__init__(maps.shape, maps.shape[1:])
        xp = get_array_module(maps)
        self.maps = xp.ascontiguousarray(maps, dtype=xp.complex64)

    def _apply(self, x):
        return sense_expand(x, self.maps)

    def _adjoint(self, y):
        return sense_combine(y, self.maps)


def _constant_along(weight, axis: int) -> bool:
    """Whether ``weight`` is the same at every index along ``axis``."""
    xp = get_array_module(weight)
    return bool(xp.all(weight == xp.take(weight, xp.asarray([0]), axis=axis)))


class CartesianSense(LinearOperator):
    """Cartesian SENSE ``A = M F S``: image (*spatial) -> k-space (coil, *spatial), fused, centring folded.

    Equal to ``Sampling(shape, mask) @ FFT(shape, ndim) @ Sense(maps)``, which builds it. The centred FFT
    is folded once into stored maps ``S_f`` and weights ``W`` so that ``A x = W F0 S_f u`` with the
    unshifted FFT ``F0`` and ``u = uncentre(x)``:

    - every spatial size even: ``F = s C F0 C`` with the ±1 checkerboard ``C`` and sign ``s``
      (``kernels.fft.checkerboard``), so ``S_f = C S`` and ``W = s C M``; image and k-space keep their
      centred coordinates (``uncentre`` and ``uncentre_kspace`` return their input);
    - otherwise: ``F = P F0 P'`` with ``P = fftshift``, ``P' = ifftshift``, so ``S_f = P' S`` and
      ``W = P' M``; ``uncentre`` shifts the image (image-sized) and ``uncentre_kspace`` the coil
      k-space (a coil-sized copy, per call of ``A`` or ``A^H``).

    Each call: one fused expand or combine (``kernels/coil.py``), one unshifted FFT in place and one
    weight pass; the adjoint and the normal reuse one coil buffer. ``M`` is real (a 0/1 sampling mask,
    or sample weights: the normal uses ``W^2``). The normal's FFTs skip the axes along which ``W^2`` is
    constant (``normal_axes``): there ``F^H W^2 F`` needs no transform (16x320x320 with phase-encode lines:
    8.3 -> 5.5 ms per call; 8x160x256x256 with a fully sampled readout: 1.02 -> 0.67 s).

    ``batch_ndim`` leading axes are a batch of independent problems (e.g. the slices of a hybrid-space
    volume): maps (*batch, coil, *spatial), images (*batch, *spatial), a mask per entry (*batch, *spatial)
    or one shared by all (*spatial); the FFTs run over the trailing spatial axes only and the coil
    kernels over the whole batch at once (one launch each on a GPU).
    """

    def __init__(self, maps, mask, batch_ndim: int = 0):
        xp = get_array_module(maps)
        batch = tuple(maps.shape[:batch_ndim])
        spatial = tuple(maps.shape[batch_ndim + 1:])
        super().__init__(maps.shape, batch + spatial, "CartesianSense")
        self.batch_ndim = batch_ndim
        self.axes = tuple(range(-len(spatial), 0))
        mask = xp.asarray(mask).astype(xp.float32)
        mask = xp.broadcast_to(mask, batch + spatial if mask.ndim > len(spatial) else spatial)
        self.even = all(n % 2 == 0 for n in spatial)
        if self.even:
            c, sc = (xp.asarray(f) for f in checkerboard(spatial, len(spatial)))
            self.maps = xp.multiply(xp.asarray(maps, dtype=xp.complex64), c)
            self.weight = xp.ascontiguousarray(sc * mask)
        else:
            self.maps = xp.ascontiguousarray(xp.fft.ifftshift(xp.asarray(maps, dtype=xp.complex64), axes=self.axes))
            self.weight = xp.ascontiguousarray(xp.fft.ifftshift(mask, axes=self.axes))
        self.weight2 = self.weight * self.weight
        # A^H A = S^H F^H W^2 F S: along an axis where W^2 is constant (a fully sampled readout) the FFT
        # pair cancels (F unitary, separable), so the normal transforms only the other axes
        self.normal_axes = tuple(a for a in self.axes if not _constant_along(self.weight2, a))
        self._coils = None

    # -- coordinates: the fused core acts on uncentre(x) and returns uncentred k-space ------------
    def uncentre(self, x):
        """Image -> the coordinates the fused core acts on (identity for even sizes, else ``ifftshift``)."""
        return x if self.even else get_array_module(x).fft.ifftshift(x, axes=self.axes)

    def centre(self, u):
        """Inverse of ``uncentre``."""
        return u if self.even else get_array_module(u).fft.fftshift(u, axes=self.axes)

    def uncentre_kspace(self, y):
        """Coil k-space -> the core's k-space coordinates (identity for even sizes, else ``ifftshift``)."""
        return y if self.even else get_array_module(y).fft.ifftshift(y, axes=self.axes)

    def centre_kspace(self, z):
        """Inverse of ``uncentre_kspace``."""
        return z if self.even else get_array_module(z).fft.fftshift(z, axes=self.axes)

    def buffer(self):
        """The reused coil-sized complex64 work array (contents undefined between calls)."""
        if self._coils is None:
            xp = get_array_module(self.maps)
            self._coils = xp.empty(self.maps.shape, dtype=xp.complex64)
        return self._coils

    # -- the fused core: W F0 S_f, its adjoint and its normal ----------------------------------------
    def coil_spectra(self, u, out=None):
        """``F0 S_f u`` (unweighted, uncentred) into ``out`` (a new array when None); use the result."""
        return fft_uncentred(sense_expand(u, self.maps, out=out, batch_ndim=self.batch_ndim), self.axes)

    def core_forward(self, u, out=None):
        """``W F0 S_f u`` (uncentred k-space) into ``out`` (a new array when None); use the result."""
        coils = self.coil_spectra(u, out)
        apply_weight(coils, self.weight, self.batch_ndim)
        return coils

    def core_adjoint(self, z):
        """``S_f^H F0^H W z`` for uncentred k-space ``z`` (left untouched): a new image."""
        xp = get_array_module(z)
        weight = xp.expand_dims(self.weight, self.batch_ndim) if self.weight.ndim > len(self.axes) else self.weight
        coils = fft_uncentred(xp.multiply(z, weight, out=self.buffer()), self.axes, inverse=True)
        return sense_combine(coils, self.maps, batch_ndim=self.batch_ndim)

    def core_normal(self, u, lam=0.0):
        """``S_f^H F0^H W^2 F0 S_f u + lam u``: the normal operator in the core's coordinates (``lam``: a float,
        or per batch entry a real array of shape (*batch, 1, ...)). The FFTs run over ``normal_axes`` only:
        a 3D volume with a fully sampled readout costs 2D FFTs, a 2D slice with phase-encode lines 1D ones."""
        coils = sense_expand(u, self.maps, out=self.buffer(), batch_ndim=self.batch_ndim)
        if self.normal_axes:
            coils = fft_uncentred(coils, self.normal_axes)
        apply_weight(coils, self.weight2, self.batch_ndim)
        if self.normal_axes:
            coils = fft_uncentred(coils, self.normal_axes, inverse=True)
        out = sense_combine(coils, self.maps, batch_ndim=self.batch_ndim)
        if getattr(lam, "ndim", 0) or lam:
            out += lam * u
        return out

    # -- the centred operator ---------------------------------------------------------------------
    def _apply(self, x):
        return self.centre_kspace(self.core_forward(self.uncentre(x)))

    def _adjoint(self, y):
        return self.centre(self.core_adjoint(self.uncentre_kspace(y)))

    def _normal(self, x):
        return self.centre(self.core_normal(self.uncentre(x)))

    @property
    def N(self) -> LinearOperator:
        """``A^H A`` as a ``SenseNormal`` sharing this operator's arrays (centred images)."""
        return SenseNormal.of(self, centred=True)

    def l2_dual(self, y) -> SenseDataDual:
        """PDHG dual block of the data term ``||A x - y||^2 / 2`` (``solvers.pdhg`` with prox None); unbatched."""
        if self.batch_ndim:
            raise ValueError(f"{self.name}: the fused PDHG dual step takes no batch dims")
        return SenseDataDual(self, y)


class SenseDataDual:
    """PDHG dual block of ``f(A x) = ||A x - y||^2 / 2`` for ``A = CartesianSense``, one fused step.

    ``dual_step(u, x, sigma)``: ``u <- prox_{sigma f*}(u + sigma A x) = (u + sigma (A x - y)) / (1 + sigma)``
    in place, returns ``A^H u``. The dual ``u`` lives in the core's k-space coordinates (the same as
    the centred ones for even sizes; it starts at zero, which is zero in any coordinates). Per step:
    fused expand, FFT in place, one fused pass for the update and the weighting (``kernels.fused``),
    inverse FFT in place, fused combine.
    """

    def __init__(self, op: CartesianSense, y):
        xp = get_array_module(y)
        if tuple(y.shape) != op.oshape:
            raise ValueError(f"{op.name}: data has shape {tuple(y.shape)}, expected {op.oshape}")
        self.op = op
        self.oshape = op.oshape
        self.y = xp.ascontiguousarray(op.uncentre_kspace(y), dtype=xp.complex64)

    def dual_step(self, u, x, sigma: float):
        """Update the dual ``u`` (complex64, C-contiguous) in place for the primal point ``x``; return ``A^H u``."""
        op = self.op
        coils = op.coil_spectra(op.uncentre(x), op.buffer())
        l2_dual_update(u, coils, self.y, op.weight, sigma)
        coils = fft_uncentred(coils, op.axes, inverse=True)
        return op.centre(sense_combine(coils, op.maps))


class SenseNormal(LinearOperator):
    """``A^H A + lam I`` of Cartesian SENSE ``A = M F S`` (``CartesianSense``), one pass per step.

    It acts on ``u = uncentre(x)`` (``centre`` maps a solution back), where the centring of the FFT is
    folded into the stored maps and weights (``CartesianSense``: nothing to do for even sizes, an
    image-sized shift otherwise), so no coil-sized shift runs per call. ``centred=True`` takes and
    returns centred images: what ``CartesianSense.N`` (and ``(Sampling @ FFT @ Sense).N``) returns.
    Each call: fused expand into a reused coil buffer, FFT in place, weight in place, inverse FFT in
    place, fused combine; the only other pass is ``+ lam u`` on the image.
    ``batch_ndim``: a batch of independent problems (``CartesianSense``); ``lam`` is then one float for
    all or one per entry (an array that broadcasts as (*batch, 1, ...)).
    """

    def __init__(self, maps, mask, lam=0.0, centred: bool = False, batch_ndim: int = 0):
        self._setup(CartesianSense(maps, mask, batch_ndim), lam, centred)

    @classmethod
    def of(cls, model: CartesianSense, lam=0.0, centred: bool = False) -> SenseNormal:
        """The normal operator of ``model`` (+ ``lam I``), sharing its folded arrays and buffer."""
        normal = cls.__new__(cls)
        normal._setup(model, lam, centred)
        return normal

    def _setup(self, model: CartesianSense, lam, centred: bool) -> None:
        super().__init__(model.ishape, model.ishape, "SenseNormal")
        self.model = model
        xp = get_array_module(model.maps)
        self.lam = float(lam) if np.ndim(lam) == 0 else xp.asarray(lam, dtype=xp.float32)
        self.centred = centred

    def uncentre(self, x):
        """Image -> the coordinates this operator acts on (see ``CartesianSense.uncentre``)."""
        return self.model.uncentre(x)

    def centre(self, u):
        """Inverse of ``uncentre``."""
        return self.model.centre(u)

    def _apply(self, u):
        if self.centred:
            return self.centre(self.model.core_normal(self.uncentre(u), self.lam))
        return self.model.core_normal(u, self.lam)

    _adjoint = _apply
