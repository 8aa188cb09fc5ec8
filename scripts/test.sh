#!/usr/bin/env bash
# Set up (apt + .venv) if needed, then run the whole test suite; with --fast, only the tier marked
# `fast` (under a minute: run it before every commit). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
bash scripts/setup.sh
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then args+=(-m fast); else args+=("$a"); fi
done
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
