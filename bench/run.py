"""TorchAssistant against the equivalent hand-written PyTorch: five benchmarks, each run as interleaved
pairs (hand, framework | framework, hand | ...) in one run, reported as medians, spreads and ratios.

  1 tutorial   train.py on the tutorial's spec (PIL collator, LeNet5, batch 32, 2 workers; one epoch and
               its validation on the training and the test loader), whole process, start to exit, against
               bench/hand_tutorial.py; time <= 1.03x, peak RSS <= 1.10x
  2 preloaded  batches already in memory, no workers (framework overhead shows most); commands.train in
               this process against a hand loop in this process; epoch time <= 1.05x
  3 infer      infer.py on one image, start to answer, against python -c "import torch, torchvision"; <= 1.05x
  4 ddp        torchrun --nproc_per_node=2 train.py (gloo, the tutorial's spec, no loader workers) against
               torchrun --nproc_per_node=2 bench/hand_tutorial.py; whole run <= 1.05x
  5 bf16       benchmark 2 with "precision": "bf16-mixed" against a hand torch.autocast(cpu, bfloat16) loop;
               epoch time <= 1.05x
  6 serve      (not in the default five: --only 6) `torchassistant serve` under 16 clients, batched and
               --max-batch 1, against the bare model on the same batches (bench/serving.py); batched serve
               >= 0.7x the bare model's examples per second
  7 sweep      (not in the default five: --only 7) `torchassistant sweep` of N grid trials against the same
               trials as "init --set ... && train" processes and as commands.init + commands.train in one
               process (bench/sweeping.py); whole time <= 1.05x the processes (the in-process ratio shown)

    python bench/run.py                  # all five on full-size Fashion-MNIST, 5 pairs each
    python bench/run.py --only 1,4 --repeats 9
    python bench/run.py --quick          # smoke run: the shipped MNIST sample, one pair each (timings mean nothing)
    python bench/run.py --device cuda    # 1, 2 and 5 on a GPU with AMP (1 and 2 "16-mixed", 5 "bf16-mixed"),
                                         # against the same hand loops there; target >= 0.97x their throughput
                                         # (time <= 1.031x). Without CUDA it says so and exits 5.
    python bench/run.py --quick --only 1,2,5 --precision 16-mixed    # the GPU run's code, on the CPU

Exit status: 0 every target met, 1 a target missed, 2 data missing, 3 the sides disagree on results,
4 a run failed (its output is shown), 5 --device asks for a device this machine does not have (nothing run).
"""
import argparse
import io
import os
import re
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import measure, workloads  # noqa: E402
from bench.measure import Measure, Sample, interleave  # noqa: E402

REPO = workloads.REPO
IMAGE = os.path.join(REPO, 'examples', 'mnist', 'digit_2.png')
HAND = os.path.join(REPO, 'bench', 'hand_tutorial.py')
LAUNCH_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_WORLD_SIZE')
ON_DEVICE = (1, 2, 5)            # the benchmarks --device runs elsewhere than on the CPU
DEVICE_TARGET = round(1 / 0.97, 3)   # there: >= 0.97 of the hand loop's throughput


class Bench:
    """What every benchmark needs: the options, the data, a scratch folder, the children's environment,
    and the verdicts so far."""

    def __init__(self, args, data, workdir):
        self.args, self.data, self.workdir = args, data, workdir
        self.env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
        self.env.pop('PYTHONDONTWRITEBYTECODE', None)       # bytecode is cached, as in a user's install
        self.env['PYTHONPATH'] = REPO + os.pathsep + self.env.get('PYTHONPATH', '')
        if args.threads:
            self.env['OMP_NUM_THREADS'] = str(args.threads)
        self.verdicts, self.sane = [], True

    def write(self, text=''):
        print(text, flush=True)

    def show(self, index, side, sample):
        shown = '  '.join(f'{key} {_shown(key, value)}' for key, value in sample.measures.items())
        other = f'  other programs {sample.other:.2f} CPU s' if sample.other is not None else ''
        self.write(f'  pair {index + 1} {side:9s} {shown}{other}')

    def session(self, name, spec):
        """A new session from `spec` through commands.init in this process (not timed); its folder."""
        from torchassistant.cli import commands
        spec['session_dir'] = os.path.join(self.workdir, name)
        shutil.rmtree(spec['session_dir'], ignore_errors=True)
        commands.init(workloads.write_json(os.path.join(self.workdir, name + '.json'), spec), stream=io.StringIO())
        return spec['session_dir']

    def hand_command(self, seed, workers, device='cpu', precision='32'):
        return [HAND, '--kind', self.data.kind, '--root', self.data.root, '--seed', str(seed), '--workers',
                str(workers), '--checkpoint', os.path.join(self.workdir, 'hand.pt'), '--device', device,
                '--precision', precision]

    def target(self, cpu_target):
        """A time ratio's target: the CPU's, or on a GPU (--device) 1/0.97."""
        return cpu_target if self.args.device == 'cpu' else DEVICE_TARGET

    def conclude(self, title, pairs, measures, tolerance=None):
        """Print the comparison of every measure (and the sanity line); the Verdicts, in order."""
        self.write(f'  {measure.describe_other(pairs)}; load average {measure.load_average()}')
        verdicts = [measure.compare(title, m, pairs, self.write) for m in measures]
        self.verdicts += verdicts
        if tolerance is not None:
            self.sane = measure.agreement(pairs, tolerance, self.write) and self.sane
        return verdicts


def _shown(key, value):
    return Measure(key, key, unit='B' if key.startswith('peak') else 's').show(value)


def epoch_row(text):
    """The metrics of the last 'Epoch     1 [name value, ...]' line with validation metrics in `text`."""
    rows = re.findall(r'^Epoch\s+1 \[([^\]]*val acc[^\]]*)\]', text, re.M)
    if not rows:
        raise RuntimeError(f'no epoch line with validation metrics in the output:\n{text[-2000:]}')
    return {name: float(value) for name, value in (item.rsplit(' ', 1) for item in rows[-1].split(', '))}


def warm_up(bench, run):
    """One untimed run of each side: bytecode, page cache, loaded libraries (skipped with --quick)."""
    if not bench.args.quick:
        for side in measure.SIDES:
            run(side, -1)


def tutorial_runs(bench, name, workers, launch, device='cpu', precision='32'):
    """run(side, index) for one whole-process epoch of the tutorial spec: `launch()` (the interpreter, or
    torchrun) running train.py on a new session, or the hand-written loop, both from the same seed."""
    def run(side, index):
        seed = 100 + index
        if side == 'framework':
            session = bench.session(name, workloads.tutorial_spec('', bench.data, seed, workers, device, precision))
            argv = launch() + [os.path.join(REPO, 'train.py'), session]
        else:
            argv = launch() + bench.hand_command(seed, workers, device, precision)
        sample, text = measure.run_process(argv, cwd=REPO, env=bench.env)
        sample.results = epoch_row(text)
        return sample
    return run


# ---- 1. the tutorial, whole process --------------------------------------------------------------

def tutorial(bench):
    args = bench.args
    bench.write(f'\n== 1. tutorial: python train.py SESSION (spec examples/mnist/training.json, one epoch + '
                f'validation on the training and test loaders, num_workers {args.workers}, on {args.device}, '
                f'precision {args.precision}) vs python bench/hand_tutorial.py; whole processes, start to exit')

    run = tutorial_runs(bench, 'tutorial', args.workers, lambda: [sys.executable], args.device, args.precision)
    warm_up(bench, run)
    pairs = interleave(args.repeats, run, bench.show)
    bench.conclude('1 tutorial', pairs, [
        Measure('seconds', 'time', bench.target(1.03), note='start to exit'),
        Measure('peak_tree', 'peak RSS, all processes', 1.10, 'B', 'main + workers, summed, sampled every 20 ms'),
        Measure('peak_rss', 'peak RSS, largest process', 1.10, 'B', 'exact, from wait4'),
        Measure('cpu', 'CPU time', note='main + loader workers')], tolerance=2e-3 if args.precision == '32' else 2e-2)


# ---- 2 and 5. batches in memory, in this process -------------------------------------------------

def preloaded(bench, precision=None):
    """Benchmark 2 in --precision (default 32; 16-mixed on a GPU), or 5 in `precision`."""
    args, data, device = bench.args, bench.data, bench.args.device
    number, precision = (2, args.precision) if precision is None else (5, precision)
    autocast = f' under torch.autocast({torch_device_type(device)}, {precision})' if precision != '32' else ''
    bench.write(f'\n== {number}. preloaded tensors, precision {precision}, on {device}: commands.train in this process '
                f'(LeNet5 on {args.count} images as batches of 32 in memory, no workers, one epoch, no validation) vs '
                f'the same loop by hand in this process{autocast}; verdict on the epoch (the Trainer.epoch call)')

    def run(side, index):
        with measure.OtherLoad() as other:
            if side == 'hand':
                measures, results = workloads.hand_preloaded(data, 100 + index, precision, args.count, device)
            else:
                measures, results = workloads.framework_preloaded(bench.workdir, index, data, 100 + index,
                                                                  precision, args.count, device)
        return Sample(measures, results, other.seconds)

    if not args.quick:
        workloads.hand_preloaded(data, 0, precision, min(args.count, 640), device)   # warm kernels and the batches
        run('framework', -1)
    pairs = interleave(args.repeats, run, bench.show)
    whole = 'framework: commands.train, opening the session and saving the checkpoint; hand: model, loader, epoch'
    bench.conclude(f'{number} preloaded{"" if precision == "32" else " " + precision}', pairs, [
        Measure('epoch', 'epoch time', bench.target(1.05)),
        Measure('epoch_cpu', 'epoch CPU time', note='this process, all threads'),
        Measure('seconds', 'whole call', note=whole)], tolerance=2e-3 if precision == '32' else 2e-2)


def torch_device_type(device):
    return device.split(':')[0]


def bf16(bench):
    preloaded(bench, 'bf16-mixed')


# ---- 3. infer on one image -----------------------------------------------------------------------

def infer(bench):
    args = bench.args
    session = bench.session('infer', workloads.tutorial_spec('', bench.data, 1, 0))
    spec = workloads.write_json(os.path.join(bench.workdir, 'inference.json'), workloads.inference_spec(session))
    bench.write('\n== 3. infer: python infer.py inference.json digit_2.png (examples/mnist/inference.json on a '
                'tutorial session) vs python -c "import torch, torchvision" (the "hand" side), start to exit')

    def run(side, index):
        argv = [sys.executable, '-c', 'import torch, torchvision'] if side == 'hand' else \
            [sys.executable, os.path.join(REPO, 'infer.py'), spec, IMAGE]
        sample, text = measure.run_process(argv, cwd=REPO, env=bench.env)
        if side == 'framework' and 'y_hat:' not in text:
            raise RuntimeError(f'infer.py printed no y_hat:\n{text}')
        return sample

    warm_up(bench, run)
    pairs = interleave(args.infer_repeats, run, bench.show)
    timing, *_ = bench.conclude('3 infer', pairs, [
        Measure('seconds', 'time', 1.05, note='start to answer'), Measure('cpu', 'CPU time'),
        Measure('peak_rss', 'peak RSS', unit='B')])
    if (timing.outcome == 'FAIL' and not args.quick) or args.explain:
        from bench import imports
        imports.report(spec, IMAGE, bench.env, write=bench.write)


# ---- 4. two processes, gloo ----------------------------------------------------------------------

def ddp(bench):
    args = bench.args
    bench.write('\n== 4. ddp: torchrun --nproc_per_node=2 train.py SESSION (the tutorial spec, num_workers 0, gloo) '
                'vs torchrun --nproc_per_node=2 bench/hand_tutorial.py (DistributedDataParallel), whole runs')

    run = tutorial_runs(bench, 'ddp', 0, lambda: [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
                                                  f'--master_port={_free_port()}'])
    warm_up(bench, run)
    pairs = interleave(args.repeats, run, bench.show)
    bench.conclude('4 ddp', pairs, [
        Measure('seconds', 'time', 1.05, note='start to exit'),
        Measure('peak_tree', 'peak RSS, all processes', unit='B', note='launcher + 2 training processes, summed'),
        Measure('cpu', 'CPU time', note='launcher + 2 training processes')], tolerance=2e-3)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---- 6. serve under concurrent clients (bench/serving.py) ----------------------------------------

def serve(bench):
    from bench import serving
    serving.run(bench)


# ---- 7. a sweep against its trials run by hand (bench/sweeping.py) -------------------------------

def sweep(bench):
    from bench import sweeping
    sweeping.run(bench)


BENCHMARKS = {1: tutorial, 2: preloaded, 3: infer, 4: ddp, 5: bf16, 6: serve, 7: sweep}


# ---- the run -------------------------------------------------------------------------------------

def parse_args(argv=None):
    intro, rest = __doc__.split('\n\n', 1)
    parser = argparse.ArgumentParser(description=intro, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', help='which benchmarks, e.g. "1,3" (default all five; with --device cuda: 1,2,5)')
    parser.add_argument('--device', default='cpu',
                        help='where benchmarks 1, 2 and 5 train on both sides, e.g. cuda (default cpu; the others '
                             'run on the CPU only)')
    parser.add_argument('--precision', choices=('32', 'bf16-mixed', '16-mixed'),
                        help='benchmarks 1 and 2 (5 is always bf16-mixed): default 32 on the CPU, 16-mixed (AMP '
                             'with a GradScaler) on a GPU')
    parser.add_argument('--repeats', type=int, help='pairs of runs per benchmark (default 5; --quick 1)')
    parser.add_argument('--infer-repeats', type=int,
                        help='pairs for benchmark 3, whose runs are short (default 15; --quick 1)')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run on the first 640/320 digits of the shipped MNIST sample, no warm-up runs')
    parser.add_argument('--workers', type=int, default=2,
                        help='loader workers in benchmark 1 (default 2, the tutorial\'s)')
    parser.add_argument('--count', type=int, help='training images in benchmarks 2 and 5 (default all)')
    parser.add_argument('--threads', type=int, help='torch threads on both sides (torch.set_num_threads here, '
                                                    'OMP_NUM_THREADS for the processes); default torch\'s own choice')
    parser.add_argument('--explain', action='store_true', help='always print benchmark 3\'s import and profile '
                                                               'breakdown (otherwise only when it misses its target)')
    parser.add_argument('--data-root', default=os.path.join(REPO, 'bench', '.data'),
                        help='where the un-gzipped data is kept (default bench/.data)')
    parser.add_argument('--source-dir', default=workloads.SOURCE_DIR,
                        help=f'the Fashion-MNIST *-ubyte.gz files (default {workloads.SOURCE_DIR})')
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.infer_repeats = args.infer_repeats or (1 if args.quick else 15)
    on_cpu = args.device == 'cpu'
    args.precision = args.precision or ('32' if on_cpu else '16-mixed')
    args.only = args.only or ('1,2,3,4,5' if on_cpu else ','.join(map(str, ON_DEVICE)))
    try:
        args.only = [int(n) for n in args.only.split(',')]
    except ValueError:
        parser.error(f'--only takes benchmark numbers separated by commas, e.g. 1,3; not {args.only!r}')
    unknown = [n for n in args.only if n not in BENCHMARKS]
    if unknown:
        parser.error(f'--only: no benchmark {unknown[0]}; they are {", ".join(map(str, BENCHMARKS))}')
    elsewhere = [n for n in args.only if n not in ON_DEVICE]
    if elsewhere and not on_cpu:
        parser.error(f'--device {args.device}: benchmark {elsewhere[0]} runs on the CPU only; on a device: '
                     f'{", ".join(map(str, ON_DEVICE))}')
    return args


def missing_device(device):
    """Why `device` cannot be used here (None when it can)."""
    import torch
    if device == 'cpu':
        return None
    if torch_device_type(device) != 'cuda':
        return f'--device {device}: the benchmarks run on "cpu" or "cuda" (or "cuda:N")'
    if not torch.cuda.is_available():
        return (f'--device {device}: this machine has no CUDA device (torch {torch.__version__}'
                f'{"" if torch.version.cuda else ", a CPU-only build"}); the GPU benchmarks (1, 2 and 5 with AMP) '
                f'were not run. Their code runs on the CPU with: python bench/run.py --quick --only 1,2,5 '
                f'--precision 16-mixed')
    index = int(device.split(':')[1]) if ':' in device else 0
    if index >= torch.cuda.device_count():
        return f'--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)'
    return None


def main(argv=None):
    args = parse_args(argv)
    missing = missing_device(args.device)
    if missing:
        print(f'skipped: {missing}', file=sys.stderr)
        return 5
    root = os.path.abspath(args.data_root)
    try:
        data = workloads.mnist_sample(root, 640, 320) if args.quick else workloads.fashion_mnist(root, args.source_dir)
    except workloads.DataMissing as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    train, test = len(data.dataset(train=True)), len(data.dataset(train=False))
    args.count = args.count or train
    os.chdir(REPO)                        # the specs name examples.mnist and bench.workloads
    import torch

    import torchassistant.cli.commands  # noqa: F401  (imports paid before any timing)
    if args.threads:
        torch.set_num_threads(args.threads)
    on = '' if args.device == 'cpu' else \
        f'; on {args.device} ({torch.cuda.get_device_name(torch.device(args.device))}), precision {args.precision}'
    print(f'TorchAssistant vs hand-written PyTorch: {data.describe()}, {train} training and {test} test images; '
          f'{args.repeats} pairs ({args.infer_repeats} for infer); torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; load average {measure.load_average()}{on}'
          + ('\n(--quick: a smoke run; its timings mean nothing)' if args.quick else ''), flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='ta-bench-') as workdir:
        bench = Bench(args, data, workdir)
        try:
            for number in args.only:
                BENCHMARKS[number](bench)
        except RuntimeError as e:          # a run failed or printed no result: no figure to report
            print(f'error: {e}', file=sys.stderr)
            return 4
    return summary(bench, time.monotonic() - started)


def summary(bench, seconds):
    bench.write(f'\n== summary ({seconds / 60:.1f} min; load average {measure.load_average()})')
    cpu = {v.benchmark: v for v in bench.verdicts if v.measure.key in ('cpu', 'epoch_cpu') and v.ratio}
    for v in bench.verdicts:
        if v.measure.target is None:
            continue
        notes = [f'95% interval {v.low_high[0]:.3f} .. {v.low_high[2]:.3f}'] if v.low_high else []
        if v.measure.unit == 's' and v.benchmark in cpu:
            notes.append(f'CPU time ratio {cpu[v.benchmark].ratio:.4f}')
        ratio = f'{v.ratio:.4f}' if v.ratio is not None else '?'
        bench.write(f'  {v.benchmark:22s} {v.measure.label:26s} ratio {ratio:>7s}  '
                    f'target <= {v.measure.target:<5}  {v.outcome:5s} {"; ".join(notes)}'.rstrip())
    if not bench.sane:
        bench.write('  the two sides disagreed on results (see the sanity lines): the comparison is not like for like')
        return 3
    return 1 if any(v.outcome == 'FAIL' for v in bench.verdicts) else 0


if __name__ == '__main__':
    sys.exit(main())
