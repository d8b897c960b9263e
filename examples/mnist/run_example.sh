#!/usr/bin/env bash
# The MNIST tutorial end to end, offline: data, init, train (5 epochs), evaluate, infer on a digit.
# Run from the repository root. An existing "pretrained" session is resumed, never overwritten.
set -euo pipefail
cd "$(dirname "$0")/../.."
python examples/mnist/prepare_data.py data
if [ -d pretrained ]; then
    echo "Session \"pretrained\" exists: resuming it (python init.py --force ... starts afresh)"
else
    python init.py examples/mnist/training.json
fi
python train.py pretrained
python evaluate.py examples/mnist/evaluation.json
python infer.py examples/mnist/inference.json examples/mnist/digit_2.png
