"""Training on several processes (torchassistant.distributed): torchrun with gloo on the CPU trains a
tiny MNIST session whose validation rows equal a one-process evaluation of its checkpoint, survives the
kill of one process and resumes (and, marked slow, a SIGTERM mid-epoch resumes bit-identically to an
uninterrupted run and continues in one process); in two spawned processes, the reductions
(count-weighted means, torchmetrics states, mid-epoch meter sums), buffer agreement and agreed stops;
in one process, the shard sampler and the launch environment."""
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import forked
import pytest
import torch
import torch.multiprocessing
from conftest import REPO, make_project, write_json, write_tiny_mnist

from torchassistant.cli import commands
from torchassistant.core.errors import TorchAssistantError, UsageError
from torchassistant.metrics import Accuracy
from torchassistant.run import distributed
from torchassistant.run.data import ResumableLoader
from torchassistant.run.meters import Meters
from torchassistant.run.pipeline import Criterion, Use
from torchassistant.session import checkpoint
from torchassistant.session import lock as session_lock
from torchassistant.session.store import SessionStore

pytestmark = pytest.mark.e2e


# ---- one process: the environment and the sampler ------------------------------------------------

def test_one_process_is_the_plain_run():
    world = distributed.World.from_environment({})
    assert (world.rank, world.size, world.is_main, world.describe()) == (0, 1, True, '')
    assert world.start(torch.device('cpu')) == torch.device('cpu') and not distributed.active()
    kwargs = {'batch_size': 4, 'shuffle': True}
    assert distributed.shard_loader_arguments(list(range(10)), kwargs) is kwargs
    assert distributed.sum_over_processes(torch.tensor(3.0), 2) == (torch.tensor(3.0), 2)


def test_a_partial_torchrun_environment_is_a_usage_error_naming_what_is_missing():
    with pytest.raises(UsageError) as caught:
        distributed.World.from_environment({'WORLD_SIZE': '2', 'RANK': '1'})
    assert 'LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set' in caught.value.message
    assert 'torchrun --nproc_per_node=2 train.py SESSION' in caught.value.message
    with pytest.raises(UsageError, match='must be integers'):
        distributed.World.from_environment({'WORLD_SIZE': 'two'})
    world = distributed.World.from_environment({'WORLD_SIZE': '4', 'RANK': '3', 'LOCAL_RANK': '1',
                                                'MASTER_ADDR': 'localhost', 'MASTER_PORT': '29500'})
    assert (world.rank, world.size, world.local_rank, world.is_main) == (3, 4, 1, False)


@pytest.mark.parametrize('count', [0, 1, 7, 8, 9])
def test_shards_split_the_loaders_own_order(count):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(count)).tolist()
    shards = [distributed.ShardSampler(order, rank, 3) for rank in range(3)]
    exact = [list(s) for s in shards]
    assert [len(s) for s in shards] == [len(e) for e in exact]
    merged = [None] * count
    for rank, shard in enumerate(exact):
        merged[rank::3] = shard
    assert merged == order                                                 # each example once, in turn
    for s in shards:
        s.even = True
    even = [list(s) for s in shards]
    assert len({len(e) for e in even}) == 1 and all(len(e) == len(s) for e, s in zip(even, shards))
    assert set(i for e in even for i in e) == set(order)                   # padded with the order's start
    assert sum(map(len, even)) - count == ((-count) % 3 if count else 0)


def test_shards_of_a_shuffled_loader_interleave_to_the_one_process_order_and_skip_like_it():
    def loader(rank=None, size=2):
        generator = torch.Generator().manual_seed(7)      # as LearnedState.generator seeds every process alike
        base = torch.utils.data.RandomSampler(range(23), generator=generator)
        sampler = base if rank is None else distributed.ShardSampler(base, rank, size)
        return ResumableLoader(list(range(23)), batch_size=4, sampler=sampler, generator=generator)

    alone, shards = loader(), [loader(rank) for rank in range(2)]
    for epoch in range(2):                               # the generator moves on alike: no set_epoch
        order = [i for batch in alone for i in batch.tolist()]
        drawn = [[i for batch in shard for i in batch.tolist()] for shard in shards]
        assert drawn[0] == order[0::2] and drawn[1] == order[1::2]
    shards[1].skip_next(2)                               # a mid-epoch resume in one process
    order = [i for batch in alone for i in batch.tolist()]
    assert [i for batch in shards[1] for i in batch.tolist()] == order[1::2][8:]
    assert [i for batch in shards[0] for i in batch.tolist()] == order[0::2]


def test_positions_of_a_mid_epoch_checkpoint_convert_to_another_number_of_processes():
    resume = checkpoint.epoch_state({'epoch_state': {'positions': {'train': 6}, 'processes': 2, 'loaders': {},
                                                     'meters': {}, 'rng': {}}})
    assert resume.positions_for(2) == {'train': 6}
    assert resume.positions_for(4) == {'train': 3}
    assert resume.positions_for(1) == {'train': 12}
    alone = checkpoint.epoch_state({'epoch_state': {'positions': {'train': 6}, 'loaders': {}, 'meters': {},
                                                    'rng': {}}})     # saved before `processes` was recorded
    assert alone.positions_for(2) == {'train': 3}


# ---- two spawned processes: reductions and agreements --------------------------------------------

def _meters(function):
    """Meters of a pipeline with one loss and the metrics `function` (framework Accuracy, plain mean)."""
    uses = [Use('acc', Criterion('metric', 'accuracy', Accuracy(), ['p', 't'], None, ''), 'n'),
            Use('hits', Criterion('metric', 'hits', function, ['p', 't'], None, ''), 'n')]
    pipeline = SimpleNamespace(losses=[Use('loss', None, 'n')], metrics=uses, device='cpu', move_to=None)
    return Meters(pipeline)


def _hits(p, t):
    return (p == t).float().mean()


def _feed(meters, batches):
    for p, t, loss in batches:
        meters.losses[0].add(torch.tensor(loss), len(t))
        meters.update_metrics({'n': {'p': p, 't': t}})


def _batches(rank):
    """Rank 0 sees 3 examples, rank 1 sees 5 (uneven, as validation shards are)."""
    all_batches = [(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]), 0.5),
                   (torch.tensor([4, 4]), torch.tensor([4, 4]), 2.0),
                   (torch.tensor([0, 1, 2]), torch.tensor([9, 9, 2]), 1.25)]
    return all_batches[:1] if rank == 0 else all_batches[1:]


def _worker(rank, port):
    os.environ.update(RANK=str(rank), WORLD_SIZE='2', LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    world = distributed.World.from_environment()
    world.start(torch.device('cpu'))
    assert distributed.active() and world.backend == 'gloo'

    # count-weighted means and torchmetrics states, over processes; each process's own on request
    meters, alone, everything = _meters(_hits), _meters(_hits), _meters(_hits)
    _feed(meters, _batches(rank))
    _feed(alone, _batches(rank))
    _feed(everything, _batches(0) + _batches(1))
    with torch.no_grad():
        reference = {k: v for k, v in everything.values(local=True).items()}
    if rank == 0:
        assert meters.values(local=True) == pytest.approx(alone.values(local=True))   # no communication
    reduced = meters.values()
    assert reduced == pytest.approx(reference, abs=1e-9), (reduced, reference)
    assert reference['loss'] == pytest.approx((0.5 * 3 + 2.0 * 2 + 1.25 * 3) / 8)  # not the mean of the means
    assert reference['acc'] == pytest.approx(5 / 8)
    _feed(meters, _batches(rank))            # more batches after a compute: no stale cached value
    _feed(everything, _batches(0) + _batches(1))
    assert meters.values() == pytest.approx(everything.values(local=True), abs=1e-9)

    # a mid-epoch checkpoint holds the sums of all processes; one process loading them has it all
    state = meters.state_dict()
    restored = _meters(_hits)
    restored.load_state_dict(state)
    assert restored.values(local=True) == pytest.approx(everything.values(local=True), abs=1e-9)
    assert state['losses'][0]['count'] == 16

    # buffers: rank 0's everywhere
    norm = torch.nn.BatchNorm1d(3)
    norm.running_mean.fill_(rank + 1.0)
    world.sync_buffers([norm])
    assert norm.running_mean.tolist() == [1.0, 1.0, 1.0]

    # decisions: rank 0's stop answer; a signal caught by one process stops both at the same round
    assert distributed.RankZeroDecides(lambda epoch, history: rank == 1)(1, []) is False
    request = SimpleNamespace(signum=None)
    stop = distributed.AgreedStop(request)
    schedule = distributed.AgreedCheckpoints(SimpleNamespace(iterations=None, due=lambda rounds: False), stop,
                                             seconds=3600)
    assert [schedule.due(1), schedule.due(2)] == [False, False]      # agreed (timing the rounds): nothing
    request.signum = signal.SIGTERM if rank == 1 else None
    assert [schedule.due(r) for r in range(3, 10)] == [False] * 7     # not yet agreed: an hour away
    assert stop.signum is None
    assert schedule.due(1) is True and stop.signum == signal.SIGTERM  # a new epoch's first round agrees

    # a model whose loss leaves a parameter out gets a message saying what to do
    class Partial(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)

        def forward(self, x):
            return self.used(x)

    replica = world._wrap(Partial(), 'Partial')
    with pytest.raises(RuntimeError) as caught:
        for _ in range(2):
            replica(torch.ones(4, 2)).sum().backward()
    assert 'model "Partial"' in str(caught.value) and distributed.UNUSED_VARIABLE + '=1' in str(caught.value)


def test_a_restarted_group_agrees_on_a_fresh_name_whatever_an_earlier_group_left_in_torchruns_store():
    server = torch.distributed.TCPStore('127.0.0.1', 0, is_master=True, wait_for_workers=False)
    base = f'{distributed.STORE_PREFIX}/groups/2'
    for key, value in {'name': 'old', 'answer/1': 'stale old', 'members/old': 'stale'}.items():
        server.set(f'{base}/{key}', value)        # what the group before left: rank 0 of this one is not there yet

    def join(rank, found):
        client = torch.distributed.TCPStore('127.0.0.1', server.port, is_master=False)
        found[rank] = distributed._fresh_group(client, rank, 2, seconds=30)

    found = {}
    late = threading.Thread(target=join, args=(0, found))
    early = threading.Thread(target=join, args=(1, found))
    early.start()
    time.sleep(0.3)                  # rank 1 reads the old name first, and must not take it
    late.start()
    for thread in (early, late):
        thread.join(60)
    found[0].set('hello', 'from rank 0')
    assert found[1].get('hello') == b'from rank 0'
    assert not server.check([f'{distributed.STORE_PREFIX}/group/old/hello'])

    lonely = torch.distributed.TCPStore('127.0.0.1', server.port, is_master=False)
    with pytest.raises(TorchAssistantError) as caught:
        distributed._fresh_group(lonely, 1, 2, seconds=0.3)
    assert 'process 1 of 2 waited 0.3 seconds (TORCHASSISTANT_DISTRIBUTED_TIMEOUT) for rank 0 to start the group' \
        in caught.value.message


def test_a_restarted_groups_rank_0_takes_over_the_lock_its_torchrun_job_left_on_any_host(tmp_path):
    path = str(tmp_path / 'train.lock')
    with open(path, 'w') as f:
        json.dump({'pid': 1, 'host': 'elsewhere', 'since': '2024-01-02T03:04:05+00:00', 'job': 'J'}, f)
    with pytest.raises(UsageError, match='is locked by pid 1 on host "elsewhere"'):
        session_lock.acquire(path, 'train.py s', 's', job='another job')
    out = io.StringIO()
    mine = session_lock.acquire(path, 'train.py s', 's', out, job='J')
    assert json.loads(mine)['job'] == 'J' and json.load(open(path))['pid'] == os.getpid()
    assert out.getvalue() == (f'notice: taking over {path}: pid 1 (since 2024-01-02T03:04:05+00:00) on host '
                              f'"elsewhere" was an earlier group of this torchrun job, which torchrun stopped\n')
    session_lock.release(path, mine)
    assert not os.path.exists(path)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_reduce_metrics_by_count_and_agree_on_buffers_and_stops():
    torch.multiprocessing.spawn(_worker, args=(_free_port(),), nprocs=2, join=True)


def _non_finite_worker(rank, port, mode):
    """Two processes, rank 1's second batch holds a NaN: both skip that step (weights stay equal and
    finite) or both stop at the check that follows, each with a message saying why, and neither waits
    for the other."""
    os.environ.update(RANK=str(rank), WORLD_SIZE='2', LOCAL_RANK=str(rank), MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port))
    world = distributed.World.from_environment()
    world.start(torch.device('cpu'))
    _train_with_a_nan(rank, mode, world)
    torch.distributed.barrier()
    distributed._finish()
    # All checked. The interpreter's shutdown in a spawned process that ran DDP sometimes aborts
    # ("terminate called without an active exception", 1 run in 12 here, after the group is destroyed).
    sys.stderr.flush()
    os._exit(0)


def _train_with_a_nan(rank, mode, world):
    from torchassistant.run.graph import StepError
    from torchassistant.run.step import Precision, TrainStep
    torch.manual_seed(0)
    model = world._wrap(torch.nn.Linear(3, 1), 'net')
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pipeline = SimpleNamespace(name='fit', models=[model], optimizers=[optimizer], optimizer_names=['sgd'],
                               clippers=[], losses=[SimpleNamespace(display_name='mse')])
    step = TrainStep(Precision('32', torch.device('cpu')), non_finite=mode, across_processes=True)
    applied = []
    try:
        for batch in range(3):
            x = torch.full((4, 3), float(batch + rank))
            if rank == 1 and batch == 1:
                x[0, 0] = float('nan')
            loss = model(x).pow(2).mean()
            applied.append(step.update(pipeline, loss, [(loss, 4)]))
        step.flush([pipeline])          # "stop" reads the losses (and the weights) here: the end of an epoch
    except StepError as e:
        assert mode == 'stop' and len(applied) == 3
        said = str(e)
        assert 'the gradients' in said and 'a loss of this or another process was NaN or infinite' in said, said
        # rank 1's NaN came 2 batches before the check, rank 0's losses 1: a batch later, on NaN weights
        assert f'here loss "mse" was the first, its value nan {1 + rank} batch(es) before that one' in said, said
        return
    assert mode == 'skip' and step.skipped == 1
    assert applied == ([True, True, True] if rank == 0 else [True, False, True])    # what the meters get
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.isfinite(weights).all()
    gathered = [torch.zeros_like(weights) for _ in range(2)]
    torch.distributed.all_gather(gathered, weights)
    assert torch.equal(gathered[0], gathered[1])


@pytest.mark.parametrize('mode', ['skip', 'stop'])
def test_a_non_finite_loss_in_one_process_skips_or_stops_in_both(mode):
    torch.multiprocessing.spawn(_non_finite_worker, args=(_free_port(), mode), nprocs=2, join=True)


# ---- torchrun: train on two processes, kill one, resume, compare with a one-process evaluation ----

EPOCHS = 3


@pytest.fixture
def ddp_project(tmp_path, monkeypatch):
    """The tutorial project on 301 training and 97 test digits (odd counts: uneven shards)."""
    make_project(tmp_path, write_tiny_mnist(str(tmp_path / 'data'), train=301, test=97), epochs=EPOCHS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    commands.init('my_examples/mnist/training.json')
    return tmp_path


def torchrun(project, *args, launch=(), **environ):
    """train.py under torchrun, two processes (gloo), in its own session; output to a file. `launch`:
    more torchrun options; `environ`: more environment variables."""
    log = open(project / f'torchrun-{time.monotonic_ns()}.log', 'w+')
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
               *launch, os.path.join(REPO, 'train.py'), *args]
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    process = forked.Popen(command, cwd=project, env=dict(env, PYTHONPATH=REPO, **environ), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    process.log = log
    return process


def output(process):
    return open(process.log.name).read()


def workers(process):
    """{rank: pid} of the processes torchrun started (they run in sessions of their own)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/stat') as f:
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
            with open(f'/proc/{pid}/environ', 'rb') as f:
                environ = dict(item.split(b'=', 1) for item in f.read().split(b'\0') if b'=' in item)
        except (OSError, ValueError):
            continue
        if parent == process.pid and b'RANK' in environ:
            found[int(environ[b'RANK'])] = int(pid)
    return found


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_torchrun_trains_on_two_processes_survives_a_killed_one_and_resumes(ddp_project):
    session = ddp_project / 'pretrained'
    first = torchrun(ddp_project, 'pretrained')
    try:
        deadline = time.monotonic() + 240
        while not (session / 'checkpoints' / 'epoch_1.sha256').exists():
            assert first.poll() is None, output(first)
            assert time.monotonic() < deadline, output(first)
            time.sleep(0.01)
        ranks = workers(first)
        os.kill(ranks[1], signal.SIGKILL)       # one process dies: torchrun must end the other, not hang
        killed = time.monotonic()
        first.wait(timeout=120)
        print(f'\ntorchrun ended {time.monotonic() - killed:.1f} s after rank 1 was killed')
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode != 0 and not alive(ranks[0]), output(first)
    assert not (session / 'checkpoints' / f'epoch_{EPOCHS}.sha256').exists(), 'finished before the kill'

    second = torchrun(ddp_project, 'pretrained')
    second.wait(timeout=300)
    log = output(second)
    assert second.returncode == 0, log
    assert 'Training on cpu x 2 processes (gloo), precision 32' in log
    assert 'Resuming "pretrained" after epoch ' in log
    assert log.count('Training finished') == 1, log          # rank 0 prints, the other does not
    assert not (session / 'train.lock').exists()

    _, state = SessionStore.open(session).latest_checkpoint()
    assert state['progress']['epoch'] == EPOCHS
    keys = list(state['models']['LeNet5'])
    assert keys and not any(k.startswith('module.') for k in keys)

    row = commands.evaluate('my_examples/mnist/evaluation.json')      # one process, this one
    recorded = state['progress']['history'][0][-1]
    assert set(row) == {'acc', 'loss', 'val acc', 'val loss'} == set(recorded)
    assert row == pytest.approx(recorded, abs=1e-6), (row, recorded)
    with open(session / 'metrics' / '0.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['epoch'] for r in rows] == [str(e) for e in range(1, EPOCHS + 1)]
    assert {k: float(v) for k, v in rows[-1].items() if k != 'epoch'} == pytest.approx(row, rel=1e-5)


@pytest.mark.slow
def test_a_stop_mid_epoch_resumes_bit_identically_on_two_processes_and_continues_on_one(ddp_project):
    shutil.copytree(ddp_project / 'pretrained', ddp_project / 'uninterrupted')
    whole = torchrun(ddp_project, 'uninterrupted')
    assert whole.wait(timeout=300) == 0, output(whole)

    session = ddp_project / 'pretrained'
    first = torchrun(ddp_project, 'pretrained')
    try:
        deadline = time.monotonic() + 240
        while not (session / 'checkpoints' / 'epoch_1.sha256').exists():
            assert first.poll() is None and time.monotonic() < deadline, output(first)
            time.sleep(0.01)
        first.send_signal(signal.SIGTERM)       # torchrun passes it on; the processes agree where to stop
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    log = output(first)
    assert log.count('a checkpoint was saved there') == 2, log            # both stopped after the same round
    mid_epoch = [i for i in SessionStore.open(session).checkpoint_ids() if i.batch]
    assert mid_epoch and mid_epoch[-1].epoch < EPOCHS, log
    shutil.copytree(session, ddp_project / 'single')

    second = torchrun(ddp_project, 'pretrained')
    assert second.wait(timeout=300) == 0, output(second)
    assert 'batches of the next' in output(second)
    resumed = SessionStore.open(session).latest_checkpoint()[1]
    expected = SessionStore.open(ddp_project / 'uninterrupted').latest_checkpoint()[1]
    assert resumed['progress']['history'] == expected['progress']['history']
    for name, tensor in expected['models']['LeNet5'].items():
        assert torch.equal(resumed['models']['LeNet5'][name], tensor), name

    progress = commands.train('single', options=commands.RunOptions(quiet=True))     # one process, this one
    assert progress.epoch == EPOCHS and not torch.distributed.is_initialized()


@pytest.mark.slow
def test_torchrun_restarts_a_group_that_lost_a_process_twice_and_the_run_ends_bit_identical(ddp_project):
    """Under --max-restarts, torchrun restarts the group each time one of its processes is killed: rank 1
    mid-epoch, then rank 0 (the lock's holder) at an epoch's end; each kill waits for a checkpoint file,
    not for a time. Every new group connects at once (torch's own setup would read the addresses the
    group before left in torchrun's store: "Connection refused", then a hang), takes over the lock and
    resumes from the latest checkpoint; the final weights are an uninterrupted run's."""
    spec = json.load(open('my_examples/mnist/training.json'))
    spec['session_dir'], spec['train']['checkpoint_every'] = 'restarted', {'iterations': 2}
    write_json('my_examples/mnist/restarted.json', spec)
    commands.init('my_examples/mnist/restarted.json')
    shutil.copytree('restarted', 'uninterrupted')
    whole = torchrun(ddp_project, 'uninterrupted')
    assert whole.wait(timeout=180) == 0, output(whole)

    started = time.monotonic()
    run = torchrun(ddp_project, 'restarted', launch=('--max-restarts=5',), TORCHASSISTANT_DISTRIBUTED_TIMEOUT='60')
    checkpoints, killed = ddp_project / 'restarted' / 'checkpoints', []
    try:
        for trigger, rank in (('epoch_1_batch_2.sha256', 1), ('epoch_2.sha256', 0)):
            deadline = time.monotonic() + 180
            while not (checkpoints / trigger).exists():
                assert run.poll() is None and time.monotonic() < deadline, output(run)
                time.sleep(0.005)
            group = workers(run)
            assert set(group.values()).isdisjoint(killed), output(run)       # a new group each time
            os.kill(group[rank], signal.SIGKILL)
            killed += group.values()
        run.wait(timeout=180)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    log = output(run)
    print(f'\nkilled twice and restarted, in {time.monotonic() - started:.1f} s')
    assert run.returncode == 0, log
    assert 'Resuming "restarted" after epoch 1 and 2 batches of the next' in log, log
    assert log.count('Resuming "restarted" after epoch') == 2, log           # each restart connected at once
    assert log.count('was an earlier group of this torchrun job, which torchrun stopped') == 1, log
    assert 'Connection refused' not in log and not (ddp_project / 'restarted' / 'train.lock').exists()

    resumed = SessionStore.open('restarted').latest_checkpoint()[1]
    expected = SessionStore.open('uninterrupted').latest_checkpoint()[1]
    assert resumed['progress']['epoch'] == EPOCHS
    assert resumed['progress']['history'] == expected['progress']['history']
    for name, tensor in expected['models']['LeNet5'].items():
        assert torch.equal(resumed['models']['LeNet5'][name], tensor), name
    with open('restarted/metrics/0.csv') as f:
        assert [row['epoch'] for row in csv.DictReader(f)] == [str(e) for e in range(1, EPOCHS + 1)]
