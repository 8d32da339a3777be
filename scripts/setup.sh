#!/usr/bin/env bash
# Create ./.venv (if missing) and install mrirecon into it, editable, with the test extra.
# Usage: bash scripts/setup.sh [EXTRAS]   e.g. EXTRAS="test,bench" or "test,cuda12"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
