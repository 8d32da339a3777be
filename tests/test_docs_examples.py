"""The examples in docs/guide.md and README.md run, so that they cannot rot.

Each document's ```python blocks run in order in one namespace; each ``mrirecon ...`` line of its ```bash
blocks runs through ``mrirecon.cli.main`` and must exit 0 (a block whose first line is ``# needs ...``
needs a GPU, a PACS or a cluster and is skipped). They run in a temporary folder that links
``sample_data/``, so relative paths work as from the repository root and outputs stay out of the clone.
The guide's methods table must equal the one generated from the method registry.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import mrirecon
from mrirecon.cli import main

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "guide.md"
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TABLE = re.compile(r"<!-- methods table:[^\n]*-->\n(.*?)<!-- end of methods table -->", re.S)


def code_blocks(path: Path, language: str) -> list[str]:
    """The bodies of the fenced blocks of ``language`` in ``path``, in document order."""
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def cli_lines(path: Path) -> list[str]:
    """``mrirecon ...`` lines of the runnable bash blocks (blocks starting ``# needs`` are not)."""
    lines = []
    for block in code_blocks(path, "bash"):
        if block.lstrip().startswith("# needs"):
            continue
        lines += [line.strip() for line in block.splitlines() if line.strip().startswith("mrirecon ")]
    return lines


def methods_table() -> str:
    """The guide's methods table, generated from ``mrirecon.list_methods()``."""
    rows = ["| name | what | parameters (defaults) | reference |", "|---|---|---|---|"]
    for m in mrirecon.list_methods():
        params = ", ".join(f"`{p.name}={p.default!r}`" for p in m.params) or "—"
        rows.append(f"| `{m.name}` | {m.summary} | {params} | {m.reference or '—'} |")
    return "\n".join(rows) + "\n"


@pytest.fixture
def in_scratch(tmp_path, monkeypatch) -> Path:
    """cwd = a temporary folder with ``sample_data`` linked in."""
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_links_the_guide() -> None:
    assert "docs/guide.md" in README.read_text()


def test_guide_methods_table_matches_the_registry() -> None:
    match = TABLE.search(GUIDE.read_text())
    assert match, "methods table markers missing in docs/guide.md"
    assert match.group(1) == methods_table(), "regenerate the table with methods_table():\n" + methods_table()


def test_guide_has_the_sections_a_new_user_needs() -> None:
    headings = re.findall(r"^## (.+)$", GUIDE.read_text(), re.M)
    for needed in ("Install", "Formats", "Methods", "Python API", "Command line", "Running on a cluster",
                   "Sending to a PACS"):
        assert needed in headings


def test_every_cli_command_is_documented() -> None:
    text = GUIDE.read_text()
    from mrirecon.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here
    for name in commands:
        assert f"`mrirecon {name}" in text, f"mrirecon {name} is missing from the guide's CLI reference"


@pytest.mark.slow
@pytest.mark.parametrize("path", [GUIDE, README], ids=lambda p: p.name)
def test_python_examples_run(path: Path, in_scratch: Path) -> None:
    pytest.importorskip("matplotlib")
    blocks = code_blocks(path, "python")
    assert blocks, f"{path.name} has no python examples"
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{path.name}[python block {i}]", "exec"), namespace)


@pytest.mark.slow
def test_cli_examples_run(in_scratch: Path, capsys) -> None:
    lines = cli_lines(GUIDE) + cli_lines(README)
    assert len(lines) >= 5
    for line in lines:
        argv = shlex.split(line)[1:]
        assert main(argv) == 0, f"{line!r} failed: {capsys.readouterr().err}"
    assert (in_scratch / "out" / "phantom.nii.gz").is_file()
    assert any((in_scratch / "out" / "dicom").rglob("*.dcm"))
