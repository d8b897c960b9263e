"""Training speed of TorchAssistant against the equivalent hand-written PyTorch loop.

Both sides train the MNIST tutorial's LeNet5 (examples/mnist) on full-size Fashion-MNIST: the same
collator (MyCollator), DataLoader(batch_size=32, num_workers=N, no shuffle), Adam(lr=1e-3),
CrossEntropyLoss after convert_labels, accuracy via reverse_onehot, and the same torch thread count.
The framework side is a training spec with one stage and no validation pipelines, run in-process
through the public API: commands.init(spec) (not timed) and commands.train(session) (timed). Its
console output goes to a StringIO (not a terminal: no live line).

The hand loop starts from the seed the framework's init drew (read from the session), so both sides
begin with the same weights and see the same batches; their final accuracy and loss should agree.

Runs alternate hand, framework, framework, hand, hand, framework... for --repeats pairs (each pair
has its own fresh session and seed; which side goes first alternates from pair to pair). The verdict
compares the median time of one training epoch (the framework's Trainer.epoch call, timed by
wrapping it in this process; the hand loop's epoch over the same loader). The whole commands.train() call, which also opens the
session and writes a checkpoint, is reported beside it.

    python bench/bench_training.py                      # 1 epoch, 3 repeats, 2 workers
    python bench/bench_training.py --limit-batches 20 --repeats 1     # smoke run

Other programs running meanwhile make timings meaningless: each run measures the CPU time other
processes used (from /proc/stat); a pair that saw more than --max-other is left out and run again.

Exit status: 0 PASS, 1 FAIL (ratio above --threshold), 2 Fashion-MNIST missing, 3 the two sides
disagree on accuracy, 4 INCONCLUSIVE (no pair ran on a quiet machine).
"""
import argparse
import gzip
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIR = '/usr/share/datasets/fashion-mnist'
FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
BATCH_SIZE = 32
LR = 1e-3


# ---- data -----------------------------------------------------------------------------------------

def prepare_data(root, source=SOURCE_DIR):
    """Un-gzip Fashion-MNIST into ROOT/FashionMNIST/raw/ (what torchvision's FashionMNIST(ROOT) reads)."""
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    missing = [name for name in FILES if not os.path.isfile(os.path.join(raw, name))]
    if not missing:
        return root
    sources = {name: os.path.join(source, name + '.gz') for name in missing}
    absent = [path for path in sources.values() if not os.path.isfile(path)]
    if absent:
        print(f'error: Fashion-MNIST not found: {", ".join(absent)} missing.\n'
              f'Install it with: apt-get install -y dataset-fashion-mnist\n'
              f'(or pass --source-dir DIR holding the four *-ubyte.gz files)', file=sys.stderr)
        raise SystemExit(2)
    os.makedirs(raw, exist_ok=True)
    for name, path in sources.items():
        partial = os.path.join(raw, name + '.partial')
        with gzip.open(path, 'rb') as f_in, open(partial, 'wb') as f_out:
            shutil.copyfileobj(f_in, f_out)
        os.replace(partial, os.path.join(raw, name))
    return root


def fashion_mnist_head(session, root, count):
    """factory_fn for --limit-batches: the first `count` training examples (both sides use it)."""
    import torchvision
    from torch.utils.data import Subset
    dataset = torchvision.datasets.FashionMNIST(root, train=True)
    return Subset(dataset, range(min(count, len(dataset))))


def training_dataset(root, limit_batches):
    import torchvision
    if limit_batches:
        return fashion_mnist_head(None, root, limit_batches * BATCH_SIZE)
    return torchvision.datasets.FashionMNIST(root, train=True)


# ---- the hand-written loop ------------------------------------------------------------------------

def hand_device():
    import torch
    name = os.environ.get('TORCHASSISTANT_DEVICE')   # the framework's own rule (torchassistant.device)
    return torch.device(name) if name else torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def hand_train(root, seed, epochs, num_workers, limit_batches):
    """The tutorial written by hand. Returns (epoch seconds list, whole-call seconds, acc, loss)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from examples.mnist import LeNet5, MyCollator, convert_labels, reverse_onehot

    start = time.perf_counter()
    device = hand_device()
    dataset = training_dataset(root, limit_batches)
    torch.manual_seed(seed)
    model = LeNet5().to(device)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, num_workers=num_workers, collate_fn=MyCollator())
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()

    epoch_times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        correct = torch.zeros((), dtype=torch.long, device=device)
        loss_sum = torch.zeros((), device=device)
        seen = 0
        for x, labels in loader:
            x = x.to(device, non_blocking=True)
            y_hat = model(x)[0]
            scores, targets = convert_labels(y_hat, labels)
            loss = criterion(scores, targets.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            predictions, truth = reverse_onehot(y_hat, labels)
            correct += (predictions == truth.to(device, non_blocking=True)).sum()
            loss_sum += loss.detach() * len(labels)
            seen += len(labels)
        accuracy, mean_loss = correct.item() / seen, loss_sum.item() / seen   # one host sync per epoch
        epoch_times.append(time.perf_counter() - t0)
    return epoch_times, time.perf_counter() - start, accuracy, mean_loss


# ---- the framework --------------------------------------------------------------------------------

def spec_for(session_dir, root, epochs, num_workers, limit_batches):
    if limit_batches:
        dataset = {'factory_fn': 'bench.bench_training.fashion_mnist_head', 'args': [root, limit_batches * BATCH_SIZE]}
    else:
        dataset = {'class': 'torchvision.datasets.FashionMNIST', 'args': [root], 'kwargs': {'train': True}}
    return {
        'session_dir': session_dir,
        'initialize': {
            'definitions': [
                {'group': 'datasets', 'name': 'train_ds', 'spec': dataset},
                {'group': 'collators', 'name': 'my_collator', 'spec': {'class': 'examples.mnist.MyCollator'}},
                {'group': 'data_loaders', 'name': 'training_loader',
                 'spec': {'dataset': 'train_ds', 'collator': 'my_collator',
                          'kwargs': {'batch_size': BATCH_SIZE, 'num_workers': num_workers}}},
                {'group': 'models', 'name': 'LeNet5', 'spec': {'class': 'examples.mnist.LeNet5'}},
                {'group': 'optimizers', 'name': 'optimizer',
                 'spec': {'class': 'Adam', 'kwargs': {'lr': LR}, 'model': 'LeNet5'}},
                {'group': 'losses', 'name': 'cross_entropy',
                 'spec': {'class': 'CrossEntropyLoss', 'inputs': ['y_hat', 'input_2'],
                          'transform': 'examples.mnist.convert_labels'}},
                {'group': 'metrics', 'name': 'accuracy',
                 'spec': {'class': 'Accuracy', 'inputs': ['y_hat', 'input_2'],
                          'transform': 'examples.mnist.reverse_onehot'}},
            ],
            'pipelines': {
                'training_pipeline': {
                    'input_injector': [{'data_loader': 'training_loader'}],
                    'losses': [{'loss_name': 'cross_entropy', 'loss_display_name': 'loss'}],
                    'metrics': [{'metric_name': 'accuracy', 'display_name': 'acc'}],
                },
            },
        },
        'train': {
            'stages': [{
                'training_pipelines': ['training_pipeline'],
                'stop_condition': {'class': 'torchassistant.stop_conditions.EpochsCompleted',
                                   'kwargs': {'num_epochs': epochs}},
            }],
        },
    }


def framework_init(workdir, index, root, epochs, num_workers, limit_batches):
    """Create a session (not timed); returns (session dir, the seed its init drew)."""
    from torchassistant import commands
    from torchassistant.store import SessionStore
    session_dir = os.path.join(workdir, f'session_{index}')
    spec_path = os.path.join(workdir, f'spec_{index}.json')
    with open(spec_path, 'w') as f:
        json.dump(spec_for(session_dir, root, epochs, num_workers, limit_batches), f, indent=2)
    commands.init(spec_path, stream=io.StringIO())
    return session_dir, SessionStore.open(session_dir).learned_state()['seed']


def framework_train(session_dir):
    """commands.train(session) timed whole, and each Trainer.epoch call timed by a wrapper.
    Returns (epoch seconds list, whole-call seconds, acc, loss, console text)."""
    from torchassistant import commands, trainer
    epoch_times, rows = [], []
    original = trainer.Trainer.epoch

    def timed_epoch(self, stage, number):
        t0 = time.perf_counter()
        row = original(self, stage, number)
        epoch_times.append(time.perf_counter() - t0)
        rows.append(row)
        return row

    console = io.StringIO()
    trainer.Trainer.epoch = timed_epoch
    try:
        start = time.perf_counter()
        commands.train(session_dir, stream=console)
        total = time.perf_counter() - start
    finally:
        trainer.Trainer.epoch = original
    if len(epoch_times) != len(rows) or not rows:
        raise RuntimeError('torchassistant.trainer.Trainer.epoch(self, stage, number) was not called: this '
                           'benchmark\'s timing hook no longer matches the trainer; update framework_train()')
    return epoch_times, total, rows[-1]['acc'], rows[-1]['loss'], console.getvalue()


# ---- other processes ------------------------------------------------------------------------------

class ForeignCPU:
    """CPU seconds that processes other than this one and its children (the DataLoader workers)
    used while a run lasted, from /proc/stat; None where /proc/stat is missing. Another program
    busy on the machine makes the timings meaningless, so the report says so."""

    def __enter__(self):
        self.start = _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        busy, own = _busy_seconds(), _own_seconds()
        self.seconds = None if busy is None or self.start[0] is None else \
            max(0.0, (busy - self.start[0]) - (own - self.start[1]))
        return False


def _busy_seconds():
    try:
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:3]) + sum(fields[5:8])      # user nice system . . irq softirq steal
    return busy / os.sysconf('SC_CLK_TCK')


def _own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# ---- the comparison -------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=1, help='training epochs per run (default 1)')
    parser.add_argument('--repeats', type=int, default=3, help='hand/framework pairs of runs counted (default 3)')
    parser.add_argument('--num-workers', type=int, default=2, help='DataLoader workers, as the tutorial (default 2)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads for both sides (default: torch\'s current value)')
    parser.add_argument('--limit-batches', type=int, default=None,
                        help='train on the first N batches only (a quick smoke run; not the benchmark)')
    parser.add_argument('--warmup-batches', type=int, default=20,
                        help='untimed hand-loop batches before the first run, to warm kernels (default 20; 0: none)')
    parser.add_argument('--data-root', default=os.path.join(REPO, 'bench', '.data'),
                        help='cache folder for the un-gzipped dataset (default bench/.data)')
    parser.add_argument('--source-dir', default=SOURCE_DIR,
                        help=f'folder of the *-ubyte.gz files (default {SOURCE_DIR}, from dataset-fashion-mnist)')
    parser.add_argument('--threshold', type=float, default=1.03, help='largest acceptable ratio (default 1.03)')
    parser.add_argument('--max-other', type=float, default=0.05,
                        help='a pair whose runs saw other processes use more CPU seconds per second than this is '
                             'left out and run again, up to 3 x --repeats pairs in all (default 0.05)')
    parser.add_argument('--verbose', action='store_true', help='print the framework\'s console output')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = prepare_data(os.path.abspath(args.data_root), args.source_dir)
    os.chdir(REPO)                     # the spec names examples.mnist and bench.bench_training
    if REPO not in sys.path:
        sys.path.insert(0, REPO)

    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    import torchvision                 # noqa: F401  (imports paid before any timing)
    import torchassistant.commands     # noqa: F401

    size = len(training_dataset(root, args.limit_batches))
    batches = -(-size // BATCH_SIZE)
    print(f'Fashion-MNIST train: {size} examples, {batches} batches of {BATCH_SIZE}; epochs {args.epochs}, '
          f'repeats {args.repeats}, num_workers {args.num_workers}, torch threads {threads}, '
          f'device {hand_device()}, torch {torch.__version__}', flush=True)
    if args.limit_batches:
        print('(--limit-batches: a smoke run, not the benchmark)', flush=True)

    if args.warmup_batches:
        hand_train(root, 0, 1, args.num_workers, args.warmup_batches)

    pairs, attempts = [], 0
    with tempfile.TemporaryDirectory(prefix='ta-bench-') as workdir:
        while sum(pair.clean(args.max_other) for pair in pairs) < args.repeats and attempts < 3 * args.repeats:
            attempts += 1
            session_dir, seed = framework_init(workdir, attempts, root, args.epochs, args.num_workers,
                                               args.limit_batches)
            runs = {}
            # Pairs alternate which side goes first (hand, framework | framework, hand | ...), so a
            # drift within a pair does not always favour the same side.
            hand_first = sum(pair.clean(args.max_other) for pair in pairs) % 2 == 0
            for side in ('hand', 'framework') if hand_first else ('framework', 'hand'):
                with ForeignCPU() as other:
                    if side == 'hand':
                        run = Run(*hand_train(root, seed, args.epochs, args.num_workers, args.limit_batches))
                    else:
                        *result, console = framework_train(session_dir)
                        run = Run(*result)
                run.other = other.seconds
                runs[side] = run
                print(f'  pair {attempts} {side:9s} {run.describe(args.max_other)}', flush=True)
                if side == 'framework' and args.verbose:
                    print('    ' + console.strip().replace('\n', '\n    '))
            shutil.rmtree(session_dir, ignore_errors=True)
            pairs.append(Pair(runs['hand'], runs['framework']))
    return report(args, pairs)


class Run:
    """One training run: seconds of each epoch and of the whole call, final accuracy and loss, and the
    CPU seconds other processes used meanwhile (None: unknown)."""

    def __init__(self, epochs, whole, accuracy, loss):
        self.epochs, self.whole, self.accuracy, self.loss = epochs, whole, accuracy, loss
        self.other = None

    def busy(self):
        """CPU seconds other processes used per second of this run, less 0.05 s of slack (/proc/stat
        counts in clock ticks, and the system's own daemons tick too)."""
        return 0.0 if self.other is None else max(0.0, self.other - 0.05) / self.whole

    def describe(self, max_other):
        text = (f'epochs {" ".join(f"{t:7.2f} s" for t in self.epochs)}  whole {self.whole:7.2f} s  '
                f'acc {self.accuracy:.4f}  loss {self.loss:.4f}')
        if self.other is not None:
            text += f'  other processes {self.other:5.2f} CPU s'
            if self.busy() > max_other:
                text += '  (machine busy: pair not counted)'
        return text


class Pair:
    def __init__(self, hand, framework):
        self.hand, self.framework = hand, framework

    def clean(self, max_other):
        return max(self.hand.busy(), self.framework.busy()) <= max_other


# two-sided 95% quantiles of Student's t, by degrees of freedom
_T95 = [12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045]


def ratio_interval(ratios):
    """(low, geometric mean, high): a 95% confidence interval of the typical framework/hand ratio,
    from the per-pair ratios (t interval on their logarithms); None for fewer than 2 pairs."""
    if len(ratios) < 2:
        return None
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    half = (_T95[len(logs) - 2] if len(logs) - 2 < len(_T95) else 1.96) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean - half), math.exp(mean), math.exp(mean + half)


def report(args, pairs):
    counted = [pair for pair in pairs if pair.clean(args.max_other)]
    print()
    if len(counted) < len(pairs):
        print(f'{len(pairs) - len(counted)} of {len(pairs)} pairs ran while other processes used more than '
              f'{args.max_other} CPU s per second; they are left out')
    inconclusive = not counted
    if inconclusive:
        print('WARNING: no pair ran on a quiet machine; the figures below include other programs\' load')
        counted = pairs
    hand_epochs = [t for pair in counted for t in pair.hand.epochs]
    framework_epochs = [t for pair in counted for t in pair.framework.epochs]
    hand_epoch, framework_epoch = statistics.median(hand_epochs), statistics.median(framework_epochs)
    ratio = framework_epoch / hand_epoch
    print(f'median epoch      hand {hand_epoch:8.3f} s   framework {framework_epoch:8.3f} s   over {len(counted)} '
          f'pairs (hand {min(hand_epochs):.3f}..{max(hand_epochs):.3f}, '
          f'framework {min(framework_epochs):.3f}..{max(framework_epochs):.3f})')
    hand_whole = statistics.median(pair.hand.whole for pair in counted)
    framework_whole = statistics.median(pair.framework.whole for pair in counted)
    print(f'median whole run  hand {hand_whole:8.3f} s   framework {framework_whole:8.3f} s   ratio '
          f'{framework_whole / hand_whole:.4f} (framework: all of commands.train(), with opening the session '
          f'and saving the checkpoint; hand: building the dataset, model and loader, and the epochs)')
    pair_ratios = [statistics.median(pair.framework.epochs) / statistics.median(pair.hand.epochs) for pair in counted]
    print(f'per-pair epoch ratios: {" ".join(f"{r:.4f}" for r in pair_ratios)}  '
          f'(median {statistics.median(pair_ratios):.4f})')
    interval = ratio_interval(pair_ratios)
    if interval:
        low, mean, high = interval
        resolved = 'below' if high <= args.threshold else 'above' if low > args.threshold else None
        print(f'95% interval of the ratio (geometric mean of the pairs {mean:.4f}): {low:.4f} .. {high:.4f}; '
              + (f'entirely {resolved} {args.threshold}' if resolved else
                 f'it contains {args.threshold}: the run-to-run noise is larger than the margin, run more --repeats'))

    gap = max(abs(pair.hand.accuracy - pair.framework.accuracy) for pair in pairs)
    sane = gap <= 0.01
    last = pairs[-1]
    print(f'sanity: final training accuracy hand {last.hand.accuracy:.4f} / framework {last.framework.accuracy:.4f}, '
          f'loss {last.hand.loss:.4f} / {last.framework.loss:.4f} (same seed and batches; largest accuracy gap '
          f'over runs {gap:.4f}: {"OK" if sane else "MISMATCH"})')
    verdict = 'INCONCLUSIVE' if inconclusive else 'PASS' if ratio <= args.threshold else 'FAIL'
    print(f'ratio framework/hand (median epoch): {ratio:.4f}  {verdict} (threshold {args.threshold})')
    if not sane:
        return 3
    return {'PASS': 0, 'FAIL': 1, 'INCONCLUSIVE': 4}[verdict]


if __name__ == '__main__':
    sys.exit(main())
