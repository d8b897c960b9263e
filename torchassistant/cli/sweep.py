"""`torchassistant sweep SWEEP.json`: a hyperparameter search on Optuna, each trial an ordinary session.

A trial is made like `init --set PATH=VALUE ... --set session_dir=SWEEP_DIR/trials/NNNN` from the
sweep's training spec, then trained like `train` with a listener that reports the objective to Optuna
after every epoch; the pruner's verdict is taken once that epoch's checkpoint is on disk, so a pruned
trial's session is consistent and says (trial.json) at which epoch and why. Killed sweeps resume:
finished trials stay finished, and a trial that was running resumes its session from its last
checkpoint (bit-identical to never having stopped). See `experiment.study` for how several processes
and machines share one study.
"""
import math
import os
import signal
import subprocess
import sys
import time

from torchassistant.cli import commands
from torchassistant.core.errors import Interrupted, TorchAssistantError, UsageError
from torchassistant.core.hints import Hint
from torchassistant.experiment import study as studies
from torchassistant.experiment import sweeps
from torchassistant.session import atomic
from torchassistant.session.store import SessionStore


class Pruned(Exception):
    def __init__(self, epoch, reason):
        super().__init__(reason)
        self.epoch, self.reason = epoch, reason


class _Reporter:
    """Reports the objective after each epoch; asks the pruner once that epoch is saved."""

    def __init__(self, trial, metric, reported):
        self.trial, self.metric = trial, metric
        self.reported = set(reported)          # epochs a run before this one reported already
        self.pending = None
        self.value = None

    def on_epoch_end(self, stage, epoch, row, progress):
        value = row.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.value = value
            if progress.epoch not in self.reported:
                self.trial.report(value, progress.epoch)
                self.reported.add(progress.epoch)
            self.pending = progress.epoch

    def on_checkpoint_saved(self, stage, progress, path):
        if self.pending is None or progress.batch or progress.epoch != self.pending:
            return
        epoch, self.pending = self.pending, None
        if self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__
            raise Pruned(epoch, f'{self.metric} {self.value:.4g} at epoch {epoch}: the {pruner} stopped it')


def sweep(sweep_path, jobs=1, stream=None, worker=False):
    """Run the sweep until its study has all its trials; the study."""
    stream = stream or sys.stdout
    spec = sweeps.load(sweep_path, expand=_expander())
    if not worker:
        _write_record(spec)
    study = studies.create(spec)
    if not worker:
        print(f'Sweep "{spec.sweep_dir}": study "{spec.name}" in {studies.shown_storage(spec.storage_url, spec.sweep_dir)}, '
              f'{spec.trials} trials, {spec.direction} {spec.metric}; {_said(studies.counts(study))}', file=stream)
    if jobs > 1:
        _run_workers(sweep_path, jobs, stream)
    else:
        while True:
            trial, resumed = studies.next_trial(study, spec)
            if trial is None:
                break
            print(_line(spec, *_run_trial(spec, study, trial, resumed)), file=stream, flush=True)
    if not worker:
        from torchassistant.experiment import compare
        print(compare.sweep_table(spec, study), file=stream)
    return study


def _expander():
    """The training spec filled in (a concise spec's pipelines are known only from its data)."""
    def expand(document):
        from torchassistant.assembly.build import LearnedState
        from torchassistant.assembly.probe import DataProbe
        from torchassistant.spec import concise
        return concise.prepare(document, DataProbe(LearnedState(document.data.get('seed', 0))), quiet=True)
    return expand


def _run_trial(spec, study, trial, resumed):
    """Make (or resume) the trial's session and train it; (number, params, value, epochs, state, seconds)."""
    from optuna.trial import TrialState
    started = time.monotonic()
    studies.seed_trial(study, spec, trial)
    params = {p.path: p.suggest(trial) for p in spec.parameters}
    session = spec.trial_dir(trial.number)
    log_path = os.path.join(spec.sweep_dir, 'logs', f'{trial.number:04d}.log')
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    record = {'sweep': spec.sweep_dir, 'number': trial.number, 'params': params, 'metric': spec.metric}
    epochs, value = 0, None
    with open(log_path, 'a') as log:
        try:
            if not os.path.isfile(os.path.join(session, 'session.json')):
                commands.init(spec.training_spec, stream=log, overrides=spec.overrides_of(params, trial.number))
            frozen = study._storage.get_trial(trial._trial_id)
            reporter = _Reporter(trial, spec.metric, frozen.intermediate_values)
            options = commands.RunOptions(stream=log, listeners=(reporter,))
            progress = commands.train(session, stream=log, options=options)
            epochs = progress.epoch
            value = _final_value(progress, spec.metric)
            if value is None:
                raise UsageError(f'the trial\'s epochs show no finite "{spec.metric}"')
            _tell(study, trial, value)
            state = 'complete'
            record.update(state=state, value=value, epoch=epochs)
        except Pruned as p:
            _tell(study, trial, state=TrialState.PRUNED)
            state, epochs, value = 'pruned', p.epoch, reporter.value
            record.update(state=state, epoch=p.epoch, reason=p.reason)
        except Interrupted as e:                      # the sweep stops; this trial resumes on the next run
            e.resume = Hint('sweep', spec.source)
            raise
        except TorchAssistantError as e:
            trial.set_user_attr('error', e.message)
            _tell(study, trial, state=TrialState.FAIL)
            state = 'failed'
            record.update(state=state, reason=e.message)
            print(f'error: {e.message}', file=log)
        if os.path.isfile(os.path.join(session, 'session.json')):
            SessionStore.open(session).write_record('trial.json', record)
    return trial.number, params, value, epochs, state, time.monotonic() - started


def _tell(study, trial, value=None, state=None):
    """study.tell, outside Optuna's optimize loop: the grid sampler asks the study to stop when its grid
    is used up, which Optuna refuses there after storing the trial (our loop counts trials itself)."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        if 'Study.stop' not in str(e):
            raise


def _final_value(progress, metric):
    """The objective at the last epoch that shows it (the weights the session ends with)."""
    for stage in sorted(progress.history, reverse=True):
        for row in reversed(progress.history[stage]):
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                return value
    return None


def _line(spec, number, params, value, epochs, state, seconds):
    shown = f'{spec.metric} {value:.4f}' if value is not None else f'{spec.metric} -'
    return (f'trial {number:4d}  {spec.describe_params(params)}  {shown}  epochs {epochs}  {state}  '
            f'{seconds:.1f} s')


def _said(counts):
    if not counts:
        return 'no trials yet'
    return ', '.join(f'{n} {state.lower()}' for state, n in sorted(counts.items()))


def _write_record(spec):
    """SWEEP_DIR/sweep.json: what `status`, `plot` and `compare` need to find the study again."""
    import json
    os.makedirs(spec.sweep_dir, exist_ok=True)
    data = {'sweep_spec': os.path.abspath(spec.source), 'storage': spec.storage, 'study_name': spec.name,
            'metric': spec.metric, 'direction': spec.direction, 'trials': spec.trials,
            'log_scale': [p.path for p in spec.parameters if p.log]}
    atomic.write(os.path.join(spec.sweep_dir, 'sweep.json'), (json.dumps(data, indent=4) + '\n').encode())


def _run_workers(sweep_path, jobs, stream):
    """`jobs` worker processes, each the same command with --jobs 1; they die with this process."""
    command = [sys.executable, '-m', 'torchassistant', 'sweep', os.fspath(sweep_path), '--worker']
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
               for _ in range(jobs)]
    try:
        import selectors
        selector = selectors.DefaultSelector()
        for w in workers:
            selector.register(w.stdout, selectors.EVENT_READ, w)
        open_streams = len(workers)
        while open_streams:
            for key, _ in selector.select():
                line = key.fileobj.readline()
                if not line:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                elif line.startswith('trial '):
                    print(line.rstrip('\n'), file=stream, flush=True)
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        for w in workers:
            w.send_signal(signal.SIGINT)
        for w in workers:
            w.wait()
        raise
    failed = [c for c in codes if c not in (0,)]
    if failed:
        raise TorchAssistantError(f'{len(failed)} of {jobs} sweep workers stopped with exit codes '
                                  f'{", ".join(map(str, failed))}; run the same command again to go on')


def _die_with_parent():
    """Linux: a worker gets SIGKILL when the sweep process dies (even by kill -9)."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
