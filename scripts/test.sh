#!/usr/bin/env bash
# Set up (apt + .venv) if needed, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
