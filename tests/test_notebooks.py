"""Execute every example notebook top to bottom (CPU, sample data) and look at the figure it ends with.

A notebook that raises fails its test with the cell's traceback. Each notebook must end with a figure:
the last code cell's PNG output is decoded and must not be blank. Outputs are stripped in git, so the
stored notebooks are checked for that too.
"""
from __future__ import annotations

import base64
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
# Fraction of mid-tone pixels in the final figure (conftest ``midtone_fraction``): the four notebooks'
# final figures measured 0.16-0.43, blank figures 0.002-0.005.
MIN_MIDTONES = 0.05


def test_there_are_four_notebooks() -> None:
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: outputs not stripped"


def _final_png(book) -> bytes:
    """The PNG shown by the last code cell (the notebook's closing figure)."""
    last = [cell for cell in book.cells if cell.cell_type == "code"][-1]
    for output in last.outputs:
        if "image/png" in output.get("data", {}):
            return base64.b64decode(output["data"]["image/png"])
    raise AssertionError("the last code cell shows no figure")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_ends_with_a_figure(path: Path, midtone_fraction) -> None:
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    for cell in book.cells:
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error", f"{path.name}: {output.get('ename')}"
    value = midtone_fraction(_final_png(book))
    assert value > MIN_MIDTONES, f"{path.name}: final figure looks blank ({value:.3f} mid-tone pixels)"
