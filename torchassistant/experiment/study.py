"""The Optuna study a sweep's processes share, and how they share it without losing or doubling trials.

Each trial is claimed by one worker: a process on a host, recorded in the trial's user attributes
("worker": host, pid, process start) with its session folder ("session"). Two rules keep the study
exact whatever is killed:
- New trials are asked for under a study-wide mutex (a file lock beside an SQLite storage, a
  PostgreSQL advisory lock for a server), after counting every trial there is: the study never holds
  more than `trials`, and trial numbers are Optuna's own, which never repeat.
- A trial left RUNNING by a worker that died on this host (its pid is gone, or is another process now)
  is claimed again, under the same mutex, and its session resumes from its last checkpoint. A trial
  running on another host is that host's: rerun the sweep there to resume it.
"""
import contextlib
import fcntl
import os
import socket
import zlib

from torchassistant.core.errors import UsageError

_LOCK_FILE = '.study.lock'


def create(sweep):
    """The study of `sweep` (made on first use; joined when it exists in the storage)."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = 'maximize' if sweep.direction == 'maximize' else 'minimize'
    with mutex(sweep):          # two processes making the storage's tables, or the study, at once collide
        storage = _storage(sweep.storage_url)
        try:
            study = optuna.create_study(storage=storage, study_name=sweep.name, direction=direction,
                                        sampler=_sampler(sweep), pruner=_pruner(sweep.pruner), load_if_exists=True)
        except ValueError as e:     # e.g. the same name in the storage with another direction
            raise UsageError(f'{sweep.source}: study "{sweep.name}" in {_safe(sweep.storage_url)}: {e}') from None
    if study.direction.name.lower() != direction:
        raise UsageError(f'{sweep.source}: study "{sweep.name}" in the storage {_safe(sweep.storage_url)} '
                         f'{study.direction.name.lower()}s, this sweep spec says "{direction}"; give it another '
                         f'"study_name" or sweep_dir')
    return study


def _storage(url):
    import optuna
    if url.startswith('sqlite'):
        # several processes write one SQLite file: wait for its lock instead of failing at once
        return optuna.storages.RDBStorage(url, engine_kwargs={'connect_args': {'timeout': 60}})
    return optuna.storages.RDBStorage(url, engine_kwargs={'pool_pre_ping': True})


def _sampler(sweep):
    import optuna
    if sweep.sampler == 'random':
        return optuna.samplers.RandomSampler(seed=sweep.seed)
    if sweep.sampler == 'grid':
        return optuna.samplers.GridSampler({p.path: p.grid() for p in sweep.parameters}, seed=sweep.seed)
    return optuna.samplers.TPESampler(seed=sweep.seed)


def _pruner(name):
    import optuna
    if name == 'none':
        return optuna.pruners.NopPruner()
    if name == 'hyperband':
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def shown_storage(url, sweep_dir):
    """The storage as messages show it: the default SQLite file by its path in the sweep folder, a URL
    without its password."""
    default = f'sqlite:///{os.path.abspath(os.path.join(sweep_dir, "study.db"))}'
    return os.path.join(sweep_dir, 'study.db') if url == default else _safe(url)


def _safe(url):
    """A storage URL without its password, for messages."""
    import re
    return re.sub(r'://([^:/@]+):[^@]*@', r'://\1:***@', url)


# ---- who runs what -------------------------------------------------------------------------------

def me():
    return {'host': socket.gethostname(), 'pid': os.getpid(), 'start': _process_start(os.getpid())}


def _process_start(pid):
    """The process's start time in clock ticks since boot (tells a reused pid apart); None if unknown."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def is_orphan(trial):
    """A RUNNING trial whose worker was on this host and is gone."""
    worker = trial.user_attrs.get('worker')
    if not worker:
        return True              # asked for, never claimed (killed between ask and claim)
    if worker.get('host') != socket.gethostname():
        return False
    pid = worker.get('pid')
    if not isinstance(pid, int) or pid <= 0:
        return True
    start = _process_start(pid)
    return start is None or start != worker.get('start')


@contextlib.contextmanager
def mutex(sweep):
    """Held while counting and asking for trials or claiming orphans: one process at a time."""
    url = sweep.storage_url
    if url.startswith('postgresql'):
        import sqlalchemy
        engine = sqlalchemy.create_engine(url)
        key = zlib.crc32(f'torchassistant sweep {sweep.name}'.encode()) & 0x7FFFFFFF
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text('SELECT pg_advisory_lock(:k)'), {'k': key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text('SELECT pg_advisory_unlock(:k)'), {'k': key})
        engine.dispose()
        return
    os.makedirs(sweep.sweep_dir, exist_ok=True)
    with open(os.path.join(sweep.sweep_dir, _LOCK_FILE), 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def next_trial(study, sweep):
    """(trial, resumed): an orphaned trial of this host claimed again, else a new one; (None, False)
    when the study has all its trials."""
    import optuna
    from optuna.trial import TrialState
    with mutex(sweep):
        trials = study.get_trials(deepcopy=False)
        for frozen in trials:
            if frozen.state == TrialState.RUNNING and is_orphan(frozen):
                trial = optuna.trial.Trial(study, frozen._trial_id)
                trial.set_user_attr('worker', me())
                return trial, True
        if len(trials) >= sweep.trials:
            return None, False
        trial = study.ask()
        trial.set_user_attr('worker', me())
        trial.set_user_attr('session', sweep.trial_dir(trial.number))
        return trial, False


def seed_trial(study, sweep, trial):
    """With a "seed", what the sampler draws for a trial depends on the seed and the trial's number only:
    workers and machines that share the study draw different values, and a rerun draws the same."""
    if sweep.seed is None:
        return
    sampler = study.sampler
    for part in (sampler, getattr(sampler, '_random_sampler', None)):
        state = getattr(part, '_rng', None)
        if state is not None and hasattr(state, 'rng'):
            state.rng.seed((sweep.seed * 1_000_003 + trial.number) % 2 ** 32)


def counts(study):
    """{state name: number of trials}."""
    out = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out
