"""Benchmark 7, sweep: what `torchassistant sweep` costs per trial over running the same trials by hand
(bench/run.py --only 7).

The same N trials (sampler "grid" over explicit choices, pruner "none": every side trains every
combination of the same values, from the same seed) run three ways, each a whole process (or a
script of processes), start to exit:

- sweep:      `python -m torchassistant sweep SWEEP.json` (one process; Optuna, SQLite study in the
              sweep folder; each trial made with commands.init --set ... and trained with commands.train,
              its progress written to the sweep's log file).
- processes:  what a user would script: `python -m torchassistant init --set P=V ... SPEC &&
              python -m torchassistant train SESSION` for each trial, one after another (bash).
- in-process: one Python process that calls commands.init (the same overrides) and commands.train for
              each trial, its progress written to a log file (`python bench/sweeping.py --in-process`).

The processes side is what the issue's target is set against (issue 17: "a sweep's own cost per trial
against running the same trials' train commands one after another, ratio <= 1.05 of the whole"). It
pays an interpreter start and torch's imports twice per trial, which the sweep does not, so against it
the sweep looks cheaper than it is. The in-process side does exactly the sweep's training work without
Optuna, its study and its checks, so sweep / in-process is the sweep's own cost: it is printed, with
where the time goes per trial (inside the trials and outside them: importing Optuna and SQLAlchemy,
creating the study, the table), and not judged.
Target: sweep <= 1.05 x the processes side, whole time.

Data: the tutorial's spec (examples/mnist/training.json: LeNet5, the PIL collator, 2 loader workers,
validation on the training and test loaders) on the first TRAIN / TEST images of Fashion-MNIST (with
--quick: the shipped MNIST sample bench/run.py prepares), so that one trial takes a few seconds.
"""
import argparse
import csv
import itertools
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import time

from bench import workloads
from bench.measure import Measure

QUICK = {'train': None, 'test': None, 'epochs': 1, 'choices': {'optimizer.spec.kwargs.lr': [1e-3]}}
FULL = {'train': 3000, 'test': 1000, 'epochs': 2,
        'choices': {'optimizer.spec.kwargs.lr': [1e-3, 2e-3], 'training_loader.spec.kwargs.batch_size': [32, 64]}}
SEED = 100
METRIC = 'val acc'
ORDER = ('processes', 'in-process', 'sweep')     # the order of even repeats; odd ones run it backwards


def fashion_subset(data, train, test):
    """The first `train` and `test` images of the Fashion-MNIST at `data`, as a dataset folder of their own."""
    sys.path.insert(0, workloads.REPO)
    from examples.mnist.prepare_data import first_examples
    root = os.path.join(data.root, f'fashion-mnist-{train}-{test}')
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    for name in workloads.FILES:
        target = os.path.join(raw, name)
        if not os.path.isfile(target):
            with open(os.path.join(data.root, 'FashionMNIST', 'raw', name), 'rb') as source, \
                    open(target + '.partial', 'wb') as out:
                out.write(first_examples(source, name, train if name.startswith('train') else test))
            os.replace(target + '.partial', target)
    return workloads.Data('FashionMNIST', root)


def grid(choices):
    """Every combination of the choices: [{path: value}], in a fixed order."""
    paths = list(choices)
    return [dict(zip(paths, values)) for values in itertools.product(*(choices[p] for p in paths))]


def set_arguments(params, session):
    """`--set` arguments as a user writes them: PATH=JSON."""
    return [f'{path}={json.dumps(value)}' for path, value in params.items()] + [f'session_dir={session}']


def plural(count, word):
    return f'{count} {word}{"" if count == 1 else "s"}'


def shown(params):
    return ' '.join(f'{path.rsplit(".", 1)[-1]}={value}' for path, value in params.items())


def objective(session):
    """The last METRIC in the session's metrics CSV files."""
    value = None
    folder = os.path.join(session, 'metrics')
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            for row in csv.DictReader(f):
                if row.get(METRIC):
                    value = float(row[METRIC])
    if value is None:
        raise RuntimeError(f'no "{METRIC}" in {folder}')
    return value


# ---- the in-process baseline (its own process) --------------------------------------------------

def in_process(plan_path):
    """For each trial of the plan: commands.init with its overrides, then commands.train; prints each
    trial's seconds."""
    with open(plan_path) as f:
        plan = json.load(f)
    # the spec's datasets' module: the sweep imports it while checking its spec, before its first trial;
    # here too, so that both sides' trial seconds count the same work
    import torchvision  # noqa: F401

    from torchassistant.cli import commands
    for trial in plan['trials']:
        started = time.monotonic()
        with open(trial['log'], 'a') as log:
            commands.init(plan['training_spec'], stream=log, overrides=trial['overrides'])
            commands.train(trial['session'], stream=log)
        print(f'trial {trial["number"]:4d}  {time.monotonic() - started:.1f} s', flush=True)


# ---- the benchmark ------------------------------------------------------------------------------

def run(bench):
    from bench import measure
    args = bench.args
    setup = QUICK if args.quick else FULL
    data = bench.data if args.quick else fashion_subset(bench.data, setup['train'], setup['test'])
    trials = grid(setup['choices'])
    spec = workloads.tutorial_spec('unused', data, SEED, args.workers)
    spec['train']['stages'][0]['stop_condition']['kwargs']['num_epochs'] = setup['epochs']
    folder = os.path.join(bench.workdir, 'sweep')
    os.makedirs(folder, exist_ok=True)
    training = workloads.write_json(os.path.join(folder, 'training.json'), spec)
    train, test = len(data.dataset(train=True)), len(data.dataset(train=False))
    bench.write(f'\n== 7. sweep: python -m torchassistant sweep SWEEP.json ({plural(len(trials), "trial")}, grid over '
                f'{", ".join(f"{p} {v}" for p, v in setup["choices"].items())}, pruner none, the tutorial spec on '
                f'{data.kind} {train}/{test} images, {plural(setup["epochs"], "epoch")} + validation, num_workers '
                f'{args.workers}) vs the same trials as "init --set ... && train" processes, and vs commands.init + '
                f'commands.train in one process (the "hand" side of each); whole runs, start to exit')

    python = sys.executable

    def sweep_side(index):
        sweep_dir = os.path.join(folder, f'sweep-{index}')
        shutil.rmtree(sweep_dir, ignore_errors=True)
        path = workloads.write_json(os.path.join(folder, f'sweep-{index}.json'), {
            'sweep_dir': sweep_dir, 'training_spec': training, 'trials': len(trials),
            'objective': {'metric': METRIC, 'direction': 'maximize'},
            'parameters': {p: {'choices': v} for p, v in setup['choices'].items()},
            'sampler': 'grid', 'pruner': 'none', 'seed': 0})
        sample, text = measure.run_process([python, '-m', 'torchassistant', 'sweep', path], cwd=folder, env=bench.env)
        lines = re.findall(r'^trial +(\d+) .* (complete|pruned|failed) +([\d.]+) s$', text, re.M)
        if len(lines) != len(trials) or any(state != 'complete' for _, state, _ in lines):
            raise RuntimeError(f'the sweep did not complete its {len(trials)} trials:\n{text[-3000:]}')
        sample.measures['trials'] = sum(float(s) for *_, s in lines)
        sample.results = {}
        for number, *_ in lines:
            session = os.path.join(sweep_dir, 'trials', f'{int(number):04d}')
            with open(os.path.join(session, 'trial.json')) as f:
                params = json.load(f)['params']
            sample.results[shown(params)] = objective(session)
        shutil.rmtree(sweep_dir, ignore_errors=True)
        return sample

    def sessions(name, index):
        base = os.path.join(folder, f'{name}-{index}')
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        return base, [os.path.join(base, f'{number:04d}') for number in range(len(trials))]

    def processes_side(index):
        base, dirs = sessions('processes', index)
        script = ' && '.join(
            f'{shlex.quote(python)} -m torchassistant init '
            + ' '.join(f'--set {shlex.quote(a)}' for a in set_arguments(params, session))
            + f' {shlex.quote(training)} && {shlex.quote(python)} -m torchassistant train {shlex.quote(session)}'
            for params, session in zip(trials, dirs))
        sample, _ = measure.run_process(['bash', '-c', script], cwd=folder, env=bench.env)
        sample.results = {shown(params): objective(session) for params, session in zip(trials, dirs)}
        shutil.rmtree(base, ignore_errors=True)
        return sample

    def in_process_side(index):
        base, dirs = sessions('in-process', index)
        plan = workloads.write_json(os.path.join(base, 'plan.json'), {'training_spec': training, 'trials': [
            {'number': number, 'session': session, 'log': session + '.log',
             'overrides': set_arguments(params, session)}
            for number, (params, session) in enumerate(zip(trials, dirs))]})
        sample, text = measure.run_process([python, os.path.abspath(__file__), '--in-process', plan], cwd=folder,
                                           env=bench.env)
        sample.measures['trials'] = sum(float(s) for s in re.findall(r'^trial +\d+ +([\d.]+) s$', text, re.M))
        sample.results = {shown(params): objective(session) for params, session in zip(trials, dirs)}
        shutil.rmtree(base, ignore_errors=True)
        return sample

    sides = {'processes': processes_side, 'in-process': in_process_side, 'sweep': sweep_side}
    if not args.quick:
        for name in ORDER:                 # bytecode, page cache, loaded libraries
            sides[name](-1)
    runs = []
    for index in range(args.repeats):
        samples = {}
        for name in ORDER if index % 2 == 0 else ORDER[::-1]:
            samples[name] = sides[name](index)
            bench.show(index, name, samples[name])
        runs.append(samples)

    others = [Measure('cpu', 'CPU time', note='all processes, loader workers included'),
              Measure('peak_rss', 'peak RSS, largest process', unit='B', note='exact, from wait4')]
    bench.write(f'  -- sweep ("framework") against {len(trials)} x "init --set ... && train" processes ("hand")')
    bench.conclude('7 sweep / processes', [{'hand': r['processes'], 'framework': r['sweep']} for r in runs],
                   [Measure('seconds', 'time', 1.05, note='start to exit')] + others, tolerance=0)
    bench.write('  -- sweep ("framework") against commands.init + commands.train in one process ("hand")')
    in_one = [{'hand': r['in-process'], 'framework': r['sweep']} for r in runs]
    bench.conclude('7 sweep / in-process', in_one, [Measure('seconds', 'time', note='start to exit; not judged')] + others + [
        Measure('trials', 'time in trials', note='the sum of the trials\' own seconds, as each side prints them')],
        tolerance=0)
    per_trial(bench, runs, len(trials))


def per_trial(bench, runs, count):
    """Where the time goes, per trial (medians over the runs)."""
    def median(name, key='seconds'):
        return statistics.median(r[name].measures[key] for r in runs)
    whole, inside = median('sweep'), median('sweep', 'trials')
    base, base_inside = median('in-process'), median('in-process', 'trials')
    bench.write(f'  per trial (medians / {count}): processes {median("processes") / count:.3f} s; in-process '
                f'{base / count:.3f} s (in the trials {base_inside / count:.3f} s); sweep {whole / count:.3f} s '
                f'(in the trials {inside / count:.3f} s); the sweep\'s own cost {(whole - base) / count:+.3f} s per '
                f'trial, of which {(inside - base_inside) / count:+.3f} s inside the trials and '
                f'{((whole - inside) - (base - base_inside)) / count:+.3f} s outside them (start-up, spec checks, '
                f'the study, the table)')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='the in-process baseline of benchmark 7 (bench/run.py --only 7)')
    parser.add_argument('--in-process', metavar='PLAN', required=True, help='a plan.json written by run()')
    in_process(parser.parse_args().in_process)
