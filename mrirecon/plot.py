"""Matplotlib views of k-space and images: one image, a montage, k-space and mask, a comparison with error maps.

Matplotlib is optional (the ``plot`` extra) and imported only here, when a helper is called. Every helper
builds a ``matplotlib.figure.Figure`` directly (no pyplot state), so it works headless (Agg) and in
loops without leaking figures; in Jupyter, after ``%matplotlib inline``, a returned figure is displayed.
Arrays may live on the GPU: they are copied to the host once, here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import Image, KSpace
from .errors import InputError
from .kernels.backend import to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PANEL_INCHES = 2.8  # width and height of one image panel
DISPLAY_PERCENTILE = 99.5  # grey scale tops out here, so that one bright voxel does not darken the view


def _figure(nrows: int, ncols: int, title: str | None = None) -> tuple["Figure", np.ndarray]:
    """A figure of ``nrows x ncols`` square panels with their axes switched off (a 2D array of Axes)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'mrirecon[plot]'") from None
    fig = Figure(figsize=(PANEL_INCHES * ncols, PANEL_INCHES * nrows + (0.3 if title else 0.0)), layout="constrained")
    axes = np.atleast_2d(np.asarray(fig.subplots(nrows, ncols, squeeze=False)))
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig, axes


def _axes(ax: "Axes | None") -> tuple["Figure", "Axes"]:
    """``ax`` and its figure, or a new one-panel figure."""
    if ax is not None:
        return ax.figure, ax
    fig, axes = _figure(1, 1)
    return fig, axes[0, 0]


def image_plane(x: Image | Any, index: Mapping[str, int] | None = None) -> np.ndarray:
    """A 2D magnitude (y, x) of an ``Image`` or array: the middle entry of every leading axis unless
    ``index`` names one (``{"slice": 2}``, ``{"z": 40}``; plain arrays use ``{"0": i}`` by axis number).

    Entries of ``index`` for dims this image lacks are ignored, so that one ``index`` serves a comparison
    of a slice stack with 2D references.
    """
    if isinstance(x, Image):
        data, dims = to_numpy(x.data), x.dims
    else:
        data = to_numpy(x)
        dims = tuple(str(i) for i in range(data.ndim))
    if data.ndim < 2:
        raise InputError(None, f"cannot show a {data.ndim}D array as an image")
    index = dict(index or {})
    take = tuple(index.get(d, n // 2) for d, n in zip(dims[:-2], data.shape[:-2]))
    return np.abs(data[take])


def _show(ax: "Axes", plane: np.ndarray, title: str | None = None, vmax: float | None = None,
          cmap: str = "gray") -> None:
    """Draw ``plane`` with the origin at the top left (row 0 = first phase-encoding line)."""
    if vmax is None:
        vmax = float(np.percentile(plane, DISPLAY_PERCENTILE)) or 1.0
    ax.imshow(plane, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)


def _image_title(image: Image | Any) -> str | None:
    if isinstance(image, Image) and image.provenance is not None:
        return image.provenance.method
    return None


def plot_image(image: Image | Any, *, index: Mapping[str, int] | None = None, title: str | None = None,
               ax: "Axes | None" = None, cmap: str = "gray") -> "Figure":
    """Magnitude of one plane of ``image`` (see ``image_plane``), titled with its method by default."""
    fig, ax = _axes(ax)
    _show(ax, image_plane(image, index), title or _image_title(image), cmap=cmap)
    return fig


def montage(stack: Image | Any, *, axis: str | int = 0, ncols: int | None = None, titles: Sequence[str] | None = None,
            title: str | None = None, cmap: str = "gray", common_scale: bool = True) -> "Figure":
    """One panel per entry along ``axis`` (slices of an ``Image``, coils of a coil-image stack, maps...).

    ``axis`` is a dim name for an ``Image`` (default: its first leading dim, ``slice`` or ``z``) or an axis
    number for arrays; other leading axes show their middle entry. ``common_scale`` puts all panels on one
    grey scale (coil sensitivities read as relative brightness).
    """
    if isinstance(stack, Image):
        leading = list(stack.dims[:-2])
        name = axis if isinstance(axis, str) else (leading[0] if leading else None)
        if name not in leading:
            raise InputError(None, f"montage axis {axis!r} is not one of the image's leading dims {tuple(leading)}")
        data = np.moveaxis(to_numpy(stack.data), stack.dims.index(name), 0)
        label = name
    else:
        data = np.moveaxis(to_numpy(stack), int(axis), 0)
        label = "#"
    if data.ndim < 3:
        raise InputError(None, f"a montage needs a stack of 2D images, got shape {data.shape}")
    planes = [image_plane(entry) for entry in data]
    n = len(planes)
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    fig, axes = _figure(nrows, ncols, title)
    vmax = (float(np.percentile(np.stack(planes), DISPLAY_PERCENTILE)) or 1.0) if common_scale else None
    names = list(titles) if titles is not None else [f"{label} {i}" for i in range(n)]
    for ax, plane, name in zip(axes.flat, planes, names):
        _show(ax, plane, name, vmax=vmax, cmap=cmap)
    return fig


def _task_kspace(ksp: KSpace, index: Mapping[str, int] | None) -> KSpace:
    """One task of ``ksp``: the middle entry of every batch dim unless ``index`` names it."""
    index = dict(index or {})
    picks = {d: index.get(d, ksp.data.shape[ksp.axis(d)] // 2) for d in ksp.batch_dims}
    return ksp.select(**picks) if picks else ksp


def _kspace_plane(ksp: KSpace, coil: int | None) -> np.ndarray:
    """(ky, kx) magnitude of one coil, or the root-sum-of-squares over coils; middle kz for 3D."""
    data = to_numpy(ksp.data)
    data = data[coil] if coil is not None else np.sqrt(np.sum(np.abs(data) ** 2, axis=0))
    while data.ndim > 2:
        data = data[data.shape[0] // 2]
    return np.abs(data)


def plot_kspace(ksp: KSpace, *, coil: int | None = None, index: Mapping[str, int] | None = None,
                ax: "Axes | None" = None, title: str | None = None) -> "Figure":
    """log10 magnitude of Cartesian k-space (RSS over coils unless ``coil`` is given): the centre, the
    acquired lines and any partial-Fourier side show at a glance."""
    if not ksp.is_cartesian:
        raise InputError(ksp.header.source or None, "k-space views need Cartesian k-space (this has a trajectory)")
    task = _task_kspace(ksp, index)
    plane = _kspace_plane(task, coil)
    floor = plane[plane > 0].min() if np.any(plane > 0) else 1.0
    fig, ax = _axes(ax)
    logmag = np.log10(np.maximum(plane, floor))
    ax.imshow(logmag, cmap="magma", interpolation="nearest", vmin=float(np.percentile(logmag, 5)))
    ax.set_title(title or f"log|k| ({'RSS' if coil is None else f'coil {coil}'})", fontsize=9)
    return fig


def plot_mask(ksp_or_mask: KSpace | Any, *, ax: "Axes | None" = None, title: str | None = None) -> "Figure":
    """The sampling pattern (white = acquired) of the (ky, kx) plane, titled with its acceleration."""
    if isinstance(ksp_or_mask, KSpace):
        mask = to_numpy(ksp_or_mask.sampling_mask())
        mask = np.broadcast_to(mask, ksp_or_mask.spatial_shape)
    else:
        mask = to_numpy(ksp_or_mask)
    mask = np.asarray(mask, dtype=bool)
    while mask.ndim > 2:
        mask = mask[mask.shape[0] // 2]
    fraction = float(mask.mean())
    fig, ax = _axes(ax)
    ax.imshow(mask, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title or f"mask: {100 * fraction:.0f}% sampled (R = {1 / max(fraction, 1e-9):.1f})", fontsize=9)
    return fig


def matched_scale(plane: np.ndarray, reference: np.ndarray) -> float:
    """The least-squares scale ``a`` minimising ||a*plane - reference||.

    Methods scale their output differently (RSS magnitude vs a SENSE estimate); matching the scale makes
    an error map show structure, not units.
    """
    if plane.shape != reference.shape:
        raise InputError(None, f"cannot compare shapes {plane.shape} and {reference.shape}")
    return float(np.vdot(plane, reference).real / max(float(np.vdot(plane, plane).real), 1e-30))


def nrmse(plane: np.ndarray, reference: np.ndarray) -> float:
    """||a*plane - reference|| / ||reference|| with ``a = matched_scale(plane, reference)``."""
    diff = matched_scale(plane, reference) * plane - reference
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(reference)), 1e-30))


def compare(images: Mapping[str, Image | Any], reference: str | Image | Any | None = None, *,
            index: Mapping[str, int] | None = None, error_gain: float = 5.0, title: str | None = None) -> "Figure":
    """Images side by side (top row) and, when a ``reference`` is given (a key of ``images`` or an image),
    their error maps ``|a*x - ref|`` magnified by ``error_gain`` (bottom row) titled with the NRMSE."""
    if not images:
        raise InputError(None, "nothing to compare: no images given")
    planes = {name: image_plane(img, index) for name, img in images.items()}
    ref = None
    if isinstance(reference, str):
        if reference not in planes:
            raise InputError(None, f"reference {reference!r} is not one of {sorted(planes)}")
        ref = planes[reference]
    elif reference is not None:
        ref = image_plane(reference, index)
    fig, axes = _figure(1 if ref is None else 2, len(planes), title)
    scale = ref if ref is not None else np.concatenate([p.ravel() for p in planes.values()])
    vmax = float(np.percentile(scale, DISPLAY_PERCENTILE)) or 1.0
    for col, (name, plane) in enumerate(planes.items()):
        if ref is None:
            _show(axes[0, col], plane, name, vmax=vmax)
            continue
        scaled = matched_scale(plane, ref) * plane
        _show(axes[0, col], scaled, f"{name} (reference)" if name == reference else name, vmax=vmax)
        if name != reference:
            _show(axes[1, col], np.abs(scaled - ref), f"error x{error_gain:g}, NRMSE {nrmse(plane, ref):.2g}",
                  vmax=vmax / error_gain, cmap="inferno")
    return fig


def sweep(images: Sequence[Image | Any], values: Sequence[float], *, name: str = "lam",
          index: Mapping[str, int] | None = None, title: str | None = None) -> "Figure":
    """One panel per parameter value (a regularisation sweep), on a common grey scale."""
    if len(images) != len(values):
        raise InputError(None, f"{len(images)} images but {len(values)} values of {name}")
    stack = np.stack([image_plane(img, index) for img in images])
    return montage(stack, ncols=len(values), titles=[f"{name} = {v:g}" for v in values], title=title)
