"""Reconstruction methods, registered by name.

A method is a function ``fn(ksp, *, param=default, ...) -> image`` that takes one task's ``KSpace``
(dims ``("coil", *spatial)``, arrays already on the target device) and returns the complex image
(*spatial) on the same device. Its parameters are the keyword-only arguments; their docs are the
``name: text`` lines of the docstring. Adding a method is one module that decorates its function with
``@register(...)`` and is imported at the bottom of this file. Parameters that several methods share
are one argument annotated with a ``ParamGroup`` (``mrirecon.methods.params``): the registry lists its
fields as flat parameters and gathers them back when it calls the method (``MethodInfo.__call__``).

A method may also solve many tasks at once (e.g. the slices of a volume as one batched solve on a
GPU, where one solve per slice would be dominated by kernel launches): ``@register_batch(name)`` adds
``fn(tasks, params) -> images (n, *spatial)`` that takes the tasks and, per task, the parameters as the
method itself gets them (groups gathered); ``MethodInfo.solve_batch`` binds and calls it.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from .params import ParamGroup

MethodFn = Callable[..., Any]
BatchFn = Callable[[list[Any], list[dict[str, Any]]], Any]


@dataclass(frozen=True)
class ParamInfo:
    """One method parameter: name, default, doc line and the annotated type (``float``, ``int | None``...)."""

    name: str
    default: Any
    doc: str
    annotation: Any

    @property
    def type_name(self) -> str:
        a = self.annotation
        return getattr(a, "__name__", None) or str(a).replace("typing.", "")


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: what ``list_methods`` shows and what ``recon`` calls."""

    name: str
    summary: str
    reference: str
    params: tuple[ParamInfo, ...]
    fn: MethodFn
    groups: tuple[tuple[str, type[ParamGroup], tuple[str, ...]], ...] = ()  # (argument, group class, its fields)
    batch_fn: BatchFn | None = None  # solves many tasks at once (``register_batch``)

    def __call__(self, ksp: Any, **params: Any) -> Any:
        """Run the method on one task with flat ``params`` (checked and completed by ``bind``)."""
        return self.fn(ksp, **self._arguments(params))

    def solve_batch(self, tasks: Sequence[Any], params: Sequence[dict[str, Any]]) -> Any:
        """Run the batched form on ``tasks`` (one flat parameter dict each): images (len(tasks), *spatial)."""
        if self.batch_fn is None:
            raise TypeError(f"method {self.name!r} has no batched form")
        return self.batch_fn(list(tasks), [self._arguments(p) for p in params])

    def _arguments(self, params: dict[str, Any]) -> dict[str, Any]:
        """The method's keyword arguments: ``params`` bound, with parameter groups gathered into instances."""
        bound = self.bind(params)
        for argument, group, fields in self.groups:
            bound[argument] = group(**{f: bound.pop(f) for f in fields})
        return bound

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """All parameters (defaults filled in) after checking names and value types; else ``InputError``."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise InputError(
                None,
                f"unknown parameter {unknown[0]!r} for method {self.name!r} (valid: {', '.join(known) or 'none'})",
            )
        bound = {}
        for name, p in known.items():
            value = params.get(name, p.default)
            if name in params and not _matches(value, p.annotation):
                raise InputError(
                    None, f"parameter {name!r} of method {self.name!r} must be {p.type_name}, got {value!r}"
                )
            bound[name] = float(value) if p.annotation is float and isinstance(value, int) else value
        return bound


_REGISTRY: dict[str, MethodInfo] = {}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a simple annotation (bool, int, float, str, unions with None); others pass."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def _param_docs(doc: str) -> dict[str, str]:
    """``name: text`` lines of a docstring (continuation lines indented deeper are joined)."""
    docs: dict[str, str] = {}
    current = None
    indent = 0
    for line in doc.splitlines():
        m = re.match(r"^(\s*)(\w+): (.+)$", line)
        if m:
            current, indent = m.group(2), len(m.group(1))
            docs[current] = m.group(3).strip()
        elif current and line.strip() and len(line) - len(line.lstrip()) > indent:
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def register(name: str, *, summary: str, reference: str = "") -> Callable[[MethodFn], MethodFn]:
    """Decorator that registers ``fn(ksp, *, params...)`` under ``name``; params must be keyword-only."""

    def deco(fn: MethodFn) -> MethodFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        docs = _param_docs(inspect.getdoc(fn) or "")
        params, groups = [], []
        for p in list(sig.parameters.values())[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
                raise TypeError(f"method {name!r}: parameter {p.name!r} must be keyword-only with a default")
            hint = hints.get(p.name, Any)
            if isinstance(hint, type) and issubclass(hint, ParamGroup):
                fields = _group_params(hint, p.default)
                groups.append((p.name, hint, tuple(f.name for f in fields)))
                params.extend(fields)
            else:
                params.append(ParamInfo(p.name, p.default, docs.get(p.name, ""), hint))
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise TypeError(f"method {name!r}: a parameter group repeats a parameter name ({', '.join(names)})")
        _REGISTRY[name] = MethodInfo(name, summary, reference, tuple(params), fn, tuple(groups))
        return fn

    return deco


def register_batch(name: str) -> Callable[[BatchFn], BatchFn]:
    """Decorator that adds ``fn(tasks, params) -> images (n, *spatial)`` as the batched form of the registered
    method ``name``: ``params[i]`` are task ``i``'s arguments as the method gets them (groups gathered), and
    the result must equal the method run on each task."""

    def deco(fn: BatchFn) -> BatchFn:
        _REGISTRY[name] = dataclasses.replace(_REGISTRY[name], batch_fn=fn)
        return fn

    return deco


def _group_params(group: type[ParamGroup], default: ParamGroup) -> list[ParamInfo]:
    """A group's fields as flat parameters, defaults from the method's default instance ``default``."""
    if not isinstance(default, group):
        raise TypeError(f"the default of a {group.__name__} parameter must be a {group.__name__} instance")
    docs = _param_docs(inspect.getdoc(group) or "")
    hints = typing.get_type_hints(group)
    return [ParamInfo(f.name, getattr(default, f.name), docs.get(f.name, ""), hints.get(f.name, Any))
            for f in dataclasses.fields(group)]


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``; ``InputError`` listing the known names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(None, f"unknown method {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def require_cartesian(ksp: Any, method: str) -> None:
    """``InputError`` when a Cartesian-only method is given non-Cartesian (trajectory) k-space."""
    if ksp.trajectory is not None:
        raise InputError(ksp.header.source or None, f"method {method!r} needs Cartesian k-space, got a trajectory")


def list_methods() -> list[MethodInfo]:
    """All registered methods, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


# Each import registers its method(s).
from . import sense, zerofill  # noqa: E402,F401
from . import l1wavelet, tv  # noqa: E402,F401
from . import grappa, pocs  # noqa: E402,F401
from . import noncartesian  # noqa: E402,F401

__all__ = ["MethodInfo", "ParamInfo", "get_method", "list_methods", "register", "register_batch", "require_cartesian"]
