"""The data model: ``KSpace`` in, ``Image`` out, each with a typed header.

Array layout (canonical order): leading batch dims (``slice``, ``echo``, ``time``, ...), then ``coil``,
then the spatial k-space dims ``kz, ky, kx`` (Cartesian; 2D data has only ``ky, kx``).
``Image`` arrays use the same batch dims followed by ``z, y, x`` (``y, x`` for 2D); ``x`` is the
readout direction, ``y`` the phase-encoding direction.

Patient and study identifiers live only in ``PatientInfo`` so that they can be dropped or replaced
in one place (``KSpaceHeader.without_phi``).
"""
from __future__ import annotations

import abc
import dataclasses
import datetime
import hashlib
import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .kernels.backend import device_of, get_array_module, to_device, to_numpy

SPATIAL_KDIMS = ("kz", "ky", "kx")
SPATIAL_IDIMS = ("z", "y", "x")
BATCH_DIMS = ("slice", "echo", "time", "repetition", "set", "phase", "average")


@dataclass
class PatientInfo:
    """Patient/study identifiers (PHI). Kept apart so that de-identification is one call."""

    name: str = ""
    id: str = ""
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""
    weight_kg: float | None = None
    study_date: str = ""  # YYYYMMDD
    study_time: str = ""
    study_uid: str = ""
    study_description: str = ""
    accession_number: str = ""
    referring_physician: str = ""
    institution: str = ""
    frame_of_reference_uid: str = ""


@dataclass
class SequenceParams:
    """Sequence parameters needed to interpret and label the data (times in ms, field in T)."""

    tr_ms: float | None = None
    te_ms: tuple[float, ...] = ()
    ti_ms: float | None = None
    flip_angle_deg: float | None = None
    field_strength_t: float | None = None
    sequence_name: str = ""
    trajectory: str = "cartesian"
    scanner: str = ""
    software_version: str = ""
    protocol_name: str = ""


@dataclass
class Geometry:
    """Where the encoded volume sits in the patient, in DICOM patient coordinates (LPS, mm).

    ``position`` is the centre of each slice (one row per slice; one row for a 3D slab);
    ``read_dir``, ``phase_dir``, ``slice_dir`` are unit vectors of the x, y and z image axes.
    ``fov_mm`` is the reconstructed field of view (z, y, x); for 2D multi-slice, z is the slice
    thickness. ``slice_spacing_mm`` is the distance between slice centres (None: derived from positions).
    """

    fov_mm: tuple[float, float, float] = (1.0, 256.0, 256.0)
    position: np.ndarray = field(default_factory=lambda: np.zeros((1, 3)))
    read_dir: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    phase_dir: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    slice_dir: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    slice_spacing_mm: float | None = None

    def __post_init__(self) -> None:
        self.position = np.atleast_2d(np.asarray(self.position, dtype=np.float64))
        for name in ("read_dir", "phase_dir", "slice_dir"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))

    def affine(self, matrix: tuple[int, ...]) -> np.ndarray:
        """4x4 map from voxel index (i along x, j along y, k along z or slice) to LPS mm.

        ``matrix`` is the image shape (z, y, x) or (y, x); voxel centres are placed so that the
        centre of the grid (index n//2 for even n, as after a centred FFT) sits at ``position[0]``
        for a 3D slab, and slice k sits at ``position[k]`` for a multi-slice stack.
        """
        shape = tuple(matrix)
        nz, ny, nx = (1,) * (3 - len(shape)) + shape[-3:]
        fz, fy, fx = self.fov_mm
        n_slices = self.position.shape[0]
        dx, dy = fx / nx, fy / ny
        if n_slices > 1:
            step = self.position[1] - self.position[0]
            dz = self.slice_spacing_mm or float(np.linalg.norm(step))
            if float(step @ self.slice_dir) < 0:  # slices stored in descending order along the normal
                dz = -dz
        else:
            dz = fz / nz
        a = np.eye(4)
        a[:3, 0] = self.read_dir * dx
        a[:3, 1] = self.phase_dir * dy
        a[:3, 2] = self.slice_dir * dz
        centre_index = np.array([nx // 2, ny // 2, 0 if n_slices > 1 else nz // 2], dtype=np.float64)
        a[:3, 3] = self.position[0] - a[:3, :3] @ centre_index
        return a

    def select_slices(self, index) -> "Geometry":
        """Geometry of a subset of slices (multi-slice data)."""
        if self.position.shape[0] == 1:
            return dataclasses.replace(self)
        return dataclasses.replace(self, position=self.position[index])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (for Zarr attributes and ``info --json``)."""
        return {
            "fov_mm": [float(v) for v in self.fov_mm],
            "position": self.position.tolist(),
            "read_dir": self.read_dir.tolist(),
            "phase_dir": self.phase_dir.tolist(),
            "slice_dir": self.slice_dir.tolist(),
            "slice_spacing_mm": self.slice_spacing_mm,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Geometry":
        return cls(
            fov_mm=tuple(d["fov_mm"]),
            position=np.asarray(d["position"]),
            read_dir=np.asarray(d["read_dir"]),
            phase_dir=np.asarray(d["phase_dir"]),
            slice_dir=np.asarray(d["slice_dir"]),
            slice_spacing_mm=d.get("slice_spacing_mm"),
        )


@dataclass
class KSpaceHeader:
    """What is needed to reconstruct and label k-space, beside the samples themselves.

    ``encoded_matrix`` / ``recon_matrix`` are (kz, ky, kx) / (z, y, x) sizes (1 for 2D z).
    ``kspace_centre`` is the index of k=0 along (kz, ky, kx), from encoding limits (partial Fourier).
    ``acceleration`` is the nominal (kz, ky) undersampling; ``calibration_shape`` the fully sampled
    centre used for calibration, when known.
    """

    encoded_matrix: tuple[int, int, int] = (1, 1, 1)
    recon_matrix: tuple[int, int, int] = (1, 1, 1)
    kspace_centre: tuple[int, int, int] | None = None
    acceleration: tuple[int, int] = (1, 1)
    calibration_shape: tuple[int, ...] | None = None
    geometry: Geometry = field(default_factory=Geometry)
    sequence: SequenceParams = field(default_factory=SequenceParams)
    patient: PatientInfo = field(default_factory=PatientInfo)
    source: str = ""  # file name the data came from (no directory: paths can carry PHI)
    source_format: str = ""
    source_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def without_phi(self, pseudonym: str = "ANONYMOUS") -> "KSpaceHeader":
        """A copy whose patient/study identifiers are replaced by ``pseudonym`` (others dropped)."""
        return dataclasses.replace(self, patient=PatientInfo(name=pseudonym, id=pseudonym))

    def to_dict(self, include_phi: bool = False) -> dict[str, Any]:
        """JSON-safe dict; PHI only when asked for."""
        d = {
            "encoded_matrix": list(self.encoded_matrix),
            "recon_matrix": list(self.recon_matrix),
            "kspace_centre": None if self.kspace_centre is None else list(self.kspace_centre),
            "acceleration": list(self.acceleration),
            "calibration_shape": None if self.calibration_shape is None else list(self.calibration_shape),
            "geometry": self.geometry.to_dict(),
            "sequence": _jsonable(dataclasses.asdict(self.sequence)),
            "source": self.source,
            "source_format": self.source_format,
            "source_sha256": self.source_sha256,
        }
        if include_phi:
            d["patient"] = _jsonable(dataclasses.asdict(self.patient))
        return d


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _shape_text(dims: tuple[str, ...], shape: tuple[int, ...]) -> str:
    return " x ".join(f"{d} {n}" for d, n in zip(dims, shape))


def _vector_text(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.1f}" for x in np.asarray(v, dtype=float).ravel()) + ")"


def _geometry_rows(geometry: Geometry, affine: np.ndarray) -> list[tuple[str, str]]:
    """FOV, voxel size, centre and orientation (LPS) for summaries."""
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    centre = geometry.position.mean(axis=0)
    return [
        ("FOV (z, y, x)", " x ".join(f"{v:g}" for v in geometry.fov_mm) + " mm"),
        ("voxel (x, y, z)", " x ".join(f"{v:.3g}" for v in voxel) + " mm"),
        ("centre (LPS)", _vector_text(centre) + " mm"),
        ("read / phase / slice", " / ".join(_vector_text(d) for d in (geometry.read_dir, geometry.phase_dir,
                                                                      geometry.slice_dir))),
    ]


class _Summarised(abc.ABC):
    """Text and Jupyter HTML summaries built from the subclass's ``summary_rows()`` (label, value) pairs."""

    @abc.abstractmethod
    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs to show."""

    def summary(self) -> str:
        """A multi-line, human-readable description (``print(obj.summary())`` in a terminal)."""
        rows = self.summary_rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join([type(self).__name__] + [f"  {k.ljust(width)}  {v}" for k, v in rows])

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the summary as a small two-column table (escaped)."""
        cells = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in self.summary_rows()
        )
        return f"<div><strong>{type(self).__name__}</strong><table>{cells}</table></div>"


@dataclass
class KSpace(_Summarised):
    """Multi-coil k-space with named dims, a sampling mask and a header.

    ``data``: complex64 array (NumPy or CuPy), dims as in ``dims``, e.g. ``("slice", "coil", "ky", "kx")``.
    ``mask``: sampling pattern over the trailing spatial dims (True where acquired); None = fully sampled.
    ``trajectory``: non-Cartesian sample positions (..., ndim) in cycles/FOV, else None.
    ``noise``: noise-only samples (coil, n) from noise scans, for pre-whitening; else None.
    ``calibration``: separately acquired ACS k-space, else None: (coil, [kz,] ky, kx), with the data's
    batch dims in front when it differs between slices/contrasts.
    """

    data: Any
    dims: tuple[str, ...]
    header: KSpaceHeader = field(default_factory=KSpaceHeader)
    mask: Any = None
    trajectory: Any = None
    noise: Any = None
    calibration: Any = None

    def __post_init__(self) -> None:
        self.dims = tuple(self.dims)
        if self.data.ndim != len(self.dims):
            raise InputError(self.header.source or None, f"k-space has {self.data.ndim} axes but dims {self.dims}")
        if len(set(self.dims)) != len(self.dims):
            raise InputError(self.header.source or None, f"repeated dim names {self.dims}")
        if "coil" not in self.dims:
            raise InputError(self.header.source or None, f"k-space dims {self.dims} have no 'coil' axis")
        if self.data.shape[self.dims.index("coil")] < 1:
            raise InputError(self.header.source or None, "k-space has zero coils")
        xp = get_array_module(self.data)
        if self.data.dtype != xp.complex64:
            self.data = self.data.astype(xp.complex64)
        if self.mask is not None:
            sshape = self.spatial_shape
            if self.mask.ndim > len(sshape) or any(
                m not in (1, s) for m, s in zip(self.mask.shape[::-1], sshape[::-1])
            ):
                raise InputError(
                    self.header.source or None,
                    f"sampling mask shape {tuple(self.mask.shape)} does not match k-space spatial shape {sshape}",
                )

    @property
    def spatial_dims(self) -> tuple[str, ...]:
        return tuple(d for d in self.dims if d in SPATIAL_KDIMS)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[self.dims.index(d)] for d in self.spatial_dims)

    @property
    def is_cartesian(self) -> bool:
        """True when the samples sit on the Cartesian grid (no ``trajectory``)."""
        return self.trajectory is None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Spatial shape of the image this k-space makes: the k-space matrix when Cartesian, else the last
        ndim (trajectory coordinates per sample) entries of the header's recon matrix."""
        if self.trajectory is None:
            return self.spatial_shape
        return tuple(int(n) for n in self.header.recon_matrix[-int(self.trajectory.shape[-1]):])

    @property
    def batch_dims(self) -> tuple[str, ...]:
        return self.dims[: self.dims.index("coil")]

    @property
    def n_coils(self) -> int:
        return int(self.data.shape[self.dims.index("coil")])

    @property
    def device(self) -> str:
        return device_of(self.data)

    def axis(self, dim: str) -> int:
        return self.dims.index(dim)

    def sampling_mask(self):
        """The mask as a bool array broadcastable to the spatial dims (all True when fully sampled)."""
        xp = get_array_module(self.data)
        if self.mask is None:
            return xp.ones(self.spatial_shape, dtype=bool)
        return xp.asarray(self.mask).astype(bool)

    def to(self, device: str) -> "KSpace":
        """A copy with every array on ``device``."""
        return dataclasses.replace(
            self,
            data=to_device(self.data, device),
            mask=to_device(self.mask, device),
            trajectory=to_device(self.trajectory, device),
            noise=to_device(self.noise, device),
            calibration=to_device(self.calibration, device),
        )

    def select(self, **index) -> "KSpace":
        """Take one or more entries along batch dims, e.g. ``ksp.select(slice=3)`` or ``slice=[0, 1]``.

        An integer index drops the dim; a list keeps it. Geometry follows the selected slices.
        """
        data = self.data
        calibration = self.calibration
        dims = list(self.dims)
        header = self.header
        for dim, idx in index.items():
            if dim not in self.batch_dims:
                raise InputError(self.header.source or None, f"cannot select along {dim!r}: batch dims are {self.batch_dims}")
            ax = dims.index(dim)
            take = (slice(None),) * ax + (idx,)
            if calibration is not None and calibration.ndim == data.ndim:  # ACS carries the batch dims too
                calibration = calibration[take]
            data = data[take]
            if isinstance(idx, (int, np.integer)):
                dims.pop(ax)
            if dim == "slice":
                header = dataclasses.replace(header, geometry=header.geometry.select_slices(idx))
        return dataclasses.replace(self, data=data, dims=tuple(dims), header=header, calibration=calibration)

    def check_finite(self) -> None:
        """Raise ``InputError`` naming the source when k-space holds NaN or Inf.

        A finite sum proves every sample finite (NaN and Inf propagate through addition), in one read
        and no boolean temporary; only a non-finite sum, which overflow of large finite samples can
        also give, is settled element by element.
        """
        xp = get_array_module(self.data)
        with np.errstate(over="ignore", invalid="ignore"):  # an Inf/NaN sum is an answer, not a warning
            total = self.data.sum()
        if bool(xp.isfinite(total)):
            return
        if not bool(xp.isfinite(self.data).all()):
            raise InputError(self.header.source or None, "k-space contains NaN or Inf values")

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs describing this k-space (no patient data): shape, sampling, geometry."""
        h = self.header
        rows = [
            ("dims", _shape_text(self.dims, self.data.shape)),
            ("dtype / device", f"{self.data.dtype} / {self.device}"),
            ("trajectory", h.sequence.trajectory if self.is_cartesian else
             f"{h.sequence.trajectory} ({self.trajectory.shape[-1]}D, image {self.image_shape})"),
        ]
        if self.is_cartesian:
            fraction = float(to_numpy(self.sampling_mask()).mean())
            rows.append(("sampled", f"{100 * fraction:.1f}% (R = {1 / max(fraction, 1e-9):.2f}, "
                                    f"nominal {h.acceleration})"))
        if self.calibration is not None or h.calibration_shape:
            rows.append(("calibration", "separate scan" if self.calibration is not None else
                         f"embedded {tuple(h.calibration_shape)}"))
        if self.noise is not None:
            rows.append(("noise scans", f"{self.noise.shape[-1]} samples per coil"))
        rows.append(("matrix (enc / recon)", f"{tuple(h.encoded_matrix)} / {tuple(h.recon_matrix)}"))
        rows += _geometry_rows(h.geometry, h.geometry.affine(h.recon_matrix))
        seq = h.sequence
        text = ", ".join(p for p in (seq.sequence_name, seq.scanner,
                                     f"TR {seq.tr_ms:g} ms" if seq.tr_ms else "",
                                     f"TE {', '.join(f'{t:g}' for t in seq.te_ms)} ms" if seq.te_ms else "") if p)
        if text:
            rows.append(("sequence", text))
        rows.append(("source", f"{h.source or '(array)'} ({h.source_format or 'in memory'})"))
        return rows

    def plot(self, **kwargs: Any) -> Any:
        """log-magnitude k-space view (``mrirecon.plot.plot_kspace``; needs matplotlib)."""
        from .plot import plot_kspace

        return plot_kspace(self, **kwargs)

    def __repr__(self) -> str:
        shape = dict(zip(self.dims, self.data.shape))
        return (
            f"KSpace({shape}, {self.data.dtype}, device={self.device}, "
            f"trajectory={self.header.sequence.trajectory}, accel={self.header.acceleration}, "
            f"source={self.header.source!r})"
        )


@dataclass
class Provenance:
    """How an image was made: enough to redo it and to tell two results apart."""

    method: str
    parameters: dict[str, Any] = field(default_factory=dict)
    software_version: str = ""
    input_sha256: str = ""
    device: str = "cpu"
    timings_s: dict[str, float] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def parameters_key(self) -> str:
        """Short hash of method + parameters: equal keys mean the same reconstruction recipe."""
        text = repr((self.method, sorted((k, repr(v)) for k, v in self.parameters.items())))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Image(_Summarised):
    """Reconstructed image: array (complex or magnitude) + geometry + provenance.

    ``dims`` e.g. ``("slice", "y", "x")`` or ``("z", "y", "x")``; ``affine`` maps voxel index
    (x, y, z/slice) to patient LPS mm (see ``Geometry.affine``).
    """

    data: Any
    dims: tuple[str, ...]
    geometry: Geometry = field(default_factory=Geometry)
    provenance: Provenance | None = None
    header: KSpaceHeader | None = None

    def __post_init__(self) -> None:
        self.dims = tuple(self.dims)
        if self.data.ndim != len(self.dims):
            raise ValueError(f"image has {self.data.ndim} axes but dims {self.dims}")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[self.dims.index(d)] for d in self.dims if d in SPATIAL_IDIMS)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel (x, y, z-or-slice) -> LPS mm."""
        shape = list(self.spatial_shape)
        if "slice" in self.dims and len(shape) == 2:
            shape = [self.data.shape[self.dims.index("slice")]] + shape
        return self.geometry.affine(tuple(shape))

    @property
    def device(self) -> str:
        return device_of(self.data)

    def to(self, device: str) -> "Image":
        return dataclasses.replace(self, data=to_device(self.data, device))

    def numpy(self) -> np.ndarray:
        return to_numpy(self.data)

    def magnitude(self) -> "Image":
        xp = get_array_module(self.data)
        return dataclasses.replace(self, data=xp.abs(self.data))

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs describing this image: shape, geometry, method, parameters, timings."""
        rows = [
            ("dims", _shape_text(self.dims, self.data.shape)),
            ("dtype / device", f"{self.data.dtype} / {self.device}"),
        ]
        rows += _geometry_rows(self.geometry, self.affine)
        p = self.provenance
        if p is not None:
            rows.append(("method", p.method))
            if p.parameters:
                rows.append(("parameters", ", ".join(f"{k}={v!r}" for k, v in p.parameters.items())))
            if p.timings_s:
                rows.append(("timings", ", ".join(f"{k} {v:.2f} s" for k, v in p.timings_s.items())))
            rows.append(("made", f"mrirecon {p.software_version or '?'} on {p.device}, {p.created[:19]}"))
        if self.header is not None and self.header.source:
            rows.append(("source", self.header.source))
        return rows

    def plot(self, **kwargs: Any) -> Any:
        """Magnitude of one plane (``mrirecon.plot.plot_image``; needs matplotlib); returns the figure."""
        from .plot import plot_image

        return plot_image(self, **kwargs)

    def __repr__(self) -> str:
        shape = dict(zip(self.dims, self.data.shape))
        method = self.provenance.method if self.provenance else None
        return f"Image({shape}, {self.data.dtype}, device={self.device}, method={method!r})"
