"""fastMRI HDF5 files: ``kspace`` (slice, coil, rows, cols) or single-coil (slice, rows, cols).

The array layout is kept as fastMRI stores it: the last axis (``kx`` here) is the one the
``mask`` undersamples and the second-to-last (``ky`` here) is the oversampled readout, so that
cropping the image to the recon matrix gives exactly the ``reconstruction_rss`` geometry.
The ``ismrmrd_header`` XML gives encoded/recon matrices and FOV; its x axis is our ``ky`` axis.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..data import Geometry, KSpace, KSpaceHeader, PatientInfo, SequenceParams
from ..errors import InputError, OutputError
from ..kernels.backend import to_numpy
from .base import Layout, RawFile, mask_from_samples
from .mrd import h5_errors
from .mrd_xml import build_mrd_xml, parse_mrd_xml

AXIS_NOTE = "axes kept as stored: in fastMRI data ky is the readout axis and kx the undersampled phase-encoding axis"


def _attr_text(attrs: h5py.AttributeManager, key: str) -> str:
    """A string attribute ('' when absent); h5py gives bytes or str depending on how it was stored."""
    value = attrs.get(key, "")
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class FastMriFile(RawFile):
    """A fastMRI HDF5 file opened for reading; ``kspace`` is read only for the slices asked for."""

    format = "fastmri"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        with h5_errors(self.path, "the HDF5 file"):
            self._h5 = h5py.File(self.path, "r")
        try:
            self._open()
        except BaseException:
            self._h5.close()
            raise

    def _open(self) -> None:
        ks = self._h5.get("kspace")
        if not isinstance(ks, h5py.Dataset):
            raise InputError(self.path, "fastMRI file lacks the 'kspace' dataset")
        if ks.ndim not in (3, 4):
            raise InputError(self.path, f"'kspace' has shape {ks.shape}; expected (slice, coil, ky, kx) or (slice, ky, kx)")
        if ks.dtype.kind != "c":
            raise InputError(self.path, f"'kspace' has dtype {ks.dtype}; expected complex")
        if 0 in ks.shape:
            which = "zero coils" if ks.ndim == 4 and ks.shape[1] == 0 else f"an empty axis {ks.shape}"
            raise InputError(self.path, f"'kspace' has {which}")
        self._kspace = ks
        self._shape = ks.shape if ks.ndim == 4 else (ks.shape[0], 1, *ks.shape[1:])
        self._mask = None
        if "mask" in self._h5:
            with h5_errors(self.path, "the 'mask' dataset"):
                mask = np.asarray(self._h5["mask"][()]).astype(bool)
            ny, nx = self._shape[-2:]
            if mask.shape == (nx,):
                mask = np.broadcast_to(mask[None, :], (ny, nx)).copy()
            elif mask.shape != (ny, nx):
                raise InputError(self.path, f"'mask' has shape {mask.shape}; expected ({nx},) or ({ny}, {nx})")
            self._mask = mask
        self._xml = None
        if "ismrmrd_header" in self._h5:
            with h5_errors(self.path, "the 'ismrmrd_header' dataset"):
                text = self._h5["ismrmrd_header"][()]
            self._xml = parse_mrd_xml(text, self.path)
        known = {"kspace", "mask", "ismrmrd_header"}
        self._notes = [AXIS_NOTE] + [f"dataset '{k}' not read" for k in self._h5 if k not in known]
        if self._xml is None:
            self._notes.append("no ismrmrd_header: matrices taken from the k-space shape, FOV unknown")
        else:
            self._notes += self._xml.uninterpreted

    def _layout(self) -> Layout:
        n_s, n_c, ny, nx = self._shape
        counts = {"slices": n_s}
        if self._mask is not None:
            counts["acquired_columns"] = int(self._mask.any(axis=0).sum())
        return Layout(dims=("slice", "coil", "ky", "kx"), shape=self._shape, counts=counts,
                      uninterpreted=list(self._notes))

    def _header(self) -> KSpaceHeader:
        _, _, ny, nx = self._shape
        attrs = self._h5.attrs
        acquisition = _attr_text(attrs, "acquisition")
        extra: dict[str, object] = {"axis_note": AXIS_NOTE}
        for key in ("max", "norm"):
            try:
                extra[key] = float(attrs[key])
            except (KeyError, TypeError, ValueError):
                continue
        if self._xml is None:
            return KSpaceHeader(
                encoded_matrix=(1, ny, nx), recon_matrix=(1, ny, nx), kspace_centre=(0, ny // 2, nx // 2),
                sequence=SequenceParams(protocol_name=acquisition),
                patient=self._patient(attrs), extra=extra,
            )
        xml = self._xml
        rx, ry, rz = xml.recon_xyz
        fx, fy, fz = xml.recon_fov_xyz
        sequence = dataclasses.replace(xml.sequence, protocol_name=xml.sequence.protocol_name or acquisition)
        patient = dataclasses.replace(xml.patient, id=xml.patient.id or self._patient(attrs).id)
        return KSpaceHeader(
            encoded_matrix=(1, ny, nx),
            recon_matrix=(1, min(rx, ny), min(ry, nx)),
            kspace_centre=(0, ny // 2, nx // 2),
            acceleration=(xml.acceleration[1], xml.acceleration[0]),
            geometry=Geometry(fov_mm=(fz, fx, fy)),
            sequence=sequence, patient=patient, extra=extra,
        )

    @staticmethod
    def _patient(attrs: h5py.AttributeManager) -> PatientInfo:
        return PatientInfo(id=_attr_text(attrs, "patient_id"))

    def _load(self, slices: np.ndarray | None, include_ignored: bool) -> KSpace:
        with h5_errors(self.path, "the 'kspace' dataset"):
            data = self._kspace[()] if slices is None else self._kspace[slices]
        data = np.asarray(data).astype(np.complex64, copy=False)
        if data.ndim == 3:
            data = data[:, None]
        mask = self._mask if self._mask is not None else mask_from_samples(data, 2)
        if mask is not None and mask.all():
            mask = None
        return KSpace(data=data, dims=("slice", "coil", "ky", "kx"), header=self._header(), mask=mask)

    def close(self) -> None:
        self._h5.close()


def write_fastmri(path: str | os.PathLike, ksp: KSpace, reconstruction_rss: np.ndarray | None = None) -> None:
    """Write 2D multi-coil k-space as a fastMRI file (``kspace``, ``mask``, ``ismrmrd_header``, attrs).

    ``ksp`` dims must be ("slice", "coil", "ky", "kx") or ("coil", "ky", "kx"); ``reconstruction_rss``
    (slice, y, x), when given, is stored with the ``max`` and ``norm`` attributes fastMRI files carry.
    The mask is stored per column when it only varies along ``kx`` (as fastMRI does), else as 2D.
    Arrays are written as given (no transposition), so ``read`` gives back the same KSpace.
    """
    path = Path(path)
    if ksp.dims not in (("slice", "coil", "ky", "kx"), ("coil", "ky", "kx")):
        raise OutputError(path, f"fastMRI holds 2D (slice, coil, ky, kx) k-space; got dims {ksp.dims}")
    data = to_numpy(ksp.data).astype(np.complex64, copy=False)
    if data.ndim == 3:
        data = data[None]
    ny, nx = data.shape[-2:]
    mask = np.broadcast_to(to_numpy(ksp.sampling_mask()), (ny, nx))
    mask_out = mask[0] if (mask == mask[:1]).all() else mask
    # Our ky is the XML x axis (see AXIS_NOTE): swap matrices and FOV for the XML.
    h = ksp.header
    rz, ry, rx = h.recon_matrix if min(h.recon_matrix[1:]) > 1 else (1, ny, nx)
    fz, fy, fx = h.geometry.fov_mm
    xml_header = dataclasses.replace(
        h, encoded_matrix=(1, nx, ny), recon_matrix=(rz, rx, ry),
        geometry=dataclasses.replace(h.geometry, fov_mm=(fz, fx, fy)),
    )
    limits = {"kspace_encoding_step_1": (0, nx - 1, nx // 2), "slice": (0, data.shape[0] - 1, 0)}
    xml = build_mrd_xml(xml_header, n_coils=ksp.n_coils, limits=limits)
    with atomic_path(path, "fastMRI file") as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("kspace", data=data)
        h5.create_dataset("mask", data=mask_out.astype(bool))
        h5.create_dataset("ismrmrd_header", data=xml.encode())
        h5.attrs["acquisition"] = h.sequence.protocol_name
        h5.attrs["patient_id"] = h.patient.id
        if reconstruction_rss is not None:
            rss = np.asarray(to_numpy(reconstruction_rss), dtype=np.float32)
            h5.create_dataset("reconstruction_rss", data=rss)
            h5.attrs["max"] = float(rss.max())
            h5.attrs["norm"] = float(np.linalg.norm(rss))
