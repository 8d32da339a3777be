"""A small linear-operator algebra: ``A(x)``, ``A.H``, ``A.N``, ``A @ B``, ``a * A``, ``A + B``.

Shapes are checked on every call so that a mismatch fails with the operator's name, not deep in NumPy.
Operators work on NumPy or CuPy arrays alike (the array decides).
"""
from __future__ import annotations

from collections.abc import Sequence

from .kernels.backend import get_array_module
from .kernels.coil import sense_combine, sense_expand
from .kernels.fft import fft_uncentred, fftc, ifftc

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
        return _Compose(self, other)

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

    @property
    def N(self) -> LinearOperator:
        """``A^H A``; for Cartesian SENSE ``Sampling @ FFT @ Sense`` the shift-free ``SenseNormal``."""
        inner = self.a
        if (
            isinstance(self.b, Sense)
            and isinstance(inner, _Compose)
            and isinstance(inner.a, Sampling)
            and isinstance(inner.b, FFT)
            and inner.b.axes == tuple(range(-len(self.ishape), 0))
            and tuple(inner.a.weights.shape) == self.ishape
        ):
            return SenseNormal(self.b.maps, inner.a.weights, centred=True)
        return _Normal(self)


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


class SenseNormal(LinearOperator):
    """``A^H A + lam I`` of Cartesian SENSE ``A = M F S``, in uncentred image coordinates, one pass per step.

    The centred FFT is ``F = P F0 P'`` with the shifts ``P = fftshift``, ``P' = ifftshift`` over the
    spatial axes. As ``S`` and ``M`` are diagonal, ``P'^H A^H A P' = S'^H F0^H M' F0 S'`` with maps
    ``S' = P' S`` and mask ``M' = P^H M`` shifted once here; so this operator acts on ``u = P' x``
    (``uncentre``) with no shift per call, and ``centre`` maps a solution back. Exact for every size.
    ``centred=True`` takes and returns centred images (two image-sized shifts per call, none on coil
    arrays): what ``(Sampling @ FFT @ Sense).N`` returns.
    Each call: fused expand into a reused coil buffer, FFT in place, mask in place, inverse FFT in
    place, fused combine; the only other pass is ``+ lam u`` on the image.
    """

    def __init__(self, maps, mask, lam: float = 0.0, centred: bool = False):
        xp = get_array_module(maps)
        self.centred = centred
        self.axes = tuple(range(1, maps.ndim))
        super().__init__(maps.shape[1:], maps.shape[1:], "SenseNormal")
        self.maps = xp.ascontiguousarray(xp.fft.ifftshift(xp.asarray(maps, dtype=xp.complex64), axes=self.axes))
        self.mask = xp.fft.ifftshift(xp.asarray(mask).astype(xp.float32), axes=tuple(range(mask.ndim)))
        self.lam = float(lam)
        self._coils = xp.empty(self.maps.shape, dtype=xp.complex64)

    def uncentre(self, x):
        """Image -> the coordinates this operator acts on (``ifftshift`` over the spatial axes)."""
        return get_array_module(x).fft.ifftshift(x, axes=tuple(range(x.ndim)))

    def centre(self, u):
        """Inverse of ``uncentre``."""
        return get_array_module(u).fft.fftshift(u, axes=tuple(range(u.ndim)))

    def _apply(self, u):
        if self.centred:
            return self.centre(self._uncentred(self.uncentre(u)))
        return self._uncentred(u)

    def _uncentred(self, u):
        axes = tuple(range(-len(self.ishape), 0))
        coils = fft_uncentred(sense_expand(u, self.maps, out=self._coils), axes)
        coils *= self.mask
        coils = fft_uncentred(coils, axes, inverse=True)
        out = sense_combine(coils, self.maps)
        if self.lam:
            out += self.lam * u
        return out

    _adjoint = _apply
