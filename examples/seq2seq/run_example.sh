#!/usr/bin/env bash
# The seq2seq example end to end, offline: init, train (6 + 2 epochs), evaluate, infer on a few texts.
# Run from the repository root. An existing "seq2seq_pretrained" session is resumed, never overwritten.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Small GRU batches gain nothing from more intra-op threads, and on a busy 2-core machine torch's
# default threads wait on each other (measured: 20x slower per batch). Set it yourself to override.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ -d seq2seq_pretrained ]; then
    echo "Session \"seq2seq_pretrained\" exists: resuming it (python init.py --force ... starts afresh)"
else
    python init.py examples/seq2seq/training.json
fi
python train.py seq2seq_pretrained
python evaluate.py examples/seq2seq/evaluation.json
python infer.py examples/seq2seq/inference.json "three hundred twelve" "forty two thousand seven" \
    "one million one" "nine hundred eighty seven million six hundred fifty four thousand three hundred twenty one"
