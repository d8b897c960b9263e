"""Where a session stands, read from its folder without writing anything or running user code:
progress and metric history from the newest intact checkpoint (plain data), the checkpoints kept,
and SESSION/train.lock, which says whether a trainer holds the session now.

The spec read is the one training runs: for a concise spec, the explicit spec it was filled in to at
init (SESSION/expanded.json), else SESSION/spec.json.

The best epoch of a stage: by the spec's `train.best_metric` ({"name", "mode"}, what best.pt
follows) when the stage records that metric; else by the rule the end-of-training summary uses
(`torchassistant.spec.rules.best_epoch`): the first validation metric ("val ..."), else the first
metric, lower is better for losses and error rates and higher for everything else; none for a stage
that trains several pipelines (a GAN's players), which has no one objective.
"""
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from torchassistant.core import standard_json
from torchassistant.core.hints import Hint
from torchassistant.report.progress import format_metrics
from torchassistant.session import checkpoint
from torchassistant.session import lock as session_lock
from torchassistant.session.store import SessionStore
from torchassistant.spec import loader, trust
from torchassistant.spec import overrides as spec_overrides
from torchassistant.spec.rules import best_epoch, best_metric_mode, lower_is_better


@dataclass
class StageStatus:
    index: int
    rows: list               # {display name: value} per finished epoch of the stage, epoch 1 first
    state: str               # "finished", "in progress" or "not started"
    monitored: Optional[str] = None    # the metric that decides the best epoch
    lower_is_better: Optional[bool] = None
    best_epoch: Optional[int] = None   # 1-based epoch of the stage (as printed and in metrics/<stage>.csv)


@dataclass
class SessionStatus:
    path: str
    epoch: int               # epochs finished over all stages (the newest intact checkpoint)
    batch: int               # batches into the next epoch when that checkpoint is a mid-epoch one, else 0
    stage: Optional[int]     # the stage that runs next (or now); None when complete
    stages_done: int         # stages finished: == num_stages when complete
    num_stages: int
    complete: bool
    stages: list
    checkpoints: list        # names of the checkpoint files kept ("epoch_3", "epoch_4_batch_50")
    best_checkpoint: dict    # best.json ({"epoch", "metric", "mode", "value"}) when best.pt exists, else None
    running: dict            # {"state": "running" | "not running" | "stale lock" | "unknown", "pid", "host", ...}
    overrides: list = field(default_factory=list)   # the --set arguments the spec is used with (init's, train's)
    trial: Optional[dict] = None    # a sweep's trial: {"sweep", "number", "state", "epoch", "reason", ...}
    damaged: list = field(default_factory=list)     # checkpoints kept whose checksum does not match (not used)
    problems: list = field(default_factory=list)    # other damaged session files, in words (best.json, best.pt)
    code: list = field(default_factory=list)        # [{"name", "where"}]: each class and function the spec names
    modules: list = field(default_factory=list)     # the modules importing them loads (none imported to list them)
    spec_changed: Optional[list] = None    # spec files changed since init recorded them ([]: none; None: no record)


def read(session_dir):
    """The status of the session at `session_dir`; reads files only."""
    store = SessionStore.open(session_dir)
    overrides = store.overrides()
    spec = store.expanded_spec()         # a concise spec, filled in (with init's overrides)
    if spec is None:
        spec = loader.load_file(store.spec_file()).data
        spec = spec_overrides.apply_to_data(spec, store.overrides('init')) if store.overrides('init') else spec
    if store.overrides('train'):
        spec = spec_overrides.apply_to_data(spec, store.overrides('train'))
    train = spec['train']
    ident, state = store.latest_checkpoint(check=checkpoint.problem)
    progress = state['progress']
    history = progress['history']
    stages = [_stage(index, history.get(index, history.get(str(index), [])), progress['stage'],
                     train.get('best_metric'), len(stage['training_pipelines']))
              for index, stage in enumerate(train['stages'])]
    best, best_problem = store.best_state()      # the record best.pt matches (verified)
    done = min(progress['stage'], len(train['stages']))
    complete = done == len(train['stages'])
    return SessionStatus(store.path, ident.epoch, ident.batch, None if complete else done, done,
                         len(train['stages']), complete, stages,
                         [i.name for i in store.checkpoint_ids()], best, training_lock(store.path),
                         overrides, store.read_record('trial.json'), store.damaged_checkpoints(),
                         [best_problem] if best_problem else [], *code_of(spec), store.spec_changes())


def _stage(index, rows, next_stage, best_metric, pipelines=1):
    state = 'finished' if index < next_stage else 'in progress' if index == next_stage and rows else 'not started'
    status = StageStatus(index, rows, state)
    if best_metric and any(best_metric['name'] in row for row in rows):
        name, mode = best_metric['name'], best_metric_mode(best_metric)      # as best.pt is chosen
        best = best_epoch(rows, name, mode)
        status.monitored, status.lower_is_better = name, mode == 'min'
        status.best_epoch = best[0] if best else None
    elif best_epoch(rows, pipelines=pipelines) is not None:
        status.best_epoch, status.monitored, _ = best_epoch(rows, pipelines=pipelines)
        status.lower_is_better = lower_is_better(status.monitored)
    return status


def _trial(trial):
    said = f'trial {trial.get("number")} of sweep "{trial.get("sweep")}": {trial.get("state")}'
    if trial.get('state') == 'pruned':
        said += f' after epoch {trial.get("epoch")} ({trial.get("reason")})'
    elif trial.get('state') == 'failed':
        said += f': {trial.get("reason")}'
    elif trial.get('value') is not None:
        said += f', {trial.get("metric")} {trial["value"]:.4f}'
    return said


def code_of(spec):
    """([{"name", "where"}], [modules]): what opening a session with `spec` imports and calls, read from the
    spec (spec.trust), importing nothing."""
    named = trust.names(spec)
    return [{'name': n.qualified, 'where': loader.format_path(n.where, spec)} for n in named], trust.modules(named)


def describe_code(status, prefix_of=None):
    """Lines saying what code the session's spec runs, and whether it changed since init."""
    lines = ['Code the spec runs (each is imported and called when the session is opened; listed here without '
             'importing anything):']
    width = max((len(c['name']) for c in status.code), default=0)
    lines += [f'  {c["name"]:<{width}}  {c["where"]}' for c in status.code]
    lines.append(f'  modules: {", ".join(status.modules) or "none"} (looked for in the folder the command runs in '
                 f'first, then in the installed packages)')
    if status.spec_changed is None:
        lines.append('  spec: no digest recorded (a session made before they were); '
                     f'{Hint("trust", status.path).render(prefix_of)} records one')
    elif status.spec_changed:
        lines.append(f'  spec: CHANGED since init: {", ".join(status.spec_changed)}; train, evaluate and infer refuse '
                     f'it until it is accepted with: {Hint("trust", status.path).render(prefix_of)}')
    else:
        lines.append('  spec: unchanged since init')
    return lines


def training_lock(session_dir):
    """Whether a trainer holds the session now, from SESSION/train.lock (read, never written here)."""
    return session_lock.inspect(os.path.join(session_dir, session_lock.LOCK))


# ---- showing it ----------------------------------------------------------------------------------

def to_json(status):
    return standard_json.dumps(asdict(status), indent=2)     # a NaN metric: null


def describe(status, prefix_of=None):
    """The status as a few lines of text (`prefix_of` renders the command that continues it)."""
    lines = [f'Session "{status.path}"', f'  {_overall(status, prefix_of)}', f'  {_running(status.running)}']
    if status.overrides:
        lines.append(f'  overrides: {spec_overrides.render(status.overrides)}')
    if status.trial:
        lines.append(f'  {_trial(status.trial)}')
    for stage in status.stages:
        epochs = f'{len(stage.rows)} epoch{"s" if len(stage.rows) != 1 else ""}'
        lines.append(f'Stage {stage.index}: {stage.state}, {epochs}')
        if stage.rows:
            lines.append(f'  last  epoch {len(stage.rows):4d} {format_metrics(stage.rows[-1])}')
        if stage.best_epoch is not None:
            better = 'lower' if stage.lower_is_better else 'higher'
            lines.append(f'  best  epoch {stage.best_epoch:4d} {format_metrics(stage.rows[stage.best_epoch - 1])}'
                         f'  (by {stage.monitored}, {better} is better)')
        if stage.rows:
            lines.append(f'  metrics: {os.path.join(status.path, "metrics", f"{stage.index}.csv")}')
    kept = ', '.join(name + (' (damaged: its checksum does not match; not used)' if name in status.damaged else '')
                     for name in status.checkpoints) or 'none'
    lines.append(f'Checkpoints kept in {os.path.join(status.path, "checkpoints")}: {kept}')
    lines += [f'  {problem}' for problem in status.problems]
    if status.best_checkpoint:
        best = status.best_checkpoint
        lines.append(f'  best.pt: epoch {best["epoch"]} ({best["metric"]} {best["value"]:.4f}, '
                     f'{"lowest" if best["mode"] == "min" else "highest"})')
    return '\n'.join(lines + describe_code(status, prefix_of))


def _overall(status, prefix_of=None):
    if status.complete:
        return (f'training complete: all {status.num_stages} stage{"s" if status.num_stages != 1 else ""} '
                f'finished, {status.epoch} epochs')
    at = f'{status.epoch} epochs' + (f' and {status.batch} batches of the next' if status.batch else '')
    running = status.running['state'] == 'running'
    resume = '' if running else f'; continue with: {Hint("train", status.path).render(prefix_of)}'
    going = 'in progress' if status.stages[status.stage].state == 'in progress' or status.batch else 'runs next'
    return f'training not complete: {at} done, stage {status.stage} ({status.stage + 1} of {status.num_stages}) ' \
           f'{going}{resume}'


def _running(lock):
    since = f' since {lock["since"]}' if lock.get('since') else ''
    who = f'pid {lock.get("pid")} on host "{lock.get("host")}"{since}'
    if lock['state'] == 'running':
        return f'training now: {who}'
    if lock['state'] == 'stale lock':
        return f'not training now (train.lock is stale: {who} is no longer running)'
    if lock['state'] == 'unknown':
        return f'training now: unknown; {lock["why"]}' + (f' ({who})' if lock.get('pid') else '')
    return 'not training now'
