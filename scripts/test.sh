#!/usr/bin/env bash
# Set up (apt + .venv) if needed, then run the whole test suite; with --fast, only the tier marked
# `fast` (under a minute: run it before every commit). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
bash scripts/setup.sh
args=()
fast=0
for a in "$@"; do
  if [ "$a" = "--fast" ]; then fast=1; else args+=("$a"); fi
done
if [ "$fast" = 1 ]; then
  # Only the modules that hold fast tests are collected: importing the others (torch, Ray) costs seconds.
  mapfile -t files < <(grep -l "pytest.mark.fast" tests/test_*.py)
  args=(-m fast "${files[@]}" ${args[@]+"${args[@]}"})
fi
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
