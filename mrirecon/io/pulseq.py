"""Pulseq ``.seq`` files: k-space position of every ADC sample, to order and regrid a Pulseq scan's raw data.

The twix header of a Pulseq scan holds only the interpreter's placeholder protocol and its line
counters just number the ADCs, so where each sample sits in k-space has to come from the sequence
file. ``read_sequence`` runs pypulseq's ``calculate_kspace`` and keeps, per ADC, the sample positions
in cycles per FOV. When every ADC is a line of constant ky (GRE, EPI: ``is_line_cartesian``),
``to_cartesian`` places each on a Cartesian grid: its phase-encoding line from the mean ky (the
gradients, not the LIN labels, whose direction is each sequence's own choice; SLC/ECO labels with
several values are refused, REP labels averaged), the
readout either copied (uniform unit spacing, either direction) or regridded (ramp sampling:
non-uniform kx) with ``mrirecon.epi.regrid_matrix``. Otherwise (radial, one continuous EPI
readout) ``to_noncartesian`` keeps the samples with their trajectory for the NUFFT methods.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..epi import regrid_matrix, regrid_readout
from ..errors import InputError

_UNIFORM_TOL = 1e-3  # cycles/FOV: readout positions this close to a unit-spaced grid are copied, not regridded
_SEPARATE_LABELS = {"SLC": "slices", "ECO": "echoes"}  # labels whose values must not share one k-space grid


@dataclass
class PulseqSequence:
    """What a reconstruction needs from a ``.seq`` file.

    ``kspace``: (n_samples_total, 2) kx, ky of every ADC sample in cycles per FOV, in acquisition order;
    ``adc_samples``: samples per ADC; ``fov_m``: the sequence's FOV definition (x, y, z) in metres;
    ``labels``: the value of each Pulseq label (LIN, SLC, ECO, REP, ...) at every ADC, where the sequence sets it.
    """

    path: Path
    name: str
    fov_m: tuple[float, float, float]
    adc_samples: np.ndarray
    kspace: np.ndarray
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_adc(self) -> int:
        return int(self.adc_samples.size)


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
            seq.read(str(path))
            ktraj_adc = np.asarray(seq.calculate_kspace()[0])
            labels = seq.evaluate_labels(evolution="adc")
    except Exception as exc:  # noqa: BLE001 -- pypulseq raises any error type on malformed files
        raise InputError(path, f"not a readable Pulseq sequence ({type(exc).__name__}: {exc})") from None
    samples = [seq.get_block(b).adc.num_samples for b in seq.block_events if seq.get_block(b).adc is not None]
    fov = seq.definitions.get("FOV")
    if fov is None or len(fov) < 2:
        raise InputError(path, "the sequence defines no FOV, so its k-space cannot be put on a grid")
    fov_m = tuple(float(v) for v in (list(fov) + [0.0])[:3])
    kspace = ktraj_adc[:2].T * np.array(fov_m[:2])
    return PulseqSequence(path=path, name=str(seq.definitions.get("Name", "")), fov_m=fov_m,
                          adc_samples=np.asarray(samples, dtype=np.int64), kspace=kspace,
                          labels={k: np.asarray(v, dtype=np.int64) for k, v in labels.items() if len(v) == len(samples)})


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
class NonCartesianPulseq:
    """A Pulseq scan kept as acquired: (coil, adc, sample) samples, their (adc, sample, 2) (ky, kx) trajectory
    in cycles/FOV, and the square image matrix that the largest |k| implies."""

    kspace: np.ndarray
    trajectory: np.ndarray
    matrix: int


def to_noncartesian(adcs: list[np.ndarray], seq: PulseqSequence, raw_path: Path) -> NonCartesianPulseq:
    """Stack ADCs of one length as (coil, adc, sample) with their trajectory; ``InputError`` when lengths differ
    or SLC/ECO labels number several slices or echoes."""
    _check_one_image(seq, raw_path)
    if np.unique(seq.adc_samples).size != 1:
        raise InputError(raw_path, f"sequence {seq.path.name} mixes ADC lengths {sorted(set(seq.adc_samples.tolist()))}; "
                                   "non-Cartesian data need one length")
    data = np.stack(adcs, axis=1).astype(np.complex64)
    trajectory = np.stack([k[:, ::-1] for k in _per_adc(seq)]).astype(np.float32)  # (kx, ky) -> (ky, kx)
    matrix = 2 * int(np.ceil(np.abs(trajectory).max() - 1e-3))
    return NonCartesianPulseq(kspace=data, trajectory=trajectory, matrix=matrix)


@dataclass
class CartesianPulseq:
    """A Pulseq scan on a Cartesian grid: (coil, ky, kx) k-space, acquired-line mask, and readout polarity per line."""

    kspace: np.ndarray
    line_mask: np.ndarray
    reflected: np.ndarray
    regridded: bool


def _check_one_image(seq: PulseqSequence, raw_path: Path) -> None:
    """Refuse sequences whose labels number several slices or echoes: their ADCs would be mixed on one grid."""
    for label, what in _SEPARATE_LABELS.items():
        values = np.unique(seq.labels.get(label, [0]))
        if values.size > 1:
            raise InputError(raw_path, f"sequence {seq.path.name} labels {values.size} {what} ({label}); a Pulseq scan "
                                       "is read as one 2D image, which would mix them")


def to_cartesian(adcs: list[np.ndarray], seq: PulseqSequence, raw_path: Path) -> CartesianPulseq:
    """Place each ADC (coil, samples) of a 2D Cartesian-type scan (GRE, EPI) on the grid its k-space positions give.

    ADCs that land on the same line (averages, repetitions) are averaged. Raises ``InputError`` when
    the ADCs are not lines of constant ky (see ``is_line_cartesian``) or when SLC/ECO labels number
    several slices or echoes.
    """
    if not is_line_cartesian(seq):
        raise InputError(raw_path, f"sequence {seq.path.name} is not line-by-line Cartesian: use to_noncartesian")
    _check_one_image(seq, raw_path)
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
    out = np.zeros((n_y, n_coils, n_x), dtype=np.complex64)
    hits = np.zeros(n_y, dtype=np.int64)
    reflected = np.zeros(n_y, dtype=bool)
    matrices: dict[bytes, np.ndarray] = {}
    regridded = False
    for data, k, row in zip(adcs, per_adc, index):
        kx = k[:, 0] - 0.5  # grid points sit at j - n/2 + 0.5 (symmetric about k = 0)
        reverse = kx[-1] < kx[0]
        ordered = kx[::-1] if reverse else kx
        start = round(float(ordered[0])) + n_x // 2
        if np.abs(np.diff(ordered) - 1).max() < _UNIFORM_TOL and 0 <= start and start + kx.size <= n_x:
            out[row, :, start: start + kx.size] += data[:, ::-1] if reverse else data
        else:
            key = np.round(kx, 4).tobytes()
            if key not in matrices:
                matrices[key] = regrid_matrix(kx, n_x)
            out[row] += regrid_readout(data, matrices[key])
            regridded = True
        hits[row] += 1
        reflected[row] = reverse
    out /= np.maximum(hits, 1)[:, None, None]
    return CartesianPulseq(kspace=np.moveaxis(out, 0, 1), line_mask=hits > 0, reflected=reflected, regridded=regridded)
