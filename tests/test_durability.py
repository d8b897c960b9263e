"""The session folder's durability: plain-data files only (a planted payload is refused, never run),
one trainer at a time (train.lock), checkpoint identity and retention, best.pt, and failing writes
that leave the previous checkpoint intact."""
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import forked
import numpy
import pytest
import torch
from conftest import REPO, make_project, run_script

from torchassistant.cli import commands
from torchassistant.core.errors import TorchAssistantError, UsageError
from torchassistant.session import atomic, checkpoint
from torchassistant.session import lock as session_lock
from torchassistant.session.store import CheckpointId, SessionStore, WriteError

pytestmark = pytest.mark.e2e


# ---- a tutorial session made once per module; each test works on a copy -------------------------

@pytest.fixture(scope='module')
def template(tmp_path_factory, tiny_mnist):
    """A tutorial project with `pretrained` initialized (30 epochs to go: long enough to be running)."""
    root = make_project(tmp_path_factory.mktemp('durability'), tiny_mnist, epochs=30)
    result = run_script('init.py', 'my_examples/mnist/training.json', cwd=root)
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def copy(template, tmp_path):
    shutil.copytree(template, tmp_path / 'p')
    return tmp_path / 'p'


def start_training(project, session='pretrained'):
    """train.py in the background, in its own process group; its output goes to a file."""
    log = open(project / f'train-{time.monotonic_ns()}.log', 'w+')
    process = forked.Popen([sys.executable, os.path.join(REPO, 'train.py'), session], cwd=project,
                               env=dict(os.environ, PYTHONPATH=REPO), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    process.log = log
    return process


def wait_until(condition, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, open(process.log.name).read()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def read_lock(session):
    with open(session / 'train.lock') as f:
        return json.load(f)


# ---- 1. plain data only -----------------------------------------------------------------------------

def test_every_session_file_loads_as_plain_data(copy):
    session = copy / 'pretrained'
    for path in [session / 'learned.pt', session / 'checkpoints' / 'epoch_0.pt']:
        torch.load(path, weights_only=True)
    rng = torch.load(session / 'checkpoints' / 'epoch_0.pt', weights_only=True)['rng']
    assert rng['numpy'][0] == 'MT19937' and len(rng['numpy'][1]) == 624


def test_rng_states_round_trip_through_their_plain_forms():
    import random
    random.seed(1), numpy.random.seed(2), torch.manual_seed(3)
    numpy.random.standard_normal()          # leaves a cached gaussian in numpy's state
    state = checkpoint.rng_state()
    assert checkpoint.plain_data_problem(state) is None
    expected = random.random(), numpy.random.standard_normal(), numpy.random.rand(), torch.rand(2)
    checkpoint.restore_rng(state)
    again = random.random(), numpy.random.standard_normal(), numpy.random.rand(), torch.rand(2)
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])


class Payload:
    """Unpickling it calls open(path, "w"): it creates `path`. Code that a checkpoint must never run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def plant(path, marker):
    """Add a Payload to the session file at `path`, keeping its checksum (if any) matching."""
    state = torch.load(path, weights_only=True)
    state['extra'] = Payload(marker)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    checksum = path.with_suffix('.sha256')
    if checksum.exists():
        checksum.write_text(hashlib.sha256(buffer.getvalue()).hexdigest())


@pytest.mark.parametrize('target', ['learned.pt', 'checkpoints/epoch_0.pt'])
def test_planted_payload_is_refused_and_never_runs(copy, target):
    marker = copy / 'payload-ran'
    plant(copy / 'pretrained' / target, marker)
    proof, buffer = copy / 'proof', io.BytesIO()         # such a payload is real: unsafe loading runs it
    torch.save({'extra': Payload(proof)}, buffer)
    buffer.seek(0)
    torch.load(buffer, weights_only=False)
    assert proof.exists()

    for script, argument in [('train.py', 'pretrained'), ('evaluate.py', 'my_examples/mnist/evaluation.json')]:
        result = run_script(script, argument, cwd=copy)
        assert result.returncode == 2, result.stderr
        message = result.stderr
        assert f'pretrained/{target} was not loaded' in message, message
        assert 'contains code or objects that are not plain data' in message
        assert '(it refers to io.open)' in message and 'Traceback' not in message
        assert not marker.exists(), f'{script} ran the payload'
    assert not (copy / 'pretrained' / 'train.lock').exists()


def toy_project(workdir, monkeypatch, module):
    """A toy spec (tests/toy.py) whose preprocessor and model come from `module` (source text)."""
    shutil.copy(os.path.join(os.path.dirname(__file__), 'toy.py'), workdir / 'toy.py')
    (workdir / 'mine.py').write_text(module)
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delitem(sys.modules, 'mine', raising=False)     # another test's mine.py
    d = lambda group, name, **spec: {'group': group, 'name': name, 'spec': spec}   # noqa: E731
    spec = {'session_dir': 'session', 'initialize': {'definitions': [
        d('datasets', 'points', **{'class': 'toy.Points', 'kwargs': {'size': 40}}),
        d('preprocessors', 'scale', fit='points', **{'class': 'mine.Scale'}),
        d('datasets', 'train', link='points', preprocessors=['scale']),
        d('collators', 'stack', **{'class': 'mine.Stack'}),
        d('data_loaders', 'loader', dataset='train', collator='stack', kwargs={'batch_size': 8}),
        d('models', 'net', **{'class': 'mine.Net'}),
        d('optimizers', 'sgd', model='net', **{'class': 'SGD', 'kwargs': {'lr': 0.1}}),
        d('losses', 'ce', inputs=['y_hat', 'input_2'], **{'class': 'CrossEntropyLoss'})],
        'pipelines': {'fit': {'input_injector': [{'data_loader': 'loader'}], 'losses': [{'loss_name': 'ce'}]}}},
        'train': {'stages': [{'training_pipelines': ['fit'],
                              'stop_condition': {'class': 'EpochsCompleted', 'kwargs': {'num_epochs': 1}}}]}}
    (workdir / 'train.json').write_text(json.dumps(spec))
    return str(workdir / 'train.json')


TOY = '''
import numpy, torch, toy
from torchassistant.preprocessors import ValuePreprocessor

class Scale(ValuePreprocessor):
    def fit(self, dataset):
        self.scale = {scale}

    def process(self, value):
        return value / float(self.scale)

class Stack:
    def __call__(self, batch):
        return toy.stack(batch)

class Net(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Linear(2, 2))

    def forward(self, x):
        return [super().forward(x)]

    def get_extra_state(self):
        return {extra}

    def set_extra_state(self, state):
        pass
'''


def test_preprocessor_state_that_is_not_plain_data_fails_at_init(tmp_path, monkeypatch):
    spec = toy_project(tmp_path, monkeypatch, TOY.format(scale='numpy.float64(10.0)', extra='{}'))
    with pytest.raises(TorchAssistantError) as caught:
        commands.init(spec)
    message = caught.value.message
    assert message.startswith('preprocessor "scale": its fitted state'), message
    assert 'a numpy.float64 at ["scale"]' in message and 'float(x)' in message
    assert not (tmp_path / 'session').exists()


def test_model_state_that_is_not_plain_data_fails_at_init(tmp_path, monkeypatch):
    spec = toy_project(tmp_path, monkeypatch, TOY.format(scale='10.0', extra="{'table': numpy.zeros(3)}"))
    with pytest.raises(TorchAssistantError) as caught:
        commands.init(spec)
    message = caught.value.message
    assert message.startswith('cannot save session/checkpoints/epoch_0.pt: the state holds a numpy.ndarray at '
                              '["models"]["net"]["_extra_state"]["table"]'), message
    assert not (tmp_path / 'session').exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.session')], 'no staging folder left'


def test_plain_data_problem_finds_the_first_other_object():
    problem = checkpoint.plain_data_problem
    assert problem({'w': torch.ones(2), 'n': [1, 2.5, 'x', None, (True, b'y')], 7: {'s': torch.Size([2])}}) is None
    assert problem({'a': [0, {'b': numpy.zeros(1)}]}) == 'a numpy.ndarray at ["a"][1]["b"]'
    assert problem([lambda: 0]).startswith('a builtins.function at [0]')
    assert problem(__import__('collections').defaultdict(list)) == 'a collections.defaultdict at the top level'


# ---- 2. one writer ---------------------------------------------------------------------------------

def test_a_second_trainer_is_refused_at_once_and_a_dead_ones_lock_is_taken_over(copy):
    session = copy / 'pretrained'
    first = start_training(copy)
    try:
        wait_until(lambda: (session / 'checkpoints' / 'epoch_1.sha256').exists(), first)
        holder = read_lock(session)
        assert holder['pid'] == first.pid and holder['host'] == socket.gethostname()
        assert set(holder) == {'pid', 'host', 'since', 'command'} and holder['command'] == 'python train.py pretrained'

        begun = time.monotonic()
        second = run_script('train.py', 'pretrained', cwd=copy)
        took = time.monotonic() - begun
        assert second.returncode == 2, second.stderr
        assert f'is being trained by pid {first.pid} on host "{socket.gethostname()}" since {holder["since"]}' \
            in second.stderr
        assert f'kill {first.pid}' in second.stderr and 'pretrained/train.lock' in second.stderr
        assert 'Traceback' not in second.stderr and first.poll() is None
        assert read_lock(session) == holder
        print(f'\nthe second trainer was refused in {took:.1f} s (process start included)')
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    assert read_lock(session)['pid'] == first.pid, 'kill -9 leaves the lock behind'
    saved = set(os.listdir(session / 'checkpoints'))
    third = start_training(copy)
    try:
        wait_until(lambda: 'notice: taking over' in open(third.log.name).read(), third)
        assert read_lock(session)['pid'] == third.pid
        wait_until(lambda: {n for n in os.listdir(session / 'checkpoints') if n.endswith('.sha256')} - saved, third)
        notice = open(third.log.name).read().splitlines()[0]
        assert notice == (f'notice: taking over pretrained/train.lock: pid {first.pid} (since {holder["since"]}) '
                          f'is no longer running on this host')
    finally:
        third.send_signal(signal.SIGINT)      # stops at the end of the round: the lock is released on the way out
        assert third.wait(timeout=120) == 130, open(third.log.name).read()
    assert not (session / 'train.lock').exists()


@pytest.fixture
def folder(tmp_path):
    return SessionStore.create(tmp_path / 's', '{}', {'seed': 1}, {'n': 0})


def write_lock(store, **fields):
    record = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': '2024-01-02T03:04:05+00:00',
              'command': 'train.py s', **fields}
    with open(os.path.join(store.path, 'train.lock'), 'w') as f:
        json.dump(record, f)
    return record


def dead_pid():
    process = forked.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_lock_is_released_on_exceptions_and_interrupts(folder):
    lock = os.path.join(folder.path, 'train.lock')
    for error in (RuntimeError('boom'), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with folder.lock('train.py s'):
                assert json.load(open(lock))['pid'] == os.getpid()
                raise error
        assert not os.path.exists(lock)
    with folder.lock('train.py s'):
        with pytest.raises(UsageError, match='already being trained by this process'):
            with folder.lock('train.py s'):
                pass
        assert os.path.exists(lock)


def test_stale_lock_on_this_host_is_taken_over_with_a_notice(folder, capsys):
    pid = dead_pid()
    write_lock(folder, pid=pid)
    open(os.path.join(folder.path, 'checkpoints', '.tmp-left-by-the-dead'), 'w').close()
    with folder.lock('train.py s', stream=sys.stdout):
        assert json.load(open(os.path.join(folder.path, 'train.lock')))['pid'] == os.getpid()
        assert not os.path.exists(os.path.join(folder.path, 'checkpoints', '.tmp-left-by-the-dead'))
    out = capsys.readouterr().out
    assert out == (f'notice: taking over {folder.path}/train.lock: pid {pid} (since 2024-01-02T03:04:05+00:00) '
                   f'is no longer running on this host\n')
    write_lock(folder)          # this process's own pid, but not a lock it holds: the pid was reused
    with folder.lock('train.py s'):
        pass


def test_live_and_foreign_locks_are_respected(folder):
    parent = os.getppid()
    write_lock(folder, pid=parent, since='2999-01-01T00:00:00+00:00')
    with pytest.raises(UsageError) as caught:
        with folder.lock('train.py s'):
            pass
    assert f'is being trained by pid {parent} on host "{socket.gethostname()}"' in caught.value.message
    assert 'evaluate.py and infer.py can run meanwhile' in caught.value.message

    write_lock(folder, pid=dead_pid(), host='elsewhere')
    with pytest.raises(UsageError) as caught:
        with folder.lock('train.py s'):
            pass
    message = caught.value.message
    assert 'is locked by pid' in message and 'on host "elsewhere"' in message
    assert f'If host "elsewhere" is gone or no longer trains this session, delete {folder.path}/train.lock' in message

    with open(os.path.join(folder.path, 'train.lock'), 'w') as f:
        f.write('{"pid": ')
    with pytest.raises(UsageError, match='exists but does not say who holds it'):
        with folder.lock('train.py s'):
            pass


def test_a_pid_reused_by_a_later_process_does_not_hold_the_lock(folder):
    write_lock(folder, pid=os.getppid(), since='2000-01-01T00:00:00+00:00')   # the parent started later
    if session_lock.process_start(os.getppid()) is None:
        pytest.skip('no /proc here to tell when a process started')
    with folder.lock('train.py s'):
        pass


# ---- 2b. Ctrl+C and SIGTERM: a checkpoint where training stops ----------------------------------

GATE = '''
import os
import time

from my_examples.mnist import MyCollator


class GatedCollator(MyCollator):
    """MyCollator that, while the file "arm" exists, at its 3rd batch after the epoch-1 checkpoint renames
    "arm" to "gate" and waits until "gate" is gone: the test's signal arrives inside that training batch."""
    after_checkpoint = 0

    def __call__(self, batch):
        if os.path.exists('arm') and os.path.exists('pretrained/checkpoints/epoch_1.sha256'):
            type(self).after_checkpoint += 1
            if type(self).after_checkpoint == 3:
                os.rename('arm', 'gate')
                while os.path.exists('gate'):
                    time.sleep(0.01)
        return super().__call__(batch)
'''


@pytest.mark.parametrize('signum, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_checkpoint_where_they_stop_and_resume_continues(project, signum, code):
    """The signal is sent while epoch 2's third training batch is held open by the collator, so it
    lands there, never during validation, however fast or slow the machine."""
    (project / 'my_examples' / 'gate.py').write_text(GATE)
    spec_path = project / 'my_examples' / 'mnist' / 'training.json'
    spec = json.loads(spec_path.read_text())
    for definition in spec['initialize']['definitions']:
        if definition['group'] == 'collators':
            definition['spec']['class'] = 'my_examples.gate.GatedCollator'
    spec_path.write_text(json.dumps(spec))
    assert run_script('init.py', 'my_examples/mnist/training.json', cwd=project).returncode == 0
    (project / 'arm').touch()
    process = start_training(project)
    wait_until(lambda: (project / 'gate').exists(), process)
    process.send_signal(signum)
    (project / 'gate').unlink()
    assert process.wait(timeout=120) == code
    err = open(process.log.name).read()
    assert f'training stopped by {signal.Signals(signum).name} in epoch 2 (stage 0, epoch 2 of the stage), ' \
           f'after batch 3 of 10; a checkpoint was saved there' in err, err
    assert 'python train.py pretrained' in err and 'Traceback' not in err
    assert SessionStore(str(project / 'pretrained')).latest_checkpoint()[0] == CheckpointId(1, 3)
    result = run_script('train.py', 'pretrained', cwd=project)
    assert result.returncode == 0, result.stderr
    assert 'Resuming "pretrained" after epoch 1 and 3 batches of the next' in result.stdout
    assert 'Epoch     2 [acc' in result.stdout and 'Epoch     3' not in result.stdout


# ---- 3. identity, retention, best, selection ------------------------------------------------------

def test_checkpoints_are_ordered_by_epoch_then_batch(folder):
    for epoch, batch in [(9, 0), (9, 5), (9, 10), (10, 0), (10, 3)]:
        folder.save_checkpoint(epoch, {'at': (epoch, batch)}, batch=batch)
    names = sorted(os.listdir(os.path.join(folder.path, 'checkpoints')))
    assert names == ['epoch_0.pt', 'epoch_0.sha256', 'epoch_10.pt', 'epoch_10.sha256', 'epoch_10_batch_3.pt',
                     'epoch_10_batch_3.sha256', 'epoch_9.pt', 'epoch_9.sha256'], 'epoch 9\'s mid-epoch ones went'
    assert folder.latest_checkpoint() == ((10, 3), {'at': (10, 3)})
    ident, _ = folder.latest_checkpoint()
    assert isinstance(ident, CheckpointId) and ident.epoch == 10 and ident.batch == 3
    os.remove(os.path.join(folder.path, 'checkpoints', 'epoch_10_batch_3.sha256'))   # killed between the writes
    epoch, state = folder.latest_checkpoint()
    assert epoch == (10, 0) and state == {'at': (10, 0)}


def test_retention_keeps_the_last_k_and_the_best(folder):
    folder.set_retention(keep_checkpoints=2, best_metric={'name': 'val loss', 'mode': 'min'})
    losses = {1: 0.9, 2: 0.4, 3: 0.6, 4: 0.5, 5: 0.7}
    for epoch, loss in losses.items():
        folder.save_checkpoint(epoch - 1, {'mid': epoch}, batch=7)
        folder.save_checkpoint(epoch, {'epoch': epoch}, metrics={'val loss': loss, 'val acc': 0.5})
    files = sorted(os.listdir(os.path.join(folder.path, 'checkpoints')))
    assert files == ['best.json', 'best.pt', 'epoch_4.pt', 'epoch_4.sha256', 'epoch_5.pt',
                     'epoch_5.sha256'], 'epoch 0 and mid-epoch checkpoints went; the best (epoch 2) stays'
    assert {k: folder.best_record()[k] for k in ('epoch', 'metric', 'mode', 'value')} == \
        {'epoch': 2, 'metric': 'val loss', 'mode': 'min', 'value': 0.4}
    assert folder.checkpoint('best') == {'epoch': 2}
    assert folder.checkpoint('latest') == {'epoch': 5} == folder.checkpoint(5)
    folder.save_checkpoint(5, {'mid': 6}, batch=3)
    assert folder.checkpoint('latest') == {'mid': 6}, 'the mid-epoch one of the epoch in progress'
    assert folder.checkpoint_epochs() == [4, 5]

    folder.set_retention(keep_checkpoints=2, best_metric={'name': 'val acc', 'mode': 'max'})
    folder.save_checkpoint(6, {'epoch': 6}, metrics={'val loss': 1.0, 'val acc': 0.1})
    assert folder.checkpoint('best') == {'epoch': 6}, 'another metric: the first epoch under it is the best'
    folder.save_checkpoint(7, {'epoch': 7}, metrics={'val loss': 1.0, 'val acc': 0.1})
    assert folder.best_record()['epoch'] == 6, 'a tie keeps the earlier epoch'
    with pytest.raises(UsageError, match='train.best_metric names "val acc", which is not among the metrics of '
                                         'epoch 8: loss'):
        folder.save_checkpoint(8, {'epoch': 8}, metrics={'loss': 1.0})


def test_selecting_a_checkpoint_that_is_absent_lists_what_exists(folder):
    folder.save_checkpoint(1, {'epoch': 1})
    folder.save_checkpoint(1, {'mid': 1}, batch=4)
    with pytest.raises(UsageError) as caught:
        folder.checkpoint(7)
    assert caught.value.message == (f'session "{folder.path}" has no checkpoint of epoch 7; it has epoch-end '
                                    f'checkpoints of epochs 0, 1; a mid-epoch one at epoch 1 + 4 batches')
    with pytest.raises(UsageError, match='has no best checkpoint'):
        folder.checkpoint('best')
    with pytest.raises(UsageError, match='not 1.5'):
        folder.checkpoint(1.5)
    with open(os.path.join(folder.path, 'checkpoints', 'epoch_1.pt'), 'r+b') as f:
        f.write(b'torn')
    with pytest.raises(UsageError, match=r'epoch_1.pt is damaged \(its checksum does not match\)'):
        folder.checkpoint(1)


# ---- 4. faults -------------------------------------------------------------------------------------

def failing(name, error_number, after=0):
    """A stand-in for os.<name> that works `after` times, then raises OSError(error_number)."""
    real, calls = getattr(os, name), []

    def fake(*args):
        calls.append(args)
        if len(calls) > after:
            raise OSError(error_number, os.strerror(error_number))
        return real(*args)
    return fake


@pytest.mark.parametrize('name, after, what', [
    ('write', 0, 'the .pt file'), ('write', 1, 'its .sha256'), ('fsync', 0, 'syncing the .pt file')])
def test_disk_full_while_saving_leaves_the_previous_checkpoint_intact(folder, monkeypatch, name, after, what):
    folder.save_checkpoint(1, {'epoch': 1})
    monkeypatch.setattr(atomic.os, name, failing(name, errno.ENOSPC, after))
    with pytest.raises(WriteError) as caught:
        folder.save_checkpoint(2, {'epoch': 2})
    monkeypatch.undo()
    message = caught.value.message
    assert message.startswith(f'could not save the checkpoint {folder.path}/checkpoints/epoch_2.pt: '
                              f'No space left on device (ENOSPC). The previous checkpoint, '
                              f'{folder.path}/checkpoints/epoch_1.pt (epoch 1), is intact'), message
    assert caught.value.exit_code == 1
    assert folder.latest_checkpoint() == ((1, 0), {'epoch': 1})
    names = os.listdir(os.path.join(folder.path, 'checkpoints'))
    assert not [n for n in names if n.startswith('.tmp-')], names


def test_read_only_folder_while_saving(folder, monkeypatch):
    folder.save_checkpoint(1, {'epoch': 1})

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), kwargs.get('dir'))
    monkeypatch.setattr(atomic.tempfile, 'mkstemp', read_only)
    with pytest.raises(WriteError, match=r'epoch_2.pt: Read-only file system \(EROFS\)\. The previous checkpoint'):
        folder.save_checkpoint(2, {'epoch': 2})
    monkeypatch.undo()
    assert folder.latest_checkpoint() == ((1, 0), {'epoch': 1})


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders anyway')
def test_chmod_read_only_checkpoints_folder(folder):
    folder.save_checkpoint(1, {'epoch': 1})
    checkpoints = os.path.join(folder.path, 'checkpoints')
    os.chmod(checkpoints, 0o555)
    try:
        with pytest.raises(WriteError, match=r'epoch_2.pt: Permission denied \(EACCES\)\. The previous checkpoint'):
            folder.save_checkpoint(2, {'epoch': 2})
    finally:
        os.chmod(checkpoints, 0o755)
    assert folder.latest_checkpoint() == ((1, 0), {'epoch': 1})
    assert not [n for n in os.listdir(checkpoints) if n.startswith('.tmp-')]


def test_a_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / 'file'
    target.write_bytes(b'old')
    monkeypatch.setattr(atomic.os, 'replace', failing('replace', errno.EIO))
    with pytest.raises(OSError):
        atomic.write(str(target), b'new' * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b'old' and os.listdir(tmp_path) == ['file']
