"""Tables and figures over many runs: a sweep's trials (from its study) and any sessions side by side.

`sweep_table` / `sweep_status`: the trials by objective, the best marked, each with its session;
`plot_sweep`: the objective by trial and by each parameter; `compare`: sessions (or a sweep's trials)
in one table (overrides, best metric, epochs, time) and their learning curves on one figure. Figures
are drawn on matplotlib's Agg canvas and written atomically; nothing here writes inside a session.
"""
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from torchassistant.core.errors import UsageError
from torchassistant.experiment.study import shown_storage
from torchassistant.report import status as session_status
from torchassistant.session import atomic
from torchassistant.spec import overrides as spec_overrides
from torchassistant.spec.rules import lower_is_better

RECORD = 'sweep.json'


@dataclass
class TrialRow:
    number: int
    state: str                   # complete, pruned, failed, running
    value: Optional[float]
    params: dict
    session: Optional[str]
    epochs: Optional[int] = None
    seconds: Optional[float] = None
    error: Optional[str] = None
    best: bool = False


@dataclass
class SweepStatus:
    sweep_dir: str
    study: str
    storage: str
    metric: str
    direction: str
    trials: int                  # the study's target
    counts: dict
    rows: list = field(default_factory=list)   # TrialRow, best first
    best: Optional[int] = None                 # the best trial's number
    log_scale: list = field(default_factory=list)   # parameters drawn on a log scale


def is_sweep(path):
    return os.path.isfile(os.path.join(path, RECORD))


def open_study(sweep_dir):
    """(record, study) of the sweep in `sweep_dir` (its sweep.json names the study and storage)."""
    path = os.path.join(sweep_dir, RECORD)
    try:
        with open(path) as f:
            record = json.load(f)
        storage = record['storage'] or f'sqlite:///{os.path.abspath(os.path.join(sweep_dir, "study.db"))}'
        name = record['study_name']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f'{path} is damaged or not a sweep record ({type(e).__name__}: {e})') from None
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except Exception as e:        # the storage or the study is gone
        raise UsageError(f'sweep "{sweep_dir}": cannot open study "{name}": {type(e).__name__}: {e}') from None
    record['storage'] = storage
    return record, study


def rows_of(study, metric, direction):
    out = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        state = {'COMPLETE': 'complete', 'PRUNED': 'pruned', 'FAIL': 'failed', 'RUNNING': 'running'}.get(
            t.state.name, t.state.name.lower())
        epochs = max(t.intermediate_values) if t.intermediate_values else None
        value = t.value if t.value is not None else (t.intermediate_values[epochs] if epochs else None)
        out.append(TrialRow(t.number, state, value, dict(t.params), t.user_attrs.get('session'), epochs, seconds,
                            t.user_attrs.get('error')))
    sign = -1 if direction == 'maximize' else 1

    def key(row):
        finished = row.state == 'complete' and row.value is not None and math.isfinite(row.value)
        return (0 if finished else 1 if row.value is not None else 2,
                sign * row.value if row.value is not None else 0, row.number)
    out.sort(key=key)
    if out and out[0].state == 'complete':
        out[0].best = True
    return out


def sweep_status(sweep_dir):
    record, study = open_study(sweep_dir)
    rows = rows_of(study, record['metric'], record['direction'])
    counts = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    best = next((r.number for r in rows if r.best), None)
    return SweepStatus(sweep_dir, record['study_name'], shown_storage(record['storage'], sweep_dir), record['metric'],
                       record['direction'], record['trials'], counts, rows, best, record.get('log_scale', []))


def sweep_table(spec, study):
    """The table printed at the end of a sweep."""
    rows = rows_of(study, spec.metric, spec.direction)
    status = SweepStatus(spec.sweep_dir, spec.name, shown_storage(spec.storage_url, spec.sweep_dir), spec.metric, spec.direction,
                         spec.trials, {}, rows, next((r.number for r in rows if r.best), None))
    for row in rows:
        status.counts[row.state] = status.counts.get(row.state, 0) + 1
    return describe(status)


def describe(status):
    done = ', '.join(f'{n} {s}' for s, n in sorted(status.counts.items())) or 'no trials'
    lines = [f'Sweep "{status.sweep_dir}" (study "{status.study}", {status.storage}): {done} of {status.trials}; '
             f'{status.direction} {status.metric}']
    header = f'      trial  state     {status.metric:>10}  epochs  {"time":>8}  parameters / session'
    lines.append(header)
    for row in status.rows:
        value = f'{row.value:10.4f}' if row.value is not None else f'{"-":>10}'
        seconds = f'{row.seconds:7.1f}s' if row.seconds is not None else f'{"-":>8}'
        params = ' '.join(f'{_short(k)}={_shown(v)}' for k, v in row.params.items())
        mark = '  best' if row.best else '      '
        lines.append(f'{mark} {row.number:5d}  {row.state:<8}  {value}  {row.epochs if row.epochs else "-":>6}  '
                     f'{seconds}  {params}  {row.session or ""}')
        if row.error:
            lines.append(f'{"":14}{row.error.splitlines()[0][:200]}')
    if status.best is not None:
        best = next(r for r in status.rows if r.best)
        lines.append(f'Best: trial {best.number}, {status.metric} {best.value:.4f}, session {best.session}')
    return '\n'.join(lines)


def to_json(status):
    return json.dumps(_finite(asdict(status)), indent=2, allow_nan=False)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# ---- figures ---------------------------------------------------------------------------------------

def _figure(panels, title):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    columns = min(2, panels)
    lines = math.ceil(panels / columns)
    fig = Figure(figsize=(5.2 * columns, 3.6 * lines + 0.6), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=13)
    return fig, [fig.add_subplot(lines, columns, i + 1) for i in range(panels)]


def _write(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write(path, buffer.getvalue())
    return path


def plot_sweep(sweep_dir, out_dir=None):
    """SWEEP_DIR/plots/objective.png: the objective by trial, and against each parameter."""
    status = sweep_status(sweep_dir)
    scored = [r for r in status.rows if r.value is not None and math.isfinite(r.value)]
    if not scored:
        raise UsageError(f'sweep "{sweep_dir}" has no trial with an objective value yet, so there is nothing to plot')
    names = list(dict.fromkeys(k for r in status.rows for k in r.params))
    fig, axes = _figure(1 + len(names), f'sweep {status.study}: {status.metric}')
    colors = {'complete': '#1f77b4', 'pruned': '#ff7f0e', 'failed': '#d62728', 'running': '#7f7f7f'}
    for state in colors:
        chosen = [r for r in scored if r.state == state]
        if chosen:
            axes[0].scatter([r.number for r in chosen], [r.value for r in chosen], label=state, color=colors[state])
            for ax, name in zip(axes[1:], names):
                points = [(r.params[name], r.value) for r in chosen if name in r.params]
                ax.scatter([_plotted(p) for p, _ in points], [v for _, v in points], color=colors[state], label=state)
    best = next((r for r in status.rows if r.best), None)
    if best is not None:
        axes[0].plot([best.number], [best.value], marker='*', markersize=16, color='#2ca02c', linestyle='none',
                     label=f'best (trial {best.number})')
    axes[0].set_xlabel('trial')
    axes[0].set_ylabel(status.metric)
    axes[0].legend(fontsize=8)
    for ax, name in zip(axes[1:], names):
        ax.set_xlabel(name)
        ax.set_ylabel(status.metric)
        if name in status.log_scale:
            ax.set_xscale('log')
    return [_write(fig, os.path.join(out_dir or os.path.join(sweep_dir, 'plots'), 'objective.png'))]


# ---- comparing sessions ----------------------------------------------------------------------------

@dataclass
class SessionRow:
    path: str
    overrides: list
    metric: Optional[str]
    best: Optional[float]
    best_epoch: Optional[int]
    epochs: int
    seconds: Optional[float]      # from the session's first checkpoint to its newest
    complete: bool


def sessions_of(paths):
    """Session folders from the command line: sessions as they are, a sweep folder as its trials."""
    out = []
    for path in paths:
        if is_sweep(path):
            trials = os.path.join(path, 'trials')
            out += sorted(os.path.join(trials, n) for n in os.listdir(trials)) if os.path.isdir(trials) else []
        else:
            out.append(path)
    if not out:
        raise UsageError('nothing to compare: give session folders or a sweep folder that has trials')
    return out


def compare(paths, metric=None):
    """(rows, statuses): one SessionRow per session; `metric` (a display name) decides "best",
    else each session's own best metric."""
    rows, statuses = [], []
    for path in sessions_of(paths):
        status = session_status.read(path)
        statuses.append(status)
        history = [row for stage in status.stages for row in stage.rows]
        name = metric or next((s.monitored for s in reversed(status.stages) if s.monitored), None)
        values = [(row[name], i) for i, row in enumerate(history, 1)
                  if name and isinstance(row.get(name), (int, float)) and math.isfinite(row[name])]
        best = None
        if values:
            best = min(values) if lower_is_better(name) else max(values)
        rows.append(SessionRow(status.path, status.overrides, name, best[0] if best else None,
                               best[1] if best else None, status.epoch, _span(path), status.complete))
    return rows, statuses


def _span(path):
    folder = os.path.join(path, 'checkpoints')
    try:
        times = [os.path.getmtime(os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith('.pt')]
    except OSError:
        return None
    return max(times) - min(times) if len(times) > 1 else None


def describe_comparison(rows):
    lines = [f'{"session":<28} {"best":>22}  {"epochs":>6}  {"time":>8}  overrides']
    for row in rows:
        best = f'{row.metric} {row.best:.4f} @{row.best_epoch}' if row.best is not None else '-'
        seconds = f'{row.seconds:7.1f}s' if row.seconds is not None else f'{"-":>8}'
        shown = spec_overrides.render([o for o in row.overrides if not o.startswith('session_dir=')])
        lines.append(f'{row.path:<28} {best:>22}  {row.epochs:>6}  {seconds}  {shown}')
    return '\n'.join(lines)


def plot_comparison(rows, statuses, out):
    """Learning curves of every session on one figure: one panel per metric, one line per session."""
    names = list(dict.fromkeys(k for s in statuses for stage in s.stages for row in stage.rows for k in row))
    if not names:
        raise UsageError('none of these sessions has a finished epoch yet, so there is nothing to plot')
    fig, axes = _figure(len(names), f'{len(statuses)} sessions')
    for status in statuses:
        history = [row for stage in status.stages for row in stage.rows]
        for ax, name in zip(axes, names):
            ax.plot(range(1, len(history) + 1), [row.get(name, math.nan) for row in history], marker='o',
                    markersize=3, label=os.path.basename(os.path.normpath(status.path)))
    for ax, name in zip(axes, names):
        ax.set_title(name)
        ax.set_xlabel('epoch')
        ax.legend(fontsize=7)
    return _write(fig, out)


def _plotted(value):
    return value if isinstance(value, (int, float)) else str(value)


def _short(path):
    return path.split('.')[-1]


def _shown(value):
    return f'{value:.4g}' if isinstance(value, float) else str(value)

