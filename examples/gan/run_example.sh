#!/usr/bin/env bash
# The GAN example end to end, offline: init, train (30 epochs), evaluate, 64 samples to gan_samples.png.
# Run from anywhere; it works in the repository root. An existing "pretrained_gan" session is resumed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -d pretrained_gan ]; then
    echo "Session \"pretrained_gan\" exists: resuming it (python init.py --force ... starts afresh)"
else
    python init.py examples/gan/training.json
fi
python train.py pretrained_gan
python evaluate.py examples/gan/evaluation.json
python infer.py examples/gan/inference.json $(seq 1 64)
