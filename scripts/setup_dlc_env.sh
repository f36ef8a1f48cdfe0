#!/usr/bin/env bash
# The DeepLabCut environment for tests/dlc: DeepLabCut 3.0.2 (pandas < 3) beside this package, in .venv-dlc.
#
#   bash scripts/setup_dlc_env.sh        # then: make test-dlc
#
# Idempotent: a stamp holds the hash of this script, scripts/dlc-constraints.txt and pyproject.toml; a second run
# with none of them changed installs nothing. The main .venv (CPU torch 2.13.0) is not touched. Why this venv has
# torch 2.14.1 + torchvision 0.29.1 instead: scripts/dlc-constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${DLC_VENV:-.venv-dlc}
CONSTRAINTS=scripts/dlc-constraints.txt
STAMP=$VENV/.tardis-dlc-installed

want=$(cat scripts/setup_dlc_env.sh "$CONSTRAINTS" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "$VENV is up to date"
  exit 0
fi
rm -f "$STAMP"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet --constraint "$CONSTRAINTS")
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"${pip[@]}" torch torchvision  # first and alone, so the resolver never weighs another torch
# movement: tests/dlc/test_dlc_outputs.py reads our result files with it (a DeepLabCut-ecosystem consumer, pandas < 3)
"${pip[@]}" -e ".[runtime,export,dlc]" pytest pytest-timeout movement
"$VENV/bin/python" -c "import deeplabcut, pandas, torch; print('deeplabcut', deeplabcut.__version__, \
'pandas', pandas.__version__, 'torch', torch.__version__)"
echo "$want" > "$STAMP"
