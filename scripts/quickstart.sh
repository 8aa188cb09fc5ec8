#!/usr/bin/env bash
# The main job on a fresh machine: set up, prepare the Fashion-MNIST test split, train the default
# model if there is none yet, and audit it. The report lands in reports/fashion_mnist_scratch/.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} NO_ALBUMENTATIONS_UPDATE=1
bash scripts/setup.sh
PY=.venv/bin/python

MODEL=models/fashion_mnist_scratch/model.onnx
if [ ! -d data/fashion-mnist/test ]; then
  $PY -m training prepare fashion-mnist --out data/fashion-mnist
fi
if [ ! -f "$MODEL" ]; then
  echo "quickstart: no model at $MODEL yet: training the scratch CNN (a few minutes on 2 cores)"
  $PY -m training fit --config configs/fashion_mnist_scratch.toml
fi
set +e
# the training split as --train: leakage (copies in the training data) and shift (novelty) against it
$PY -m audit run --model "$MODEL" --data data/fashion-mnist/test --train data/fashion-mnist/train \
  --out reports/fashion_mnist_scratch "$@"
code=$?
set -e
echo "quickstart: audit exit code $code (0 pass, 1 a criterion failed, 4 inconclusive); open reports/fashion_mnist_scratch/report.html"
exit $code
