"""mrirecon: MRI reconstruction on CPU and GPU, from raw scanner files to images.

In a notebook::

    import mrirecon
    ksp = mrirecon.read("scan.h5")
    img = mrirecon.recon(ksp, "sense")
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .data import Geometry, Image, KSpace, KSpaceHeader, PatientInfo, Provenance, SequenceParams
from .errors import InputError, MriReconError, OutputError

__version__ = "0.1.0"

# Heavier entry points load on first use so that ``import mrirecon`` (and the CLI) start fast.
_LAZY = {  # name -> (module, attribute; None for the module itself)
    "read": ("mrirecon.io", "read"),
    "open_raw": ("mrirecon.io", "open_raw"),
    "recon": ("mrirecon.reconstruction", "recon"),
    "list_methods": ("mrirecon.methods", "list_methods"),
    "sim": ("mrirecon.sim", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = import_module(module_name)
        return module if attribute is None else getattr(module, attribute)
    raise AttributeError(f"module 'mrirecon' has no attribute {name!r}")


__all__ = [
    "Geometry",
    "Image",
    "InputError",
    "KSpace",
    "KSpaceHeader",
    "MriReconError",
    "OutputError",
    "PatientInfo",
    "Provenance",
    "SequenceParams",
    *_LAZY,
]
