"""Session faults (issue 16): signals during validation, a live trainer's session replaced, best.pt
after a crash, learned.pt's checksum, damaged or malformed session files, fallbacks announced, and the
trust model (what a session's spec imports; a spec changed since init).

Subprocess tests (`e2e`) run the commands as a user would, on the tutorial project of conftest; the
in-process ones (`unit`) use the store and the commands' functions directly."""
import hashlib
import io
import json
import os
import shutil
import socket
import sys
from datetime import datetime

import forked
import pytest
import torch
from conftest import REPO, folder_snapshot, make_project, write_json

from torchassistant.core.errors import UsageError
from torchassistant.session.store import SessionStore

pytestmark = pytest.mark.e2e          # the in-process tests are marked unit as well: they run in the quick loop

TRACEBACK = 'Traceback (most recent call last)'
SPEC = 'my_examples/mnist/training.json'


def run(*argv, cwd, env=None, timeout=300):
    """`python -m torchassistant ARGV` in a subprocess, with `env` added: (exit status, stdout, stderr)."""
    environ = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
                   OMP_NUM_THREADS='1', **(env or {}))
    done = forked.run([sys.executable, '-m', 'torchassistant', *map(str, argv)], cwd=cwd, env=environ,
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
    process = forked.Popen([sys.executable, '-c', 'pass'])
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


# ---- best.pt after a crash ---------------------------------------------------------------------

class Killed(BaseException):
    """The process dies here (as kill -9 would: nothing after it runs)."""


def best_session(tmp_path):
    store = new_session(tmp_path / 's', {'epoch': 0})
    store.set_retention(keep_checkpoints=2, best_metric={'name': 'val loss', 'mode': 'min'})
    return store


def state_of(epoch, losses):
    return {'epoch': epoch, 'progress': {'history': {0: [{'val loss': v} for v in losses[:epoch]]}}}


def kill_at(monkeypatch, store_module, name):
    """Make the next atomic write of a file called `name` die before it happens."""
    real = store_module.atomic.write

    def write(path, data):
        if os.path.basename(path) == name:
            raise Killed()
        return real(path, data)
    monkeypatch.setattr(store_module.atomic, 'write', write)


@pytest.mark.unit
@pytest.mark.parametrize('dies_at', ['best.json', 'best.pt', 'epoch_2.sha256'])
def test_best_pt_matches_its_record_after_a_crash_at_any_write_and_train_completes_it(tmp_path, monkeypatch,
                                                                                      dies_at):
    from torchassistant.session import store as store_module
    losses = [0.5, 0.3]
    store = best_session(tmp_path)
    store.save_checkpoint(1, state_of(1, losses), metrics={'val loss': 0.5})
    kill_at(monkeypatch, store_module, dies_at)
    with pytest.raises(Killed):
        store.save_checkpoint(2, state_of(2, losses), metrics={'val loss': 0.3})
    monkeypatch.undo()

    reopened = SessionStore(store.path)
    notes = []
    record, state = reopened.best_checkpoint(notes.append)
    assert record['epoch'] == state['epoch'], 'best.pt is what its record says'
    assert (notes != []) == (dies_at == 'best.pt'), notes      # an older best.pt, still described, is announced
    reopened.set_retention(keep_checkpoints=2, best_metric={'name': 'val loss', 'mode': 'min'})
    out = io.StringIO()
    assert reopened.repair_best(out) == (dies_at != 'epoch_2.sha256'), out.getvalue()
    if dies_at != 'epoch_2.sha256':       # epoch 2's checkpoint is on disk: best.pt must become it
        assert 'notice: ' in out.getvalue() and 'best.pt' in out.getvalue()
        record, state = reopened.best_checkpoint()
        assert record['epoch'] == state['epoch'] == 2
    else:                                 # epoch 2 never became a checkpoint: the best stays epoch 1
        assert reopened.best_checkpoint()[1]['epoch'] == 1
    assert reopened.repair_best(io.StringIO()) is False, 'repaired once, consistent from then on'


@pytest.mark.unit
def test_a_truncated_latest_checkpoint_leaves_best_pt_intact(tmp_path):
    store = best_session(tmp_path)
    store.save_checkpoint(1, state_of(1, [0.5]), metrics={'val loss': 0.5})
    with open(os.path.join(store.path, 'checkpoints', 'epoch_1.pt'), 'r+b') as f:
        f.truncate(100)                   # in place: a hard link would share it
    assert store.checkpoint('best') == state_of(1, [0.5])


@pytest.mark.unit
def test_best_json_with_wrong_types_is_named_and_replaced_by_train(tmp_path):
    store = best_session(tmp_path)
    store.save_checkpoint(1, state_of(1, [0.5]), metrics={'val loss': 0.5})
    path = os.path.join(store.path, 'checkpoints', 'best.json')
    with open(path) as f:
        record = json.load(f)
    write_json(path, {**record, 'epoch': '1'})
    with pytest.raises(UsageError) as caught:
        store.checkpoint('best')
    assert f'{store.path}/checkpoints/best.json is damaged ("epoch" is "1", not an epoch number)' in caught.value.message
    assert 'best.json is damaged' in store.inventory()
    out = io.StringIO()
    assert store.repair_best(out)
    assert 'notice: ' in out.getvalue() and 'best.json is damaged' in out.getvalue()
    assert store.best_checkpoint()[0]['epoch'] == 1, 'rebuilt from the latest epoch-end checkpoint'


# ---- damaged or malformed session files: named, no traceback, never a silent change --------------

EVALUATE = 'my_examples/mnist/evaluation.json'
INFER = ('my_examples/mnist/inference.json', 'my_examples/mnist/digit_2.png')


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_mnist):
    """A tutorial project whose session "pretrained" is trained 1 epoch (epoch_0 and epoch_1 kept)."""
    root = str(tmp_path_factory.mktemp('trained'))
    make_project(root, tiny_mnist, epochs=1)
    for argv in (('init', SPEC), ('train', 'pretrained', '--quiet')):
        code, out, err = run(*argv, cwd=root)
        assert code == 0, out + err
    return root


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the trained project, to damage."""
    root = str(tmp_path / 'project')
    shutil.copytree(trained, root)
    return root


def session_file(root, *parts):
    return os.path.join(root, 'pretrained', *parts)


def flip_a_byte(path, at=None):
    """Flip one bit of the file at `at` (default: its middle, inside the data: it would load, changed)."""
    with open(path, 'r+b') as f:
        f.seek(os.path.getsize(path) // 2 if at is None else at)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


def rewrite_checkpoint(root, name, change):
    """Replace checkpoints/<name>.pt by `change(state)`, with a matching checksum (as a deliberate edit)."""
    path = session_file(root, 'checkpoints', name + '.pt')
    state = change(torch.load(path, weights_only=True))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with open(path, 'wb') as f:
        f.write(buffer.getvalue())
    with open(session_file(root, 'checkpoints', name + '.sha256'), 'w') as f:
        f.write(hashlib.sha256(buffer.getvalue()).hexdigest())


def without(key):
    return lambda state: {k: v for k, v in state.items() if k != key}


def damage_session_json(root):
    with open(session_file(root, 'session.json'), 'r+') as f:
        f.truncate(7)


def damage_lock(root):
    write_json(session_file(root, 'train.lock'), {'pid': 10 ** 30, 'host': socket.gethostname(),
                                                  'since': '2026-01-01T00:00:00+00:00'})


@pytest.mark.parametrize('damage, commands, says', [
    (damage_session_json, [('evaluate', EVALUATE), ('status', 'pretrained'), ('train', 'pretrained')],
     'pretrained/session.json is damaged (it is not JSON'),
    (lambda root: rewrite_checkpoint(root, 'epoch_1', without('models')), [('evaluate', EVALUATE),
                                                                           ('train', 'pretrained')],
     'pretrained/checkpoints/epoch_1.pt was not loaded: its checksum matches, but it is not a checkpoint '
     'TorchAssistant wrote ("models" is missing)'),
    (lambda root: rewrite_checkpoint(root, 'epoch_1', lambda s: {**s, 'progress': {**s['progress'],
                                                                                   'history': {101: 0.5}}}),
     [('evaluate', EVALUATE), ('status', 'pretrained')],
     'epoch_1.pt was not loaded: its checksum matches, but it is not a checkpoint TorchAssistant wrote '
     '("progress"."history" is not {stage: [{metric: number}, ...]})'),
    (lambda root: flip_a_byte(session_file(root, 'learned.pt')), [('evaluate', EVALUATE), ('infer', *INFER)],
     'pretrained/learned.pt is damaged (its checksum does not match learned.sha256)'),
    (damage_lock, [('train', 'pretrained')], 'pretrained/train.lock exists but does not say who holds it'),
])
def test_a_damaged_session_file_is_named_with_no_traceback(copy, damage, commands, says):
    damage(copy)
    before = folder_snapshot(os.path.join(copy, 'pretrained'))
    for argv in commands:
        code, out, err = run(*argv, cwd=copy)
        assert code == 2 and TRACEBACK not in err and says in err, (argv, code, out + err)
    assert folder_snapshot(os.path.join(copy, 'pretrained')) == before, 'nothing was changed'


def test_status_of_a_lock_with_a_huge_pid_says_it_cannot_tell(copy):
    damage_lock(copy)
    code, out, err = run('status', 'pretrained', cwd=copy)
    assert code == 0 and TRACEBACK not in err, out + err
    assert 'training now: unknown; pretrained/train.lock does not say who holds it' in out, out


def test_a_fallback_to_an_older_checkpoint_is_announced_and_status_marks_the_damaged_one(copy):
    flip_a_byte(session_file(copy, 'checkpoints', 'epoch_1.pt'))
    said = ('notice: pretrained/checkpoints/epoch_1.pt is damaged (the checksum does not match); using the newest '
            'intact checkpoint, epoch_0.pt (epoch 0), instead')
    for argv in (('evaluate', EVALUATE), ('infer', *INFER)):
        code, out, err = run(*argv, cwd=copy)
        assert code == 0 and said in err, (argv, out + err)
    code, out, err = run('status', 'pretrained', cwd=copy)
    assert code == 0, out + err
    assert 'epoch_0, epoch_1 (damaged: its checksum does not match; not used)' in out, out
    code, out, err = run('status', 'pretrained', '--json', cwd=copy)
    assert json.loads(out)['damaged'] == ['epoch_1']


# ---- the trust model: what a session's spec runs, and a spec changed since init ------------------

PLANTED = '''\
import os

open("IMPORTED", "w").close()             # what importing this module does


def Model():
    return None
'''


def plant(root):
    """Edit the session's spec.json to build its model with planted.Model, a module next to it."""
    with open(os.path.join(root, 'planted.py'), 'w') as f:
        f.write(PLANTED)
    path = session_file(root, 'spec.json')
    with open(path) as f:
        spec = json.load(f)
    next(d for d in spec['initialize']['definitions'] if d['name'] == 'LeNet5')['spec']['class'] = 'planted.Model'
    write_json(path, spec)


def test_status_lists_what_the_spec_imports_without_importing_it(copy):
    plant(copy)
    code, out, err = run('status', 'pretrained', cwd=copy)
    assert code == 0, out + err
    assert 'Code the spec runs (each is imported and called when the session is opened' in out
    assert 'planted.Model' in out and 'initialize.definitions[5] "LeNet5" spec.class' in out, out
    assert 'torch.optim.Adam' in out and 'torchassistant.stop_conditions.EpochsCompleted' in out
    assert 'modules: torchvision.datasets, my_examples.mnist, planted, torch.optim' in out, out
    assert 'spec: CHANGED since init: spec.json; train, evaluate and infer refuse it until it is accepted with: ' \
           'python -m torchassistant trust pretrained' in out, out
    code, out, err = run('status', 'pretrained', '--json', cwd=copy)
    found = json.loads(out)
    assert {'name': 'planted.Model', 'where': 'initialize.definitions[5] "LeNet5" spec.class'} in found['code']
    assert found['spec_changed'] == ['spec.json']
    assert not os.path.exists(os.path.join(copy, 'IMPORTED')), 'status imported the module it lists'


def test_a_spec_changed_since_init_is_refused_until_trusted(copy):
    plant(copy)
    before = folder_snapshot(os.path.join(copy, 'pretrained'))
    for argv in (('train', 'pretrained'), ('evaluate', EVALUATE), ('infer', *INFER)):
        code, out, err = run(*argv, cwd=copy)
        assert code == 2 and TRACEBACK not in err, (argv, out + err)
        assert 'session "pretrained": pretrained/spec.json changed since init recorded it. The spec decides which ' \
               'code runs when the session is opened' in err, err
        assert 'python -m torchassistant status pretrained' in err and \
               'accept it with: python -m torchassistant trust pretrained' in err, err
    assert not os.path.exists(os.path.join(copy, 'IMPORTED')), 'nothing of the changed spec ran'
    assert folder_snapshot(os.path.join(copy, 'pretrained')) == before

    code, out, err = run('trust', 'pretrained', cwd=copy)
    assert code == 0, out + err
    assert 'planted.Model' in out and 'spec: changed since recorded: spec.json; accepted as it is now' in out, out
    assert not os.path.exists(os.path.join(copy, 'IMPORTED')), 'trust lists, it does not import'
    code, out, err = run('evaluate', EVALUATE, cwd=copy)
    assert 'changed since init' not in err and os.path.exists(os.path.join(copy, 'IMPORTED')), out + err


def test_a_session_without_a_spec_digest_is_opened_with_a_notice(copy):
    path = session_file(copy, 'session.json')
    with open(path) as f:
        meta = json.load(f)
    assert set(meta['spec_sha256']) == {'spec.json'}, meta
    write_json(path, {k: v for k, v in meta.items() if k != 'spec_sha256'})
    code, out, err = run('evaluate', EVALUATE, cwd=copy)
    assert code == 0, out + err
    assert 'notice: session "pretrained" records no digest of its spec (made before they were recorded); record ' \
           'one with: python -m torchassistant trust pretrained' in err, err
