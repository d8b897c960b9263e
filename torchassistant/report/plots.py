"""Learning curves as PNG files: one figure per stage, one panel per metric, a metric's training and
validation curves together (`acc` with `val acc`), epochs on x. Drawn with matplotlib's Agg canvas
(no display, no global pyplot state), from the metric history a session's checkpoint holds.
"""
import io
import math
import os
import re

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from torchassistant.core.errors import UsageError
from torchassistant.core.hints import Hint
from torchassistant.report import status as session_status
from torchassistant.session import atomic
from torchassistant.session.store import SessionStore
from torchassistant.spec.rules import lower_is_better

PANEL_SIZE = (5.2, 3.6)      # inches, at DPI
DPI = 100
MAX_COLUMNS = 2
TRAINING_STYLE = {'color': '#1f77b4', 'linestyle': '-'}
VALIDATION_STYLE = {'color': '#d62728', 'linestyle': '--'}


def base_name(name):
    """The metric a column measures, without its validation prefix: "val acc" -> "acc"."""
    return re.sub(r'^\s*(val|valid|validation)[^a-z0-9]+', '', name, flags=re.I) or name


def panels(names):
    """{panel title: [column names]} in first-seen order; a column and its validation twin share a panel."""
    out = {}
    for name in names:
        out.setdefault(base_name(name), []).append(name)
    return out


def figure(rows, title, monitored=None, best=None):
    """A matplotlib Figure of `rows` ({name: value} per epoch, epoch 1 first); `best` (1-based) marks
    the best epoch on the `monitored` column's curve."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    groups = panels(names)
    columns = min(MAX_COLUMNS, len(groups))
    lines = math.ceil(len(groups) / columns)
    fig = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * lines + 0.6), dpi=DPI, layout='constrained')
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=13)
    epochs = list(range(1, len(rows) + 1))
    marker = 'o' if len(rows) <= 40 else None
    for i, (panel, members) in enumerate(groups.items()):
        axes = fig.add_subplot(lines, columns, i + 1)
        for name in members:
            style = VALIDATION_STYLE if base_name(name) != name else TRAINING_STYLE
            values = [_number(row.get(name)) for row in rows]
            axes.plot(epochs, values, label=name, marker=marker, markersize=4, linewidth=1.8, **style)
            if name == monitored and best is not None:
                axes.plot([best], [values[best - 1]], linestyle='none', marker='*', markersize=14, color='#2ca02c',
                          label=f'best: epoch {best}, {values[best - 1]:.4g}', zorder=3)
        direction = 'lower is better' if lower_is_better(panel) else 'higher is better'
        axes.set_title(f'{panel}  ({direction})', fontsize=11)
        axes.set_xlabel('epoch')
        axes.set_ylabel(panel)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlim(0.5, len(rows) + 0.5)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=9)
    return fig


def png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    return buffer.getvalue()


def write(session_dir, out_dir=None):
    """Write one PNG per stage that has finished epochs into `out_dir` (default SESSION/plots);
    returns the paths written."""
    status = session_status.read(session_dir)
    stages = [stage for stage in status.stages if stage.rows]
    if not stages:
        raise UsageError(f'session "{status.path}" has no finished epoch yet, so there is nothing to plot; '
                         f'train it with: ', Hint("train", status.path))
    store = SessionStore(status.path) if out_dir is None else None     # the store writes SESSION/plots
    if out_dir is not None:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise UsageError(f'cannot create the folder for the plots "{out_dir}": {e.strerror}') from e
        if not os.path.isdir(out_dir):
            raise UsageError(f'"{out_dir}" is a file; --out expects a folder')
    paths = []
    session_name = os.path.basename(os.path.normpath(os.path.abspath(status.path)))
    for stage in stages:
        epochs = f'{len(stage.rows)} epoch{"s" if len(stage.rows) != 1 else ""}'
        fig = figure(stage.rows, f'Session "{session_name}", stage {stage.index} ({stage.state}, {epochs})',
                     stage.monitored, stage.best_epoch)
        name = f'stage_{stage.index}.png'
        if store is not None:
            paths.append(store.write_plot(name, png(fig)))
        else:
            paths.append(os.path.join(out_dir, name))
            atomic.write(paths[-1], png(fig))    # temp + fsync + rename there too
    return paths


def _number(value):
    return float(value) if isinstance(value, (int, float)) else float('nan')
