"""Pulseq ``.seq`` files: k-space position of every ADC sample, to order and regrid a Pulseq scan's raw data.

The twix header of a Pulseq scan holds only the interpreter's placeholder protocol and its line
counters just number the ADCs, so where each sample sits in k-space has to come from the sequence
file. ``read_sequence`` runs pypulseq's ``calculate_kspace`` and keeps, per ADC, the sample positions
in cycles per FOV. Files older than format 1.5 do not store what an RF pulse is for; pypulseq's
detection is switched on for them (flip angle <= 90 deg: excitation, else refocusing), since a
refocusing pulse taken for an excitation resets k-space instead of inverting it (a spin echo then
loses its phase encoding).

SLC and ECO labels with several values split the ADCs into images: ``label_batch`` gives their
batch dims (``slice``, ``echo``, in the canonical order of ``mrirecon.data.BATCH_DIMS``) and each
ADC's image. When every ADC is a line of constant ky (GRE, EPI: ``is_line_cartesian``),
``to_cartesian`` places each on one Cartesian grid shared by all images: its phase-encoding line
from the mean ky (the gradients, not the LIN labels, whose direction is each sequence's own
choice), the readout either copied (uniform unit spacing, either direction) or regridded (ramp
sampling: non-uniform kx) with ``mrirecon.epi.regrid_matrix``; ADCs of one image on one line (REP
repetitions, averages) are averaged. Otherwise (radial, one continuous EPI readout)
``to_noncartesian`` keeps each image's ADCs as spokes with their trajectory for the NUFFT methods.
Images must share their lines (one sampling mask) or their spokes (one trajectory); otherwise
``InputError``.

Slice geometry: a Pulseq protocol has no slice array. ``read_sequence`` keeps, per ADC, the
logical (x, y, z) offset of the slice its last excitation selected (RF frequency offset / the
gradient on at the pulse centre, in metres); ``slice_offsets`` averages it per slice. ``TwixFile``
puts slice k at the protocol's first slice centre plus that offset, taking logical x, y, z as the
protocol's read, phase and slice directions (the frame in which the interpreter plays the
sequence), and says so in ``info``. A non-selective excitation (no gradient) gives offset 0: such
slices keep one position and are only numbered, with a note.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..epi import continuous_readout_lines, regrid_matrix, regrid_readout
from ..errors import InputError

_UNIFORM_TOL = 1e-3  # cycles/FOV: readout positions this close to a unit-spaced grid are copied, not regridded
_BATCH_LABELS = (("SLC", "slice", "slices"), ("ECO", "echo", "echoes"))  # labels whose values are separate images


@dataclass
class PulseqSequence:
    """What a reconstruction needs from a ``.seq`` file.

    ``kspace``: (n_samples_total, 2) kx, ky of every ADC sample in cycles per FOV, in acquisition order;
    ``adc_samples``: samples per ADC; ``fov_m``: the sequence's FOV definition (x, y, z) in metres;
    ``labels``: the value of each Pulseq label (LIN, SLC, ECO, REP, ...) at every ADC, where the sequence sets it;
    ``excited_offset_m``: (n_adc, 3) logical (x, y, z) offset of the slice excited before each ADC, where SLC
    labels number several slices (else None).
    """

    path: Path
    name: str
    fov_m: tuple[float, float, float]
    adc_samples: np.ndarray
    kspace: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    excited_offset_m: np.ndarray | None = None

    @property
    def n_adc(self) -> int:
        return int(self.adc_samples.size)


def _excited_offsets(seq: Any, t_adc: np.ndarray, adc_samples: np.ndarray) -> np.ndarray:
    """(n_adc, 3) slice offset of each ADC's last excitation: frequency offset / gradient at the pulse centre
    (the slice a pulse selects; 0 on axes without a gradient)."""
    t_exc, fp_exc, _, _ = seq.rf_times()
    out = np.zeros((adc_samples.size, 3))
    if not len(t_exc):
        return out
    gradients = seq.get_gradients()
    at_pulse = np.zeros((len(t_exc), 3))
    for axis, pp in enumerate(gradients[:3]):
        if pp is not None:
            g = np.asarray(pp(np.asarray(t_exc)), dtype=np.float64)
            np.divide(fp_exc[0], g, out=at_pulse[:, axis], where=np.abs(g) > 0)
    first_sample = np.asarray(t_adc)[np.concatenate([[0], np.cumsum(adc_samples)[:-1]])]
    which = np.searchsorted(np.asarray(t_exc), first_sample) - 1
    out[which >= 0] = at_pulse[which[which >= 0]]
    return out


def read_sequence(path: str | Path) -> PulseqSequence:
    """Parse a Pulseq file with pypulseq and compute the k-space position of every ADC sample."""
    import pypulseq as pp

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such sequence file")
    seq = pp.Sequence()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # "older Pulseq format" notes for 1.4 files
            seq.read(str(path), detect_rf_use=None)  # None: detect RF use where the format (< 1.5) does not store it
            ktraj_adc, _, _, _, t_adc = seq.calculate_kspace()
            samples = np.asarray([seq.get_block(b).adc.num_samples for b in seq.block_events
                                  if seq.get_block(b).adc is not None], dtype=np.int64)
            labels = {k: np.asarray(v, dtype=np.int64) for k, v in seq.evaluate_labels(evolution="adc").items()
                      if len(v) == len(samples)}
            several_slices = np.unique(labels.get("SLC", [0])).size > 1
            offsets = _excited_offsets(seq, t_adc, samples) if several_slices else None  # a second RF and gradient pass
    except Exception as exc:  # noqa: BLE001 -- pypulseq raises any error type on malformed files
        raise InputError(path, f"not a readable Pulseq sequence ({type(exc).__name__}: {exc})") from None
    fov = seq.definitions.get("FOV")
    if fov is None or len(fov) < 2:
        raise InputError(path, "the sequence defines no FOV, so its k-space cannot be put on a grid")
    fov_m = tuple(float(v) for v in (list(fov) + [0.0])[:3])
    kspace = np.asarray(ktraj_adc)[:2].T * np.array(fov_m[:2])
    return PulseqSequence(path=path, name=str(seq.definitions.get("Name", "")), fov_m=fov_m,
                          adc_samples=samples, kspace=kspace, labels=labels, excited_offset_m=offsets)


def split_adcs(samples: np.ndarray, seq: PulseqSequence, raw_path: Path) -> list[np.ndarray]:
    """The raw (coil, total) samples cut into the sequence's ADCs; ``InputError`` naming both files on mismatch."""
    total = int(seq.adc_samples.sum())
    if samples.shape[-1] != total:
        raise InputError(raw_path, f"does not match sequence {seq.path.name}: the raw file has {samples.shape[-1]} "
                                   f"ADC samples, the sequence {total} in {seq.n_adc} ADC(s)")
    return np.split(samples, np.cumsum(seq.adc_samples)[:-1], axis=-1)


def _per_adc(seq: PulseqSequence) -> list[np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum(seq.adc_samples)])
    return [seq.kspace[a:b] for a, b in itertools.pairwise(offsets)]


def is_line_cartesian(seq: PulseqSequence) -> bool:
    """True when every ADC is a readout line of constant, integer ky (in cycles/FOV)."""
    per_adc = _per_adc(seq)
    ky = np.array([k[:, 1].mean() for k in per_adc])
    spread = max(float(np.ptp(k[:, 1])) for k in per_adc)
    return spread <= 0.5 and float(np.abs(ky - np.round(ky)).max()) <= 0.05


@dataclass
class LabelBatch:
    """The images that SLC / ECO labels make: ``dims`` (those with several values, canonical order), ``shape``,
    ``values`` (the label values of each dim, sorted) and ``index`` (each ADC's image, row-major over ``shape``)."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    values: dict[str, np.ndarray]
    index: np.ndarray

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def describe(self, *, values: bool = False) -> list[str]:
        """'3 slices (SLC)' per batch dim; with ``values``, '3 slices (SLC labels [0, 1, 2])'."""
        return [f"{self.shape[self.dims.index(dim)]} {plural} ({label}"
                f"{f' labels {self.values[dim].tolist()}' if values else ''})"
                for label, dim, plural in _BATCH_LABELS if dim in self.dims]


def label_batch(seq: PulseqSequence) -> LabelBatch:
    """Split the ADCs into images by their SLC and ECO labels (one image when neither has several values)."""
    dims, shape, values, index = [], [], {}, np.zeros(seq.n_adc, dtype=np.int64)
    for label, dim, _ in _BATCH_LABELS:
        distinct, which = np.unique(seq.labels.get(label, np.zeros(seq.n_adc, dtype=np.int64)), return_inverse=True)
        if distinct.size > 1:
            dims.append(dim)
            shape.append(distinct.size)
            values[dim] = distinct
            index = index * distinct.size + which
    return LabelBatch(dims=tuple(dims), shape=tuple(shape), values=values, index=index)


def slice_offsets(seq: PulseqSequence) -> np.ndarray | None:
    """(n_slices, 3) mean logical (x, y, z) offset in metres of each SLC value's excited slice, or None if unknown."""
    if seq.excited_offset_m is None:
        return None
    distinct, which = np.unique(seq.labels.get("SLC", np.zeros(seq.n_adc, dtype=np.int64)), return_inverse=True)
    return np.stack([seq.excited_offset_m[which == s].mean(axis=0) for s in range(distinct.size)])


def _images_differ(seq: PulseqSequence, batch: LabelBatch, raw_path: Path, what: str) -> InputError:
    """``InputError`` naming the raw file and the sequence when the labelled images cannot share one grid."""
    return InputError(raw_path, f"sequence {seq.path.name} labels {', '.join(batch.describe())} whose {what} differ, "
                                "so they cannot share one k-space grid")


@dataclass
class NonCartesianPulseq:
    """A Pulseq scan kept as acquired: (*batch, coil, adc, sample) samples (``batch_dims`` from SLC/ECO labels),
    their (adc, sample, 2) (ky, kx) trajectory in cycles/FOV, shared by all images, and the square image matrix
    that the largest |k| implies."""

    kspace: np.ndarray
    trajectory: np.ndarray
    matrix: int
    batch_dims: tuple[str, ...] = ()


def to_noncartesian(adcs: list[np.ndarray], seq: PulseqSequence, raw_path: Path) -> NonCartesianPulseq:
    """Stack ADCs of one length as (*batch, coil, adc, sample) with their trajectory; ``InputError`` when lengths
    differ or the labelled slices/echoes have different spokes."""
    if np.unique(seq.adc_samples).size != 1:
        raise InputError(raw_path, f"sequence {seq.path.name} mixes ADC lengths {sorted(set(seq.adc_samples.tolist()))}; "
                                   "non-Cartesian data need one length")
    batch = label_batch(seq)
    data = np.stack(adcs, axis=1).astype(np.complex64)
    trajectory = np.stack([k[:, ::-1] for k in _per_adc(seq)]).astype(np.float32)  # (kx, ky) -> (ky, kx)
    images = [np.flatnonzero(batch.index == b) for b in range(batch.size)]
    first = trajectory[images[0]]
    if any(i.size != images[0].size or np.abs(trajectory[i] - first).max(initial=0) > _UNIFORM_TOL for i in images):
        raise _images_differ(seq, batch, raw_path, f"spokes ({[i.size for i in images]} ADCs)")
    kspace = np.stack([data[:, i] for i in images]).reshape(*batch.shape, *data.shape[:1], *first.shape[:2])
    matrix = 2 * int(np.ceil(np.abs(first).max() - 1e-3))
    return NonCartesianPulseq(kspace=kspace, trajectory=first, matrix=matrix, batch_dims=batch.dims)


@dataclass
class CartesianPulseq:
    """A Pulseq scan on a Cartesian grid: (*batch, coil, ky, kx) k-space (``batch_dims`` from SLC/ECO labels),
    the acquired-line mask shared by all images, and the (*batch, ky) readout polarity per line."""

    kspace: np.ndarray
    line_mask: np.ndarray
    reflected: np.ndarray
    regridded: bool
    batch_dims: tuple[str, ...] = ()

    @property
    def mixed_polarity(self) -> np.ndarray:
        """(*batch) bool: the image's lines are read in both directions (EPI, whose ghosts need correcting),
        unlike a bipolar multi-echo scan whose every echo has one direction."""
        acquired = self.reflected[..., self.line_mask]
        return acquired.any(axis=-1) & ~acquired.all(axis=-1)


def to_cartesian(adcs: list[np.ndarray], seq: PulseqSequence, raw_path: Path) -> CartesianPulseq:
    """Place each ADC (coil, samples) of a 2D Cartesian-type scan (GRE, EPI) on the grid its k-space positions give.

    ADCs of one image (SLC/ECO labels) on one line (averages, repetitions) are averaged. Raises
    ``InputError`` when the ADCs are not lines of constant ky (see ``is_line_cartesian``) or when the
    labelled slices/echoes do not acquire the same lines.
    """
    if not is_line_cartesian(seq):
        raise InputError(raw_path, f"sequence {seq.path.name} is not line-by-line Cartesian: use to_noncartesian")
    batch = label_batch(seq)
    per_adc = _per_adc(seq)
    ky = np.array([k[:, 1].mean() for k in per_adc])
    kx_all = seq.kspace[:, 0]
    n_x = round(float(kx_all.max() - kx_all.min())) + 1
    n_x += n_x % 2
    line = np.round(ky).astype(np.int64)
    span = int(line.max() - line.min()) + 1
    n_y = span + span % 2
    index = line + n_y // 2  # ky = 0 at n_y // 2 where the lines allow it
    if index.min() < 0 or index.max() >= n_y:  # e.g. lines +N/2 .. -N/2+1: keep them contiguous instead
        index = line - line.min()
    n_coils = adcs[0].shape[0]
    out = np.zeros((batch.size, n_y, n_coils, n_x), dtype=np.complex64)
    hits = np.zeros((batch.size, n_y), dtype=np.int64)
    reflected = np.zeros((batch.size, n_y), dtype=bool)
    matrices: dict[bytes, np.ndarray] = {}
    regridded = False
    for data, k, row, image in zip(adcs, per_adc, index, batch.index):
        kx = k[:, 0] - 0.5  # grid points sit at j - n/2 + 0.5 (symmetric about k = 0)
        reverse = kx[-1] < kx[0]
        ordered = kx[::-1] if reverse else kx
        start = round(float(ordered[0])) + n_x // 2
        if np.abs(np.diff(ordered) - 1).max() < _UNIFORM_TOL and 0 <= start and start + kx.size <= n_x:
            out[image, row, :, start: start + kx.size] += data[:, ::-1] if reverse else data
        else:
            key = np.round(kx, 4).tobytes()
            if key not in matrices:
                matrices[key] = regrid_matrix(kx, n_x)
            out[image, row] += regrid_readout(data, matrices[key])
            regridded = True
        hits[image, row] += 1
        reflected[image, row] = reverse
    acquired = hits > 0
    if (acquired != acquired[:1]).any():
        raise _images_differ(seq, batch, raw_path, f"k-space lines ({acquired.sum(axis=1).tolist()} lines)")
    out /= np.maximum(hits, 1)[:, :, None, None]
    kspace = np.moveaxis(out, 1, 2).reshape(*batch.shape, n_coils, n_y, n_x)
    return CartesianPulseq(kspace=kspace, line_mask=acquired[0], reflected=reflected.reshape(*batch.shape, n_y),
                           regridded=regridded, batch_dims=batch.dims)


def cut_continuous_epi(samples: np.ndarray, seq: PulseqSequence) -> tuple[list[np.ndarray], PulseqSequence] | None:
    """An EPI recorded as one continuous readout per ADC, cut into its lines (``epi.continuous_readout_lines``):
    from the raw (coil, total) ``samples`` (``split_adcs`` checked their count), each line's (coil, samples)
    and the sequence with one ADC per line (keeping its ADC's labels); None when the trajectory is not such
    an EPI (radial, spiral, off-grid)."""
    lines = continuous_readout_lines(seq.kspace, seq.adc_samples)
    if lines is None:
        return None
    adc_of_line = np.searchsorted(np.cumsum(seq.adc_samples), [line[0] for line in lines], side="right")
    per_line = dataclasses.replace(
        seq, adc_samples=np.array([line.size for line in lines]),
        kspace=np.concatenate([seq.kspace[line] for line in lines]),
        labels={name: values[adc_of_line] for name, values in seq.labels.items()},
        excited_offset_m=None if seq.excited_offset_m is None else seq.excited_offset_m[adc_of_line])
    return [samples[:, line] for line in lines], per_line
