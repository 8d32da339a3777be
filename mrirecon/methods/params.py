"""Parameter groups that several methods share, written once.

A method takes a group as one keyword-only argument annotated with the group's class (e.g.
``coils: CoilMapParams = CoilMapParams()``). The registry lists the group's fields as the method's own
flat parameters (``recon(ksp, "sense", calib=12)``, the CLI's ``--param calib=12``, the recipe in
the store), documents them from the group's docstring, and gathers them into one instance when it
calls the method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ParamGroup:
    """Base of a frozen dataclass whose fields are parameters shared by several methods.

    Its docstring documents each field with a ``name: text`` line, as a method's docstring does.
    """


@dataclass(frozen=True)
class CoilMapParams(ParamGroup):
    """Coil sensitivities of a SENSE-type method: given, or estimated from the task's own calibration data.

    maps: coil sensitivities (coil, *spatial), or (*batch, coil, *spatial) for one set per batch entry
        (slice, echo...) of the k-space given to recon(); None estimates them by coil_maps.
    coil_maps: how to estimate maps when none are given: "espirit", "walsh" or "inati" (Walsh and
        Inati: adaptive, from the low-resolution calibration images, default smoothing window).
    calib: calibration box edge, shrunk to the fully sampled centre (non-Cartesian: the centre
        sampled at Nyquist), for every coil_maps choice.
    kernel: ESPIRiT kernel edge.
    thresh: ESPIRiT singular-value threshold relative to the largest.
    crop: ESPIRiT eigenvalue threshold; maps are zero below it.
    """

    maps: Any = None
    coil_maps: str = "espirit"
    calib: int = 24
    kernel: int = 6
    thresh: float = 0.02
    crop: float = 0.95

    def estimator_options(self) -> dict[str, Any]:
        """Keyword options of the chosen estimator: the ESPIRiT ones for ESPIRiT, none for Walsh/Inati."""
        if self.coil_maps == "espirit":
            return {"kernel": self.kernel, "thresh": self.thresh, "crop": self.crop}
        return {}
