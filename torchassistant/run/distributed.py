"""Training on several processes: `torchrun --nproc_per_node=N train.py SESSION` (add torchrun's
--nnodes/--node_rank/--master_addr for several machines; they must share the session folder).

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `World.from_environment`
reads them. One process (no torchrun, or WORLD_SIZE 1) is the plain run: no process group, nothing
wrapped, every function here a no-op. With several:

process group  NCCL when the device is CUDA (process LOCAL_RANK on cuda:LOCAL_RANK), else gloo on the
               CPU. Every wait for another process (connecting, collectives, barriers) ends after
               TORCHASSISTANT_DISTRIBUTED_TIMEOUT seconds (default 300, less than torchrun's rendezvous
               timeouts) with an error naming what it waited for, so no process waits forever; under
               torchrun a process that fails makes torchrun stop the others at once anyway.
restarts       torchrun --max-restarts=N restarts a group that lost a process; the store its agent serves
               outlives the groups and still holds the keys of the groups before it, which torch's own
               setup would read (gloo: "Connection refused", or a hang). So each group first agrees on a
               fresh name (`_fresh_group`) and sets itself up under it. The new group resumes from the
               latest checkpoint as any run does; its rank 0 takes over train.lock from the job's earlier
               group (`World.job`, recorded in the lock), on whichever machine that one ran.
models         each model that a training pipeline's graph node trains (the node has an optimizer)
               runs through one DistributedDataParallel wrapper, in the graphs only: `entities.models`
               keeps the raw modules, so checkpoints hold plain state dicts (no "module." prefix) that
               load in any number of processes. find_unused_parameters is off (a hand-written DDP loop's
               speed); a model whose graph leaves some of its parameters out of the loss gets an error
               that says to set TORCHASSISTANT_FIND_UNUSED_PARAMETERS=1. Buffers (BatchNorm statistics)
               are not broadcast at every forward; each process updates its own while training and all
               take rank 0's before validation and at every checkpoint, so validation and checkpoints
               use the same weights and buffers in every process.
data           a loader draws its order as one process does (shuffled or not, from its generator: seeded
               from the session seed, saved in checkpoints, and the same in every process) and each
               process takes every N-th example of it (ShardSampler). Training pads the order with its
               own beginning so every process runs the same number of batches (as DistributedSampler
               does); validation and evaluation see each example exactly once. The order depends on no
               epoch number, so there is no set_epoch: the generator moves on as in a one-process run.
metrics        rows are reduced over processes: a mean's total and count are summed, torchmetrics
               metrics sync their states (dist_reduce_fx). Every process records the same row, and
               rank 0's stop decision is broadcast, so all processes stop together. Progress lines
               show rank 0's running values.
session        only rank 0 prints and writes (train.lock, checkpoints, CSV, TensorBoard); the others
               wait at a barrier until each checkpoint is on disk. Mid-epoch checkpoints and signals
               are agreed about once a second of training (one small all-reduce), so every process
               saves and stops after the same round.
"""
import atexit
import contextlib
import datetime
import inspect
import math
import os
import time
import uuid

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import IterableDataset, RandomSampler, Sampler, SequentialSampler

from torchassistant.core.errors import TorchAssistantError, UsageError

LAUNCH_VARIABLES = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
TIMEOUT_VARIABLE = 'TORCHASSISTANT_DISTRIBUTED_TIMEOUT'
DEFAULT_TIMEOUT = 300     # seconds; torchrun's c10d rendezvous gives up joining after 600
AGENT_STORE_VARIABLE = 'TORCHELASTIC_USE_AGENT_STORE'     # torchrun: its agent serves MASTER_ADDR:MASTER_PORT
STORE_PREFIX = 'torchassistant'
UNUSED_VARIABLE = 'TORCHASSISTANT_FIND_UNUSED_PARAMETERS'
AGREE_SECONDS = 1.0       # training time between agreements on mid-epoch checkpoints and signals


def active():
    """Whether this process is one of several in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class World:
    """This process's place among the processes torchrun started: rank, size, local rank (its GPU)."""

    def __init__(self, rank=0, size=1, local_rank=0):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.backend = None
        self.waiting_for = 'the other processes'      # what a timeout or a lost process is reported as
        self._store = None

    @classmethod
    def from_environment(cls, environ=None):
        environ = os.environ if environ is None else environ
        try:
            size = int(environ.get('WORLD_SIZE', 1))
            if size <= 1:
                return cls()
            missing = [name for name in LAUNCH_VARIABLES if not environ.get(name)]
            if missing:
                verb = 'is' if len(missing) == 1 else 'are'
                raise UsageError(f'WORLD_SIZE is {size}, but {", ".join(missing)} {verb} not set; start several '
                                 f'processes with torchrun, e.g. torchrun --nproc_per_node={size} train.py SESSION')
            return cls(int(environ['RANK']), size, int(environ['LOCAL_RANK']))
        except ValueError:
            shown = ', '.join(f'{name}={environ.get(name)!r}' for name in LAUNCH_VARIABLES[:3])
            raise UsageError(f'the torchrun environment variables must be integers: {shown}') from None

    @property
    def is_main(self):
        return self.rank == 0

    def describe(self):
        return '' if self.size == 1 else f' x {self.size} processes ({self.backend})'

    # ---- setting up --------------------------------------------------------------------------------
    def start(self, device):
        """The device this process computes on; with several processes the process group is made:
        NCCL and cuda:LOCAL_RANK when `device` is CUDA, gloo when it is the CPU."""
        if self.size == 1:
            return device
        if not dist.is_available():
            raise UsageError(f'this torch ({torch.__version__}) has no torch.distributed; train in one process')
        if device.type == 'cuda':
            if self.local_rank >= torch.cuda.device_count():
                raise UsageError(f'process LOCAL_RANK={self.local_rank} needs cuda:{self.local_rank}, but this machine '
                                 f'has {torch.cuda.device_count()} CUDA device(s); start at most that many processes '
                                 f'per machine (torchrun --nproc_per_node)')
            device = torch.device('cuda', self.local_rank)
            torch.cuda.set_device(device)
            self.backend = 'nccl'
        elif device.type == 'cpu':
            self.backend = 'gloo'
        else:
            raise UsageError(f'training on several processes runs on CUDA (NCCL) or the CPU (gloo), not on '
                             f'"{device.type}"; choose --device cpu or cuda')
        if not dist.is_initialized():
            seconds = _timeout_seconds()
            self.waiting_for = 'the other processes to join the process group'
            store = self._agent_store()
            if store is not None:      # torchrun's store: the keys of earlier groups are still there
                store = _fresh_group(store, self.rank, self.size, seconds)
            dist.init_process_group(self.backend, rank=self.rank, world_size=self.size, store=store,
                                    timeout=datetime.timedelta(seconds=seconds))
            atexit.register(_finish)
        return device

    def job(self):
        """Under torchrun: a name of this torchrun job, the same in every group it (re)starts, kept in the
        store its agent serves; None otherwise. train.lock records it: a lock naming this job was left by
        an earlier group, whose processes torchrun stopped before starting this one."""
        store = self._agent_store()
        if store is None:
            return None
        return store.compare_set(f'{STORE_PREFIX}/job', '', uuid.uuid4().hex).decode()

    def _agent_store(self):
        """A client of the store torchrun's agent serves at MASTER_ADDR:MASTER_PORT, or None (no torchrun
        agent, or one process)."""
        if self.size == 1 or os.environ.get(AGENT_STORE_VARIABLE) != 'True':
            return None
        if self._store is None:
            self._store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']),
                                        is_master=False, timeout=datetime.timedelta(seconds=_timeout_seconds()))
        return self._store

    def replicate(self, stages, entities):
        """Each model a training pipeline's graph node trains runs through one DistributedDataParallel
        wrapper in the graphs (entities.models keeps the raw modules); every pipeline's `models` then
        lists what its graph calls, so the step's no_sync and clipping see the wrappers. Stop
        conditions give rank 0's answer."""
        if self.size == 1:
            return
        wrappers = {}
        for pipeline in {id(p): p for stage in stages for p in stage.training}.values():
            for processor in pipeline.graph.processors():
                for node in processor.nodes:
                    if node.optimizer is not None and not isinstance(node.model, DistributedDataParallel):
                        if id(node.model) not in wrappers:
                            wrappers[id(node.model)] = self._wrap(node.model, node.model_name)
                        node.model = wrappers[id(node.model)]
        for pipeline in entities.pipelines.values():     # as Pipeline.__init__ collects them
            pipeline.models = list({id(m): m for p in pipeline.graph.processors() for m in p.models()}.values())
        for stage in stages:
            stage.stop_condition = RankZeroDecides(stage.stop_condition)

    def check_same_checkpoint(self, progress, session):
        """Every process must start from the checkpoint rank 0 loaded: on several machines the session
        folder has to be one shared folder, since only rank 0 writes it."""
        if self.size == 1:
            return
        found = [None] * self.size
        self.waiting_for = 'the other processes to load the latest checkpoint'
        dist.all_gather_object(found, (progress.epoch, progress.batch))
        if any(other != found[0] for other in found):
            ranks = ', '.join(f'rank {rank}: epoch {epoch} + {batch} batches'
                              for rank, (epoch, batch) in enumerate(found))
            raise UsageError(f'the training processes found different latest checkpoints in "{session}" ({ranks}). '
                             f'Only rank 0 writes the session, so on several machines it must be one folder that '
                             f'all of them share (e.g. on NFS), not a copy on each')

    def _wrap(self, model, name):
        find_unused = os.environ.get(UNUSED_VARIABLE, '') not in ('', '0')
        buffers = 'forward_sync_buffers' if 'forward_sync_buffers' in _ddp_parameters() else 'broadcast_buffers'
        return Replica(name, model, device_ids=[self.local_rank] if self.backend == 'nccl' else None,
                       find_unused_parameters=find_unused, **{buffers: False})

    def agreed(self, schedule, stop):
        """The trainer's mid-epoch checkpoint schedule and stop request, decided together by all
        processes (unchanged in one process)."""
        if self.size == 1:
            return schedule, stop
        stop = AgreedStop(stop)
        return AgreedCheckpoints(schedule, stop), stop

    @contextlib.contextmanager
    def failures(self):
        """A block in which losing contact with the other processes (one died, or is stuck past the
        timeout) is one clear error rather than a traceback from deep inside a collective."""
        try:
            yield
        except Exception as e:
            if self.size == 1 or not _communication_failed(e):
                raise
            cause = getattr(e, 'original', e)
            raise TorchAssistantError(
                f'process {self.rank} of {self.size} lost contact with the other training processes while waiting '
                f'for {self.waiting_for} ({type(cause).__name__}: {str(cause).splitlines()[0][:300]}): one of them '
                f'stopped (its own output says why) or did not answer within {TIMEOUT_VARIABLE}='
                f'{_timeout_seconds():g} seconds. What was saved stays saved; resume with torchrun as before '
                f'(with --max-restarts, torchrun does so itself)') from e

    # ---- during training ---------------------------------------------------------------------------
    def begin_training(self, entities):
        """An epoch's training: every process draws as many batches (padded shards)."""
        self.waiting_for = 'the other processes in training (gradients, agreeing on checkpoints and signals)'
        self._shards(entities, even=True)

    def end_training(self, entities):
        """The epoch's training is done: buffers agree (rank 0's) and loaders shard exactly, each
        example once, for validation."""
        self.waiting_for = 'the other processes to finish the epoch (training, validation, its metrics)'
        self.sync_buffers(entities.models.values())
        self._shards(entities, even=False)

    def sync_buffers(self, models):
        """Every process takes rank 0's buffers (BatchNorm statistics, ...)."""
        if self.size == 1:
            return
        for model in models:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def barrier(self, waiting_for='rank 0 to save a checkpoint'):
        """Wait until every process is here (rank 0 has written what the others wait for)."""
        if self.size == 1:
            return
        before, self.waiting_for = self.waiting_for, waiting_for
        if self.backend == 'nccl':
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()
        self.waiting_for = before

    def _shards(self, entities, even):
        for loader in entities.data_loaders.values():
            if isinstance(loader.sampler, ShardSampler):
                loader.sampler.even = even


def _timeout_seconds():
    text = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT))
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1
    if not seconds > 0:
        raise UsageError(f'{TIMEOUT_VARIABLE} must be a number of seconds > 0, not {text!r}')
    return seconds


def _fresh_group(store, rank, size, seconds):
    """`store` (torchrun's, shared by every group it starts) under a name this group's processes agree on
    and no earlier group used. Rank 0 draws the name and publishes it; each other process answers with
    a token of its own and the name it read; rank 0 waits for every answer naming its name, then lists
    the tokens under it. A process takes a name only from a list holding its own token, so nothing left
    by an earlier group (a name, answers, a list) is taken for this one's. Waits at most `seconds`."""
    deadline = time.monotonic() + seconds
    base = f'{STORE_PREFIX}/groups/{size}'
    if rank == 0:
        name, answers = uuid.uuid4().hex, {}
        store.set(f'{base}/name', name)
        while len(answers) < size - 1:
            for other in range(1, size):
                key = f'{base}/answer/{other}'
                if other not in answers and store.check([key]):
                    token, read = store.get(key).decode().split()
                    if read == name:
                        answers[other] = token
            if len(answers) < size - 1:
                _wait(deadline, seconds, rank, size, f'{size - 1 - len(answers)} other process(es) to join')
        store.set(f'{base}/members/{name}', ' '.join(answers.values()))
    else:
        token, answered = uuid.uuid4().hex, None
        while True:
            name = store.get(f'{base}/name').decode() if store.check([f'{base}/name']) else None
            if name is not None and name != answered:
                store.set(f'{base}/answer/{rank}', f'{token} {name}')
                answered = name
            members = f'{base}/members/{name}'
            if name is not None and store.check([members]) and token in store.get(members).decode().split():
                break
            _wait(deadline, seconds, rank, size, 'rank 0 to start the group')
    return dist.PrefixStore(f'{STORE_PREFIX}/group/{name}', store)


def _wait(deadline, seconds, rank, size, what):
    if time.monotonic() > deadline:
        raise TorchAssistantError(f'process {rank} of {size} waited {seconds:g} seconds ({TIMEOUT_VARIABLE}) for '
                                  f'{what} and stops; the others\' output says why they did not come. torchrun '
                                  f'--max-restarts restarts the group')
    time.sleep(0.02)


def _communication_failed(error):
    """Whether `error` (or the user-code error wrapping it) is a failed collective."""
    error = getattr(error, 'original', error)
    return isinstance(error, getattr(dist, 'DistError', ())) or isinstance(error, RuntimeError) and any(
        word in str(error) for word in ('gloo', 'NCCL', 'Connection reset by peer', 'Connection closed by peer'))


def _finish():
    if dist.is_initialized():
        dist.destroy_process_group()


def _ddp_parameters():
    return inspect.signature(DistributedDataParallel.__init__).parameters


class Replica(DistributedDataParallel):
    """DistributedDataParallel that names its model when DDP finds parameters left out of the loss."""

    def __init__(self, name, module, **kwargs):
        super().__init__(module, **kwargs)
        self.model_name = name

    def forward(self, *args, **kwargs):
        try:
            return super().forward(*args, **kwargs)
        except RuntimeError as e:
            if 'find_unused_parameters' not in str(e):
                raise
            raise RuntimeError(
                f'model "{self.model_name}" has parameters that took no part in the previous training '
                f'iteration\'s loss, which DistributedDataParallel cannot synchronise by default; run with '
                f'{UNUSED_VARIABLE}=1 (slower: DDP then searches the autograd graph every iteration), or '
                f'leave those parameters out of the model (or set requires_grad=False on them)') from e


# ---- data ----------------------------------------------------------------------------------------

class ShardSampler(Sampler):
    """Every `size`-th index of `base`'s order, from the `rank`-th. With `even` (training) the order is
    first padded with its own beginning to a multiple of `size`, so every process gets as many examples;
    without (validation, evaluation) each example goes to exactly one process."""

    def __init__(self, base, rank, size):
        self.base, self.rank, self.size = base, rank, size
        self.even = False

    def __iter__(self):
        order = list(self.base)
        if self.even and order and len(order) % self.size:
            padding = self.size - len(order) % self.size
            order += (order * math.ceil(padding / len(order)))[:padding]
        return iter(order[self.rank::self.size])

    def __len__(self):
        count = len(self.base)
        return math.ceil(count / self.size) if self.even else len(range(self.rank, count, self.size))


def shard_loader_arguments(dataset, kwargs):
    """DataLoader keyword arguments whose sampler gives this process its share of the order the loader
    would draw alone ("shuffle" from its generator, or its "sampler"). Unchanged in one process, with a
    batch_sampler, or for an IterableDataset (which has no sampler: every process reads all of it)."""
    if not active() or isinstance(dataset, IterableDataset) or 'batch_sampler' in kwargs:
        return kwargs
    kwargs = dict(kwargs)
    base = kwargs.get('sampler')
    if base is None:
        base = RandomSampler(dataset, generator=kwargs.get('generator')) if kwargs.pop('shuffle', False) \
            else SequentialSampler(dataset)
    kwargs['sampler'] = ShardSampler(base, dist.get_rank(), dist.get_world_size())
    return kwargs


# ---- metrics -------------------------------------------------------------------------------------

def sum_over_processes(*values):
    """`values` (numbers or one-element tensors) each summed over the processes, as floats; returned
    unchanged in one process. Every process must call it."""
    if not active():
        return values
    device = _communication_device()
    summed = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).detach().reshape(())
                          for v in values])
    dist.all_reduce(summed)
    return tuple(summed.tolist())


def _reduce_max(*values):
    flags = torch.tensor(values, dtype=torch.float64, device=_communication_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags.tolist()


def _rank_zero(value):
    flag = torch.tensor([float(value)], dtype=torch.float64, device=_communication_device())
    dist.broadcast(flag, 0)
    return flag.item()


def _communication_device():
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


# ---- deciding together ---------------------------------------------------------------------------

class RankZeroDecides:
    """A stop condition asked in every process (the rows agree, so it raises or not everywhere alike),
    answered as rank 0 answers, so that no process trains an epoch the others do not."""

    def __init__(self, condition):
        self.condition = condition

    def __call__(self, epoch, history):
        return bool(_rank_zero(bool(self.condition(epoch, history))))


class AgreedStop:
    """The trainer's StopRequest for several processes: a signal caught by any process is only seen
    by the trainer (`signum`) once every process knows of it (AgreedCheckpoints), so all stop after the
    same round. A second signal still stops its process at once."""

    def __init__(self, request):
        self.request = request       # the StopRequest the signal handlers set
        self.signum = None

    def __enter__(self):
        self.request.__enter__()
        return self

    def __exit__(self, *exc):
        return self.request.__exit__(*exc)

    def immediate(self):
        return self.request.immediate()


class AgreedCheckpoints:
    """When a mid-epoch checkpoint is due, decided by all processes together with one all-reduce of
    "due here", "a signal here" and rank 0's choice of the next round to agree at (about AGREE_SECONDS
    of training later, by its timing); also at each epoch's first rounds and at an iteration-based
    schedule's rounds (the same everywhere). Any process's yes is everyone's."""

    def __init__(self, schedule, stop, seconds=AGREE_SECONDS):
        self.schedule, self.stop, self.seconds = schedule, stop, seconds
        self.fixed = schedule.iterations is not None
        self.next = 0              # the round of the next agreement (the same in every process)
        self.last = None           # the round of the previous call
        self.agreed = None         # (round, time) of the previous agreement, in this epoch

    def due(self, rounds):
        due = self.schedule.due(rounds)
        if self.last is not None and rounds <= self.last:     # a new epoch
            self.next, self.agreed = 0, None
        self.last = rounds
        if rounds < self.next and not (self.fixed and due):
            return False
        now = time.monotonic()
        proposal = self._next_round(rounds, now) if dist.get_rank() == 0 else 0
        wanted, signum, self.next = _reduce_max(float(due), float(self.stop.request.signum or 0), float(proposal))
        self.agreed = (rounds, now)
        if signum:
            self.stop.signum = int(signum)
        return bool(wanted or signum)

    def _next_round(self, rounds, now):
        if self.agreed is None or now <= self.agreed[1]:
            return rounds + 1        # time one round first
        per_second = (rounds - self.agreed[0]) / (now - self.agreed[1])
        return rounds + max(1, int(per_second * self.seconds))

    def reset(self):
        self.schedule.reset()
