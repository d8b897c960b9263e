"""kill -9 at random moments, some while a checkpoint is being written: every resume must end
bit-identical to an uninterrupted run from the same init (models, optimizers, metrics CSV), and
leave the session folder as that run leaves it (same checkpoints kept, no temporary files, no lock).

Each kill costs a fresh `train.py` (importing torch), so this runs for minutes on 2 cores: slow.
"""
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import forked
import pytest
import torch
from conftest import REPO, tutorial_spec, write_json

from torchassistant.session.store import SessionStore
from torchassistant.spec.schema import TRAINING

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KILLS = 10
EPOCHS = 6
TRAIN_OPTIONS = TRAINING['properties']['train']['properties']


def harness_spec(data_root, num_workers, session_dir):
    spec = tutorial_spec(data_root, epochs=EPOCHS, num_workers=num_workers)
    spec['session_dir'] = session_dir
    for definition in spec['initialize']['definitions']:
        if definition['name'] == 'training_loader':
            definition['spec']['kwargs']['shuffle'] = True          # the data order must be resumed too
    if 'checkpoint_every' in TRAIN_OPTIONS:                          # kills then land mid-epoch
        spec['train']['checkpoint_every'] = {'iterations': 1}
    if 'best_metric' in TRAIN_OPTIONS:
        spec['train']['best_metric'] = {'name': 'val loss', 'mode': 'min'}
    return spec


class Run:
    """One train.py in its own process group (a kill takes its data loader workers too)."""

    def __init__(self, project, session, number):
        self.session = project / session
        self.log = project / f'run-{number}.log'
        env = dict(os.environ, PYTHONPATH=REPO)
        with open(self.log, 'w') as log:
            self.process = forked.Popen([sys.executable, os.path.join(REPO, 'train.py'), session], cwd=project,
                                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.temporaries = set()         # temporary checkpoint files seen so far
        self.checksums = set(self.names('.sha256'))

    def names(self, suffix='', prefix=''):
        folder = self.session / 'checkpoints'
        return [n for n in os.listdir(folder) if n.endswith(suffix) and n.startswith(prefix)]

    def wait_for(self, condition, timeout=180):
        """Poll (every half millisecond, so writes in flight are seen) until `condition()`; False when
        training ended first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                return False
            assert time.monotonic() < deadline, f'no progress in {timeout} s:\n{self.log.read_text()}'
            time.sleep(0.0005)
        return True

    def temporary_count(self):
        self.temporaries.update(self.names(prefix='.tmp-'))
        return len(self.temporaries)

    def new_checkpoints(self):
        return len(set(self.names('.sha256')) - self.checksums)

    def kill(self):
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def weights(session):
    ident, state = SessionStore(str(session)).latest_checkpoint()
    return ident, state['models'], state['optimizers']


def assert_equal(a, b, where):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f'{where}[{key!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def checkpoint_files(session):
    return sorted(n for n in os.listdir(session / 'checkpoints') if not n.startswith('best'))


@pytest.mark.parametrize('num_workers, kills', [(0, KILLS), (2, 2)])      # loader processes: fewer kills, same checks
def test_kill_9_at_random_moments_resumes_bit_identical(project, tiny_mnist, num_workers, kills):
    started = time.monotonic()
    write_json(project / 'training.json', harness_spec(tiny_mnist, num_workers, 'killed'))
    init = forked.run([sys.executable, os.path.join(REPO, 'init.py'), 'training.json'], cwd=project,
                          env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    shutil.copytree(project / 'killed', project / 'reference')
    reference = Run(project, 'reference', 'reference')
    assert reference.process.wait() == 0, reference.log.read_text()

    rng = random.Random(num_workers)
    runs, resumed_from = 0, []
    done = []
    while len(done) < kills:
        resumed_from.append(SessionStore(str(project / 'killed')).latest_checkpoint()[0])
        run = Run(project, 'killed', runs)
        runs += 1
        if rng.random() < 0.5:
            # while a checkpoint is written: the 3rd temporary file is the second checkpoint's .pt, the
            # 4th its .sha256 (so the .pt is complete but unchecked); the first checkpoint is complete
            count = rng.choice([3, 4])
            moment = f'writing (temporary file {count})'
            reached = run.wait_for(lambda: run.temporary_count() >= count)
        else:
            # after the k-th new checkpoint, a moment later: the kill lands between batches or in a
            # batch; counting checkpoints (not seconds) keeps each run's progress small on any machine
            after, delay = rng.choice([1, 2, 3]), rng.uniform(0, 0.02)
            moment = f'{delay * 1000:.0f} ms after checkpoint {after} of the run'
            reached = run.wait_for(lambda: run.new_checkpoints() >= after)
            time.sleep(delay)
            reached = reached and run.process.poll() is None
        if not reached:                 # training ended before this kill: it must have finished, not failed
            assert run.process.returncode == 0, f'run {runs - 1} failed:\n{run.log.read_text()}'
            break
        run.kill()
        done.append((moment, run.names(prefix='.tmp-')))
    assert len(done) >= kills, f'training finished after {len(done)} kills; give it more work'
    if 'checkpoint_every' in TRAIN_OPTIONS:
        assert sum(1 for ident in resumed_from if ident.batch) >= min(3, kills - 1), f'resumed mid-epoch: {resumed_from}'

    final = Run(project, 'killed', 'final')
    assert final.process.wait() == 0, final.log.read_text()
    logs = [(project / f'run-{i}.log').read_text() for i in range(1, runs)] + [final.log.read_text()]
    assert all('notice: taking over' in log and 'Traceback' not in log for log in logs), \
        'every resume takes over the lock of the killed trainer'

    ident, models, optimizers = weights(project / 'killed')
    expected = weights(project / 'reference')
    assert ident == expected[0] == (EPOCHS, 0)
    assert_equal(models, expected[1], 'models')
    assert_equal(optimizers, expected[2], 'optimizers')
    csv_text = [(project / s / 'metrics' / '0.csv').read_text() for s in ('killed', 'reference')]
    assert csv_text[0] == csv_text[1]
    assert len(list(csv.reader(csv_text[0].splitlines()))) == EPOCHS + 1
    assert checkpoint_files(project / 'killed') == checkpoint_files(project / 'reference')
    if (project / 'reference' / 'checkpoints' / 'best.pt').exists():
        best = [SessionStore(str(project / s)).checkpoint('best')['models'] for s in ('killed', 'reference')]
        assert_equal(best[0], best[1], 'best.pt models')
    assert not os.path.exists(project / 'killed' / 'train.lock')

    torn = sum(1 for _, left in done if left)
    print(f'\nnum_workers={num_workers}: {len(done)} kills ({torn} left a temporary file behind), '
          f'{runs + 1} runs, {time.monotonic() - started:.0f} s')
    for (moment, left), ident in zip(done, resumed_from):
        print(f'  from {ident.describe()}: killed {moment}; left {left or "no temporary file"}')
