"""Time of one mid-epoch checkpoint: capture (state dicts, RNG, loader states) + the store's atomic,
checksummed write (temp file, fsync, rename) + retention, for the tutorial's LeNet5 and a model of
about 100M parameters, both with Adam state (after one step, so its moments exist).

    python bench/bench_checkpoint.py [--repeats 5] [--big-params 100]

Prints the median and spread per model and the checkpoint size. Run it on the disk the sessions live on.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.mnist import LeNet5  # noqa: E402
from torchassistant.assembly.build import Entities, Optimizer  # noqa: E402
from torchassistant.session import checkpoint  # noqa: E402
from torchassistant.session.store import SessionStore  # noqa: E402


def big_model(millions):
    """Linear layers of 4096x4096 (16.8M parameters each) up to about `millions` million parameters."""
    layers = max(1, round(millions * 1e6 / (4096 * 4096 + 4096)))
    return nn.Sequential(*[nn.Linear(4096, 4096) for _ in range(layers)])


def entities_for(model):
    entities = Entities()
    entities.models['model'] = model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()                       # Adam's moments exist, as they do mid-training
    entities.optimizers['optimizer'] = Optimizer('optimizer', 'model', optimizer)
    return entities


def measure(name, model, repeats, folder):
    entities = entities_for(model)
    store = SessionStore(folder)
    os.makedirs(os.path.join(folder, 'checkpoints'), exist_ok=True)
    progress = checkpoint.Progress(epoch=3, batch=0)
    times = []
    for i in range(repeats):
        progress.batch = i + 1
        started = time.perf_counter()
        state = checkpoint.capture(entities, progress, None, checkpoint.EpochState(
            {'p': i + 1}, 1, {}, {}, checkpoint.rng_state()))
        path = store.save_checkpoint(progress.epoch, state, batch=progress.batch)
        times.append(time.perf_counter() - started)
    size = os.path.getsize(path) / 2 ** 20
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f'{name:>8}: {params:8.2f}M parameters, checkpoint {size:8.1f} MiB, '
          f'median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}) over {repeats}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--big-params', type=float, default=100, help='size of the big model, millions')
    parser.add_argument('--folder', default=None, help='where to write (default: a temp folder on /tmp)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        measure('LeNet5', LeNet5(), args.repeats, os.path.join(folder, 'small'))
        measure('big', big_model(args.big_params), args.repeats, os.path.join(folder, 'big'))


if __name__ == '__main__':
    main()
