#!/usr/bin/env bash
# Regenerate the committed reports from the trained models, with today's auditor.
#   bash scripts/reports.sh                  # every model in MODELS that exists under models/
#   bash scripts/reports.sh elpv_scratch     # one of them
# Each model is trained by `python -m training fit --config configs/<name>.toml` (training/RESULTS.md).
# Every audit runs with its training split as --train (leakage and shift against it); the ELPV
# audits judge fairness over module_type and embed no image (the ELPV licence is non-commercial).
# Exit codes 1 (a criterion failed) and 4 (inconclusive) are verdicts, not errors.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} NO_ALBUMENTATIONS_UPDATE=1
PY=.venv/bin/python

MODELS=(fashion_mnist_scratch elpv_scratch elpv_lite0 elpv4_lite0 fashion_mnist_lite0)

audit() {  # the data root is the one the model was trained from (its resolved config)
  local name=$1 args=() data
  data=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["data"]["root"])' "models/$name/config.resolved.json")
  [[ $name == elpv* ]] && args+=(--sensitive module_type --no-thumbnails)
  [[ $name == *lite0 ]] && args+=(--torch-model "models/$name/model.safetensors")
  local code=0
  $PY -m audit run --model "models/$name/model.onnx" --data "$data/test" --train "$data/train" \
    --out "reports/$name" --no-progress "${args[@]}" || code=$?
  if [[ $code != 0 && $code != 1 && $code != 4 ]]; then
    echo "reports: the audit of $name ended with exit code $code" >&2
    exit "$code"
  fi
  mkdir -p "reports/$name/training"
  cp "models/$name"/{training_report.md,results.json,config.resolved.json,val_curves.png} "reports/$name/training/"
  echo "reports: $name audited (exit code $code)"
}

for name in "${@:-${MODELS[@]}}"; do
  [[ " ${MODELS[*]} " == *" $name "* ]] || { echo "reports: unknown model $name (one of ${MODELS[*]})" >&2; exit 2; }
  if [[ -f models/$name/model.onnx ]]; then audit "$name"; else echo "reports: no models/$name/model.onnx, skipped"; fi
done
if [[ -f reports/elpv_lite0/verdict.json && -f reports/elpv_scratch/verdict.json ]]; then
  code=0
  $PY -m audit compare --candidate reports/elpv_lite0 --baseline reports/elpv_scratch --no-thumbnails \
    --out reports/elpv_lite0-vs-scratch || code=$?
  [[ $code == 0 || $code == 1 || $code == 4 ]] || exit "$code"
fi
