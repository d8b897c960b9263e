"""Session faults (issue 16): signals during validation, a live trainer's session replaced, best.pt
after a crash, learned.pt's checksum, damaged or malformed session files, fallbacks announced, and the
trust model (what a session's spec imports; a spec changed since init).

Subprocess tests (`e2e`) run the commands as a user would, on the tutorial project of conftest; the
in-process ones (`unit`) use the store and the commands' functions directly."""
import json
import os
import socket
import subprocess
import sys
from datetime import datetime

import pytest
import torch
from conftest import REPO, make_project, write_json

from torchassistant.core.errors import UsageError
from torchassistant.session.store import SessionStore

pytestmark = pytest.mark.e2e          # the in-process tests are marked unit as well: they run in the quick loop

TRACEBACK = 'Traceback (most recent call last)'
SPEC = 'my_examples/mnist/training.json'


def run(*argv, cwd, env=None, timeout=300):
    """`python -m torchassistant ARGV` in a subprocess, with `env` added: (exit status, stdout, stderr)."""
    environ = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
                   OMP_NUM_THREADS='1', **(env or {}))
    done = subprocess.run([sys.executable, '-m', 'torchassistant', *map(str, argv)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def models_of(path):
    return torch.load(path, weights_only=True)['models']


def assert_same(a, b):
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f'{name}.{key} differs'


def edit_spec(root, change):
    path = os.path.join(root, SPEC)
    with open(path) as f:
        spec = json.load(f)
    change(spec)
    write_json(path, spec)


# ---- a signal during validation ------------------------------------------------------------------

SIGNALLING_MODEL = '''\
import os
import signal

import torch

from my_examples.mnist import LeNet5


class SignalInValidation(LeNet5):
    """LeNet5 that sends its own process SIGTERM in its first forward pass of validation, when asked to."""

    def forward(self, x):
        if not torch.is_grad_enabled() and os.environ.pop('SIGNAL_IN_VALIDATION', None):
            os.kill(os.getpid(), signal.SIGTERM)     # the handler runs here, inside the model
        return super().forward(x)
'''


def test_a_signal_during_validation_is_an_interruption_and_keeps_the_epochs_training(tmp_path, tiny_mnist):
    roots = {}
    for name in ('reference', 'stopped'):
        roots[name] = root = str(tmp_path / name)
        make_project(root, tiny_mnist, epochs=2)
        with open(os.path.join(root, 'signalling.py'), 'w') as f:
            f.write(SIGNALLING_MODEL)
        edit_spec(root, lambda s: next(d for d in s['initialize']['definitions'] if d['name'] == 'LeNet5')['spec']
                  .update({'class': 'signalling.SignalInValidation'}))
        code, out, err = run('init', SPEC, cwd=root)
        assert code == 0, out + err
    code, out, err = run('train', 'pretrained', '--quiet', cwd=roots['reference'])
    assert code == 0, out + err

    code, out, err = run('train', 'pretrained', '--quiet', cwd=roots['stopped'], env={'SIGNAL_IN_VALIDATION': '1'})
    assert code == 143, out + err
    assert TRACEBACK not in err and 'failed in validation' not in err and 'LeNet5' not in err, err
    assert 'training stopped by SIGTERM during the validation of epoch 1 (stage 0, epoch 1 of the stage); the ' \
           'epoch\'s training is kept; a checkpoint was saved there' in err, err
    assert 'Resume with: python -m torchassistant train pretrained' in err
    checkpoints = os.listdir(os.path.join(roots['stopped'], 'pretrained', 'checkpoints'))
    assert [n for n in checkpoints if n.startswith('epoch_0_batch_') and n.endswith('.pt')], checkpoints

    code, out, err = run('train', 'pretrained', cwd=roots['stopped'])
    assert code == 0, out + err
    assert 'Resuming "pretrained" after epoch 0 and' in out, out
    assert out.count('Epoch     1 [') == 1, 'the resumed run validates epoch 1 without training it again'
    final = [models_of(os.path.join(r, 'pretrained', 'checkpoints', 'epoch_2.pt')) for r in roots.values()]
    assert_same(*final)
    rows = [open(os.path.join(r, 'pretrained', 'metrics', '0.csv')).read() for r in roots.values()]
    assert rows[0] == rows[1]


# ---- init --force and a live trainer; init --force on "." ----------------------------------------

def new_session(path, state=None):
    return SessionStore.create(path, '{}', {'seed': 1}, state if state is not None else {'n': 0}, overwrite=True)


def lock_as(store, pid, since=None, host=None):
    record = {'pid': pid, 'host': host or socket.gethostname(), 'command': 'torchassistant train s',
              'since': since or datetime.now().astimezone().isoformat(timespec='seconds')}
    with open(os.path.join(store.path, 'train.lock'), 'w') as f:
        json.dump(record, f)


def finished_pid():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


@pytest.mark.unit
def test_init_force_refuses_a_session_that_a_live_trainer_holds(tmp_path):
    store = new_session(tmp_path / 's')
    lock_as(store, os.getppid())          # a process that is running (and started before the lock)
    before = sorted(os.listdir(store.path))
    for attempt in (lambda: SessionStore.check_target(store.path, overwrite=True),
                    lambda: new_session(store.path, {'n': 1})):
        with pytest.raises(UsageError) as caught:
            attempt()
        message = caught.value.message
        assert f'is being trained by pid {os.getppid()}' in message and 'init --force would replace it' in message
    assert sorted(os.listdir(store.path)) == before and SessionStore(store.path).checkpoint(0) == {'n': 0}
    assert sorted(os.listdir(tmp_path)) == ['s'], 'nothing staged is left behind'

    lock_as(store, os.getppid(), host='another-host')
    with pytest.raises(UsageError, match='cannot see whether that trainer still runs'):
        new_session(store.path, {'n': 1})

    lock_as(store, finished_pid())         # a trainer that is gone: its lock is stale
    new_session(store.path, {'n': 2})
    assert SessionStore(store.path).checkpoint(0) == {'n': 2}
    assert not os.path.exists(os.path.join(store.path, 'train.lock'))
    assert sorted(os.listdir(tmp_path)) == ['s']


@pytest.mark.unit
def test_init_force_on_the_current_folder_says_why_not_and_leaves_nothing(tmp_path, monkeypatch):
    store = new_session(tmp_path / 's')
    monkeypatch.chdir(store.path)
    for target in ('.', os.path.join('..', 's')):
        with pytest.raises(UsageError, match=r'is the current folder; init --force cannot replace the folder '
                                             r'it runs in'):
            new_session(target, {'n': 1})
    assert sorted(os.listdir(tmp_path)) == ['s'], 'no .old or staging folder left'
    assert SessionStore(store.path).checkpoint(0) == {'n': 0}
