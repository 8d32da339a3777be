"""Rich displays: ``KSpace``/``Image`` summaries (terminal text, Jupyter HTML) say what the objects hold."""
from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mrirecon import read, recon
from mrirecon.data import Image, KSpace, KSpaceHeader, PatientInfo

PHANTOM = Path(__file__).resolve().parents[1] / "sample_data" / "phantom_ismrmrd.h5"


class _Cells(HTMLParser):
    """Collects the text of <th>/<td> cells: the HTML must parse into (label, value) rows."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag in ("th", "td"):
            self._in_cell = True
            self.cells.append("")

    def handle_endtag(self, tag) -> None:
        if tag in ("th", "td"):
            self._in_cell = False

    def handle_data(self, data) -> None:
        if self._in_cell:
            self.cells[-1] += data


def _rows(html_text: str) -> dict[str, str]:
    parser = _Cells()
    parser.feed(html_text)
    return dict(zip(parser.cells[::2], parser.cells[1::2]))


@pytest.fixture(scope="module")
def phantom():
    ksp = read(PHANTOM)
    return ksp, recon(ksp, "zerofill", device="cpu")


def test_kspace_summary_states_shape_sampling_and_geometry(phantom) -> None:
    ksp, _ = phantom
    rows = dict(ksp.summary_rows())
    assert rows["dims"] == "slice 4 x coil 8 x ky 128 x kx 128"
    fraction = float(np.asarray(ksp.sampling_mask()).mean())
    assert rows["sampled"].startswith(f"{100 * fraction:.1f}%")
    assert rows["FOV (z, y, x)"] == "5 x 240 x 240 mm"
    assert rows["voxel (x, y, z)"] == "1.88 x 1.88 x 6 mm"  # 240/128 in-plane, 6 mm between slice centres
    assert "phantom_ismrmrd.h5" in rows["source"]
    text = ksp.summary()
    assert text.splitlines()[0] == "KSpace" and len(text.splitlines()) == len(rows) + 1
    assert _rows(ksp._repr_html_()) == rows


def test_image_summary_states_method_parameters_and_geometry(phantom) -> None:
    ksp, _ = phantom
    img = recon(ksp.select(slice=[0]), "sense", device="cpu", max_iter=3)
    rows = _rows(img._repr_html_())
    assert rows["dims"] == "slice 1 x y 128 x x 128"
    assert rows["method"] == "sense"
    assert "max_iter=3" in rows["parameters"]
    assert rows["dtype / device"] == "complex64 / cpu"
    assert "Image" in img.summary() and "max_iter=3" in img.summary()


def test_html_is_escaped_and_patient_data_stays_out() -> None:
    header = KSpaceHeader(source="<b>x</b>.h5", patient=PatientInfo(name="Doe^Jane", id="12345"))
    ksp = KSpace(np.zeros((2, 8, 8), np.complex64), ("coil", "ky", "kx"), header)
    page = ksp._repr_html_()
    assert "<b>x</b>" not in page and html.escape("<b>x</b>") in page
    for text in (page, ksp.summary(), repr(ksp)):
        assert "Doe" not in text and "12345" not in text


def test_terminal_repr_is_one_readable_line(phantom) -> None:
    ksp, img = phantom
    for obj in (ksp, img):
        text = repr(obj)
        assert "\n" not in text and "complex64" in text and "device=cpu" in text


def test_image_without_provenance_still_summarises() -> None:
    img = Image(np.ones((4, 4), np.float32), ("y", "x"))
    rows = dict(img.summary_rows())
    assert rows["dims"] == "y 4 x x 4" and "method" not in rows
