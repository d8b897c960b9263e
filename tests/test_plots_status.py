"""`torchassistant status` and `torchassistant plot` on a session trained on tiny real MNIST data:
what status reports (against the metrics CSV and the checkpoint files), that it writes nothing, the
training lock, and the PNG's content (its pixels and the data of every curve)."""
import csv
import json
import math
import os
import socket
import sys
import time
from datetime import datetime

import forked
import matplotlib.image
import pytest
from conftest import folder_snapshot, make_project, write_json
from test_console import console, ok

from torchassistant.report import plots, status

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def sessions(tmp_path_factory, tiny_mnist):
    """(project folder, "pretrained" trained for 3 epochs, "fresh" only initialized) through the console."""
    root = make_project(str(tmp_path_factory.mktemp('status')), tiny_mnist, epochs=3)
    ok(console('init', 'my_examples/mnist/training.json', cwd=root))
    ok(console('train', 'pretrained', cwd=root))
    with open(os.path.join(root, 'my_examples', 'mnist', 'training.json')) as f:
        spec = json.load(f)
    write_json(os.path.join(root, 'fresh.json'), {**spec, 'session_dir': 'fresh'})
    ok(console('init', 'fresh.json', cwd=root))
    return root, os.path.join(root, 'pretrained'), os.path.join(root, 'fresh')


def csv_rows(session):
    with open(os.path.join(session, 'metrics', '0.csv')) as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items() if k != 'epoch'} for row in rows]


def checkpoint_files(session):
    return sorted((name[:-3] for name in os.listdir(os.path.join(session, 'checkpoints'))
                   if name.endswith('.pt') and name != 'best.pt'), key=lambda n: int(n.split('_')[1]))


def shown(row):
    return '[' + ', '.join(f'{k} {v:.4f}' for k, v in row.items()) + ']'


# ---- status --------------------------------------------------------------------------------------

def test_status_of_a_trained_session(sessions):
    root, session, _ = sessions
    before = folder_snapshot(session)
    rows = csv_rows(session)
    assert len(rows) == 3
    best = max(range(3), key=lambda i: (rows[i]['val acc'], -i)) + 1     # highest val acc, earliest on ties

    data = json.loads(ok(console('status', '--json', 'pretrained', cwd=root)).stdout)
    assert (data['epoch'], data['batch'], data['stage'], data['stages_done'], data['num_stages'], data['complete']) \
        == (3, 0, None, 1, 1, True)
    stage = data['stages'][0]
    assert (stage['state'], stage['monitored'], stage['lower_is_better'], stage['best_epoch']) == \
        ('finished', 'val acc', False, best)
    assert [list(r) for r in stage['rows']] == [list(r) for r in rows]
    for got, expected in zip(stage['rows'], rows):
        assert got == pytest.approx(expected, rel=1e-5)
    assert data['checkpoints'] == checkpoint_files(session)
    assert data['running'] == {'state': 'not running'}

    exact = stage['rows']           # the checkpoint's values; the CSV keeps 6 significant digits
    text = ok(console('status', 'pretrained', cwd=root)).stdout
    lines = text.splitlines()
    assert lines[:4] == ['Session "pretrained"', '  training complete: all 1 stage finished, 3 epochs',
                         '  not training now', 'Stage 0: finished, 3 epochs']
    assert lines[4] == f'  last  epoch    3 {shown(exact[-1])}'
    assert lines[5] == f'  best  epoch {best:4d} {shown(exact[best - 1])}  (by val acc, higher is better)'
    assert f'Checkpoints kept in {os.path.join("pretrained", "checkpoints")}: ' \
           f'{", ".join(checkpoint_files(session))}' in text
    assert folder_snapshot(session) == before, 'status writes nothing'


def test_status_of_a_session_being_trained(sessions):
    """A live train.lock (this host, a running process): status says who trains it and since when."""
    root, _, fresh = sessions
    holder = forked.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    try:
        time.sleep(0.5)
        since = datetime.now().astimezone().isoformat(timespec='seconds')
        lock = {'pid': holder.pid, 'host': socket.gethostname(), 'since': since, 'command': 'train'}
        write_json(os.path.join(fresh, 'train.lock'), lock)
        before = folder_snapshot(fresh)
        text = ok(console('status', 'fresh', cwd=root)).stdout
        assert folder_snapshot(fresh) == before
    finally:
        holder.kill()
        holder.wait()
        os.unlink(os.path.join(fresh, 'train.lock'))
    assert '  training not complete: 0 epochs done, stage 0 (1 of 1) runs next\n' in text
    assert f'  training now: pid {holder.pid} on host "{socket.gethostname()}" since {since}\n' in text
    assert 'Stage 0: not started, 0 epochs' in text
    assert 'best' not in text


def test_status_suggests_how_to_continue(sessions):
    root = sessions[0]
    text = ok(console('status', 'fresh', cwd=root)).stdout
    assert 'runs next; continue with: python -m torchassistant train fresh' in text
    assert 'not training now' in text


def test_lock_states(tmp_path):
    gone = forked.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    since = datetime.now().astimezone().isoformat(timespec='seconds')
    cases = [({'pid': gone.pid, 'host': socket.gethostname(), 'since': since}, 'stale lock'),
             ({'pid': os.getppid(), 'host': 'elsewhere.example', 'since': since}, 'unknown'),
             ('{"pid": 12', 'unknown')]
    for lock, state in cases:
        (tmp_path / 'train.lock').write_text(lock if isinstance(lock, str) else json.dumps(lock))
        found = status.training_lock(str(tmp_path))
        assert found['state'] == state, (lock, found)
    (tmp_path / 'train.lock').write_text(json.dumps(cases[1][0]))
    why = status.training_lock(str(tmp_path))['why']
    assert 'held on host "elsewhere.example", which this host cannot check' in why
    os.unlink(tmp_path / 'train.lock')
    assert status.training_lock(str(tmp_path)) == {'state': 'not running'}


@pytest.mark.parametrize('rows, best_metric, expected', [
    ([{'acc': .5, 'loss': 2., 'val acc': .4, 'val loss': 2.1}, {'acc': .7, 'loss': 1., 'val acc': .6, 'val loss': 1.8},
      {'acc': .9, 'loss': .5, 'val acc': .6, 'val loss': 1.9}], None, ('val acc', False, 2)),
    ([{'loss': 2., 'val loss': 2.1}, {'loss': 1., 'val loss': 1.7}, {'loss': .5, 'val loss': 1.9}], None,
     ('val loss', True, 2)),
    ([{'loss': 2., 'error rate': .3}, {'loss': 1., 'error rate': .2}], None, ('loss', True, 2)),
    ([{'acc': .5, 'val acc': .4, 'val loss': 2.}, {'acc': .6, 'val acc': .5, 'val loss': 2.2}],
     {'name': 'val loss', 'mode': 'min'}, ('val loss', True, 1)),
    ([{'val acc': float('nan')}, {'val acc': .2}, {'val acc': .1}], None, ('val acc', False, 2)),
], ids=['first-validation-metric', 'loss-lower', 'no-validation-first', 'spec-best_metric', 'nan-never-wins'])
def test_the_best_epoch_rule(rows, best_metric, expected):
    stage = status._stage(0, rows, 1, best_metric)
    assert (stage.monitored, stage.lower_is_better, stage.best_epoch) == expected


# ---- plot ----------------------------------------------------------------------------------------

def color_pixels(image, box, rgb, tolerance=0.12):
    """How many pixels of `image` (rows from the top) inside the display box `box` (origin bottom
    left) are within `tolerance` of the colour `rgb`."""
    height = image.shape[0]
    x0, x1 = int(box.x0), int(box.x1)
    y0, y1 = height - int(box.y1), height - int(box.y0)
    crop = image[y0:y1, x0:x1, :3]
    close = (abs(crop - rgb) < tolerance).all(axis=-1)
    return int(close.sum())


def hex_rgb(text):
    return [int(text[i:i + 2], 16) / 255 for i in (1, 3, 5)]


def test_plot_draws_every_metric_training_against_validation(sessions):
    root, session, _ = sessions
    result = ok(console('plot', 'pretrained', cwd=root))
    path = os.path.join(session, 'plots', 'stage_0.png')
    assert result.stdout.strip() == f'wrote {os.path.join("pretrained", "plots", "stage_0.png")}'
    image = matplotlib.image.imread(path)
    assert image.shape == (420, 1040, 4)          # two panels side by side, 100 dpi

    # the same figure, built in-process from the same session: its curves hold the CSV's numbers
    rows = csv_rows(session)
    report = status.read(session)
    stage = report.stages[0]
    fig = plots.figure(stage.rows, 'title', stage.monitored, stage.best_epoch)
    fig.canvas.draw()
    assert [axes.get_title() for axes in fig.axes] == ['acc  (higher is better)', 'loss  (lower is better)']
    for axes, metric in zip(fig.axes, ('acc', 'loss')):
        curves = {line.get_label(): line for line in axes.get_lines()}
        best_label = f'best: epoch {stage.best_epoch}, {stage.rows[stage.best_epoch - 1]["val acc"]:.4g}'
        assert {'acc': ['acc', 'val acc', best_label], 'loss': ['loss', 'val loss']}[metric] == list(curves)
        for name in (metric, f'val {metric}'):
            assert list(curves[name].get_xdata()) == [1, 2, 3]
            assert list(curves[name].get_ydata()) == pytest.approx([row[name] for row in rows], rel=1e-5)
        assert axes.get_xlabel() == 'epoch' and axes.get_ylabel() == metric
        assert [t.get_text() for t in axes.get_legend().get_texts()] == list(curves)
        # in the PNG, inside this panel: both curves are drawn in their colours
        box = axes.get_window_extent()
        assert color_pixels(image, box, hex_rgb(plots.TRAINING_STYLE['color'])) > 40, metric
        assert color_pixels(image, box, hex_rgb(plots.VALIDATION_STYLE['color'])) > 40, metric
    best = list(fig.axes[0].get_lines()[-1].get_ydata())
    assert best == pytest.approx([rows[stage.best_epoch - 1]['val acc']], rel=1e-5)
    assert sum(color_pixels(image, a.get_window_extent(), hex_rgb('#2ca02c')) for a in fig.axes) > 40, 'the best star'


def test_plot_out_folder_leaves_the_session_alone(sessions, tmp_path):
    root, session, _ = sessions
    before = folder_snapshot(session)
    ok(console('plot', 'pretrained', '--out', tmp_path / 'curves', cwd=root))
    assert os.listdir(tmp_path / 'curves') == ['stage_0.png']
    assert matplotlib.image.imread(tmp_path / 'curves' / 'stage_0.png').shape == (420, 1040, 4)
    assert folder_snapshot(session) == before


def test_plot_of_an_untrained_session_says_so(sessions):
    root, _, fresh = sessions
    result = console('plot', 'fresh', cwd=root)
    assert result.returncode == 2
    assert result.stderr.strip() == ('error: session "fresh" has no finished epoch yet, so there is nothing to plot; '
                                     'train it with: python -m torchassistant train fresh')
    assert not os.path.exists(os.path.join(fresh, 'plots'))


def test_figure_layout_for_many_metrics_and_gaps():
    rows = [{'acc': .1 * e, 'val acc': .09 * e, 'val f1': .2, 'loss': 1 / e} for e in range(1, 6)]
    rows[2] = {k: v for k, v in rows[2].items() if k != 'val f1'}        # a missing value: a gap, not a zero
    fig = plots.figure(rows, 'title')
    assert [a.get_title().split()[0] for a in fig.axes] == ['acc', 'f1', 'loss']
    assert tuple(fig.get_size_inches() * fig.dpi) == (1040, 780)          # 2 columns, 2 rows
    f1 = fig.axes[1].get_lines()[0]
    assert f1.get_label() == 'val f1' and math.isnan(f1.get_ydata()[2])
