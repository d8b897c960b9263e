"""What a checkpoint holds, and putting it back: weights, optimizer and scheduler state, training
progress, metric history and every random number generator that decides what happens next.

    {"progress":    Progress as a dict: epoch, stage, stage_epoch, history {stage: [rows]}, batch,
     "models":      {model name: state_dict},
     "optimizers":  {optimizer name: state_dict},
     "schedulers":  {optimizer name: its LR scheduler's state_dict} (those that have one),
     "loaders":     {data loader name: its generator's state} (what decides its next order),
     "rng":         Python, torch, CUDA and NumPy generator states,
     "step":        the TrainStep's state (its GradScaler),
     "epoch_state": a mid-epoch checkpoint only (`batch` > 0): EpochState as a dict}

This module is the only one that writes or reads that layout: `capture` and `restore` (and
`restore_weights` for evaluation and inference) for the whole, `EpochState` and `epoch_state` for the
epoch in progress. Everything is kept as plain data (tensors, numbers, strings, lists, tuples, dicts),
which is what session files may hold: they are loaded with torch.load(weights_only=True), which runs
no code.
"""
import io
import json
import random
from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass
class Progress:
    """Where training stands: `stage` to run next (len(stages) when done), epochs done in it."""
    epoch: int = 0               # epochs finished over all stages
    stage: int = 0
    stage_epoch: int = 0
    history: dict = field(default_factory=dict)   # stage index -> list of {display name: value}
    batch: int = 0               # rounds done in the epoch in progress (a mid-epoch checkpoint), else 0


@dataclass
class EpochState:
    """A mid-epoch checkpoint's own part: where the epoch in progress stands."""
    positions: dict              # training pipeline name -> batches it has done, in each process
    processes: int               # how many processes trained it (torchrun), each `positions` batches
    loaders: dict                # each data loader's generator state at the epoch's start
    meters: dict                 # training pipeline name -> its Meters' state_dict (sums over processes)
    rng: dict                    # the RNG states at the checkpoint (rng_state())

    def positions_for(self, processes):
        """Each pipeline's batches done, counted in batches of a run on `processes` processes: a
        checkpoint of P processes, R batches each, has consumed the first R * P batches of the shared
        order."""
        if processes == self.processes:
            return dict(self.positions)
        return {name: done * self.processes // processes for name, done in self.positions.items()}


def epoch_state(state):
    """The EpochState of a loaded checkpoint `state`, or None for an epoch-end one."""
    saved = state.get('epoch_state')
    if not saved:
        return None
    return EpochState(saved['positions'], saved.get('processes', 1), saved['loaders'], saved['meters'], saved['rng'])


def capture(entities, progress, step=None, epoch_state=None):
    """Everything that decides what happens next. `step`: the TrainStep (its GradScaler); `epoch_state`
    (mid-epoch checkpoints only): the EpochState of the epoch in progress."""
    state = {
        'progress': vars(progress).copy(),
        'models': {name: model.state_dict() for name, model in entities.models.items()},
        'optimizers': {name: record.optimizer.state_dict() for name, record in entities.optimizers.items()},
        'schedulers': {name: record.scheduler.state_dict() for name, record in entities.optimizers.items()
                       if record.scheduler is not None},
        'loaders': loader_states(entities),
        'rng': rng_state(),
        'step': step.state_dict() if step is not None else {},
    }
    if epoch_state is not None:
        state['epoch_state'] = vars(epoch_state).copy()
    return state


def loader_states(entities):
    """Each data loader's generator state: what decides its next order (and worker seeds)."""
    return {name: loader.generator.get_state() for name, loader in entities.data_loaders.items()
            if loader.generator is not None}


def rng_state():
    state = {'python': random.getstate(), 'torch': torch.get_rng_state(),
             'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    try:
        import numpy
    except ImportError:
        return state
    kind, keys, position, has_gauss, cached = numpy.random.get_state()     # keys: an ndarray, not plain data
    state['numpy'] = (kind, keys.tolist(), int(position), int(has_gauss), float(cached))
    return state


def restore_rng(rng):
    random.setstate(rng['python'])
    torch.set_rng_state(rng['torch'])
    if rng.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng['cuda'])
    if 'numpy' in rng:
        import numpy
        kind, keys, position, has_gauss, cached = rng['numpy']
        numpy.random.set_state((kind, numpy.array(keys, dtype=numpy.uint32), position, has_gauss, cached))


def restore_weights(entities, state):
    """Load models, optimizers and schedulers, as evaluation and inference need."""
    for name, model in entities.models.items():
        if name in state['models']:
            _load(entities, ('models', name), model, state['models'][name])
    for name, record in entities.optimizers.items():
        if name in state['optimizers']:
            _load(entities, ('optimizers', name), record.optimizer, state['optimizers'][name])
        if record.scheduler is not None and name in state['schedulers']:
            record.scheduler.load_state_dict(state['schedulers'][name])


def _load(entities, key, target, saved):
    """target.load_state_dict(saved); a mismatch (an override or an edited spec that changed a size)
    is a UsageError naming the definition."""
    try:
        target.load_state_dict(saved)
    except (RuntimeError, ValueError, KeyError) as e:
        from torchassistant.core.errors import UsageError
        said = str(e).strip().splitlines()
        detail = '; '.join(line.strip() for line in said[:4]) + (' [...]' if len(said) > 4 else '')
        raise UsageError(f'{entities.where.get(key, key[1])}: the checkpoint\'s {key[0][:-1]} "{key[1]}" does not fit '
                         f'the one this spec builds (was a size changed, here or in an override?): {detail}') from e


def restore(entities, state, step=None):
    """Load everything training needs to continue exactly where the checkpoint was taken. For a
    mid-epoch checkpoint the loaders go back to the epoch's start (the trainer then skips the
    batches done; `epoch_state(state)` is for the trainer)."""
    restore_weights(entities, state)
    resume = epoch_state(state)
    loaders = resume.loaders if resume else state['loaders']
    for name, loader in entities.data_loaders.items():
        if name in loaders and loader.generator is not None:
            loader.generator.set_state(loaders[name])
    restore_rng(state['rng'])
    if step is not None:
        step.load_state_dict(state.get('step', {}))
    return Progress(**state['progress'])


# ---- checking a loaded checkpoint ----------------------------------------------------------------

_PARTS = ('progress', 'models', 'optimizers', 'schedulers', 'loaders', 'rng')     # and "step" (newer ones)


def problem(state):
    """What makes `state` (a checkpoint loaded from a session file) other than what `capture` writes,
    in words, or None: checked before anything reads it, so a malformed file is named, not a KeyError."""
    if not isinstance(state, dict):
        return f'it holds {_kind(state)}, not a dict'
    for part in _PARTS:
        if part not in state:
            return f'"{part}" is missing'
        if not isinstance(state[part], dict):
            return f'"{part}" is {_kind(state[part])}, not a dict'
    if not isinstance(state.get('step', {}), dict):
        return f'"step" is {_kind(state["step"])}, not a dict'
    for part in ('models', 'optimizers', 'schedulers'):
        bad = next((name for name, value in state[part].items() if not isinstance(value, dict)), None)
        if bad is not None:
            return f'"{part}"["{bad}"] is {_kind(state[part][bad])}, not a state dict'
    progress = state['progress']
    for key in ('epoch', 'stage', 'stage_epoch', 'batch'):
        if type(progress.get(key)) is not int or progress[key] < 0:
            return f'"progress"."{key}" is {_kind(progress.get(key))}, not a count'
    if rows(state) is None:
        return '"progress"."history" is not {stage: [{metric: number}, ...]}'
    if not {'python', 'torch'} <= set(state['rng']):
        return '"rng" lacks the Python or torch generator state'
    resume = state.get('epoch_state')
    if resume is not None:
        if not isinstance(resume, dict) or not {'positions', 'loaders', 'meters', 'rng'} <= set(resume):
            return '"epoch_state" lacks positions, loaders, meters or rng'
        if not isinstance(resume['positions'], dict) or not all(type(v) is int and v >= 0
                                                                 for v in resume['positions'].values()):
            return '"epoch_state"."positions" is not {pipeline: batches done}'
        if not isinstance(resume['meters'], dict) or not isinstance(resume['loaders'], dict):
            return '"epoch_state"."meters" or "loaders" is not a dict'
    return None


def rows(state):
    """Every epoch's row so far, oldest first, from a checkpoint's progress ({stage index: [rows]}, the
    stages run in order); None when its history is not that."""
    progress = state.get('progress') if isinstance(state, dict) else None
    history = progress.get('history') if isinstance(progress, dict) else None
    if not isinstance(history, dict) or not all(isinstance(k, int) or isinstance(k, str) and k.isdigit()
                                                 for k in history):
        return None
    found = [row for stage in sorted(history, key=int) for row in
             (history[stage] if isinstance(history[stage], list) else [None])]
    ok = all(isinstance(row, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in row.items())
             for row in found)
    return found if ok else None


def _kind(value):
    return 'nothing' if value is None else f'a {type(value).__name__} ({value!r})' if isinstance(
        value, (int, float, str, bool)) else f'a {type(value).__name__}'


# ---- plain data ----------------------------------------------------------------------------------

_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.Size, torch.dtype, torch.device,
           torch.Tensor, torch.nn.Parameter)


def plain_data_problem(value, at=''):
    """None when `value` is plain data that torch.load(weights_only=True) reads back, else what
    and where the first other object is, e.g. 'a numpy.ndarray at ["mean"]'."""
    kind = type(value)
    if kind in (dict, OrderedDict):
        for key, item in value.items():
            where = f'{at}[{json.dumps(key) if isinstance(key, str) else repr(key)}]'
            problem = plain_data_problem(key, where + ' (a key)') or plain_data_problem(item, where)
            if problem:
                return problem
        return None
    if kind in (list, tuple, set, frozenset):
        return next(filter(None, (plain_data_problem(item, f'{at}[{i}]') for i, item in enumerate(value))), None)
    if kind in _LEAVES or _loads_as_data(value):
        return None
    return f'a {kind.__module__}.{kind.__qualname__} at {at or "the top level"}'


def _loads_as_data(value):
    """Whether torch reads `value` back without running code: the last word on types not listed."""
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:
        return False
    return True
