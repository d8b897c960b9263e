"""Fast unit tests of the pieces: loader locations, progress line, overrides, store, components."""
import fcntl
import io
import json
import os
import pty
import re
import struct
import sys
import termios
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO

from torchassistant.collators import BatchDivide
from torchassistant.core.errors import SpecError
from torchassistant.metrics import Accuracy
from torchassistant.report import status
from torchassistant.report.progress import ConsoleProgress, best_epoch
from torchassistant.session.checkpoint import Progress
from torchassistant.session.store import SessionStore
from torchassistant.spec.loader import parse
from torchassistant.spec.merge import MergeError, merge
from torchassistant.stop_conditions import EpochsCompleted

pytestmark = pytest.mark.unit


def test_locations_name_the_definition_and_the_line():
    text = '{\n  "initialize": {"definitions": [\n    {"group": "models", "name": "LeNet5",\n' \
           '     "spec": {"class": "x.LeNet5"}}]}}'
    document = parse(text, 'spec.json')
    path = ('initialize', 'definitions', 0, 'spec', 'class')
    assert document.describe(path) == 'spec.json:4:24 initialize.definitions[0] "LeNet5" spec.class'
    # a missing key is described at its nearest existing ancestor
    assert document.describe(path[:-1] + ('args',)).startswith('spec.json:4:14 ')


@pytest.mark.parametrize('text, where, says', [
    ('', '1:1', 'empty'),
    ('{"a": 1,}', '1:8', 'trailing comma'),
    ('{"a": [1, 2}', '1:12', 'expected "," or "]"'),
    ('{\n  // note\n  "a": 1}', '2:3', 'comments are not allowed'),
    ('{"a": 1', '1:8', 'unclosed'),
    ("{'a': 1}", '1:2', 'double quotes'),
    ('{"a": 1, "a": 2}', '1:10', 'duplicate key "a"'),
    ('{"a": tru}', '1:7', 'expected a value'),
])
def test_syntax_errors_say_line_column_and_show_the_line(text, where, says):
    with pytest.raises(SpecError) as error:
        parse(text, 'spec.json')
    message = str(error.value)
    assert f'spec.json:{where}: invalid JSON' in message and says in message
    if text:
        line = int(where.split(':')[0])
        assert text.splitlines()[line - 1] in message


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Stage:
    index = 0


def test_progress_line_matches_the_tutorial_with_rate_and_eta():
    stream = _Terminal()
    progress = ConsoleProgress(stream, interval=0)
    progress.on_epoch_start(_Stage(), 1, 1875)
    for done in range(1, 367):
        progress.on_batch_end(done, lambda: {'acc': 0.86931, 'loss': 0.43114})
    live = stream.getvalue().split('\r')[-1]
    assert live.startswith('Epoch     1 [acc 0.8693, loss 0.4311] |')
    assert re.search(r'\| 366 / 1875 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?\w?it/s\]', live), live
    progress.on_epoch_end(_Stage(), 1, {'acc': 0.9421, 'loss': 0.1903, 'val acc': 0.9387, 'val loss': 0.2015}, None)
    assert stream.getvalue().endswith('Epoch     1 [acc 0.9421, loss 0.1903, val acc 0.9387, val loss 0.2015]\n')


def test_progress_in_a_log_reads_metrics_only_for_its_periodic_lines():
    reads = []
    stream = io.StringIO()        # not a terminal: a plain line every 10 % of the epoch, no \r
    progress = ConsoleProgress(stream, log_seconds=3600)
    progress.on_epoch_start(_Stage(), 1, 1000)
    for done in range(1, 1001):
        progress.on_batch_end(done, lambda: reads.append(1) or {'loss': 0.5})
    progress.on_epoch_end(_Stage(), 1, {'acc': 0.5}, None)
    lines = stream.getvalue().splitlines()
    assert len(reads) == 10 and '\r' not in stream.getvalue()
    assert lines[0].startswith('Epoch     1 [loss 0.5000] 100 / 1000 [') and lines[0].endswith('it/s]')
    assert lines[-1] == 'Epoch     1 [acc 0.5000]'


def test_quiet_progress_prints_only_the_summary():
    stream = _Terminal()
    progress = ConsoleProgress(stream, quiet=True)
    progress.on_stage_start(_Stage(), None)
    progress.on_epoch_start(_Stage(), 1, 10)
    for done in range(1, 11):
        progress.on_batch_end(done, lambda: {'loss': 0.5})
    progress.on_epoch_end(_Stage(), 1, {'val loss': 0.5}, None)
    assert stream.getvalue() == ''


@pytest.mark.parametrize('rows, best', [
    ([{'val loss': 0.5}, {'val loss': 0.3}, {'val loss': 0.4}], (2, 'val loss', 0.3)),
    ([{'loss': 0.1, 'val acc': 0.5}, {'loss': 0.1, 'val acc': 0.9}, {'val acc': 0.9}], (2, 'val acc', 0.9)),
    ([{'cer': 0.4}, {'cer': 0.2}], (2, 'cer', 0.2)),
    ([], None),
])
def test_best_epoch_follows_the_first_validation_metric_and_its_direction(rows, best):
    assert best_epoch(rows) == best


# ---- progress on a terminal that reports no size ------------------------------------------------

def on_terminal(rows, columns):
    """What ConsoleProgress writes for a 10-batch epoch to a pty whose size is rows x columns."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', rows, columns, 0, 0))
    stage = SimpleNamespace(index=0)
    with open(slave, 'w') as terminal:
        progress = ConsoleProgress(terminal, interval=0, log_seconds=3600)
        progress.on_epoch_start(stage, 1, 10)
        for done in range(1, 11):
            progress.on_batch_end(done, lambda: {'acc': 0.5})
        progress.on_epoch_end(stage, 1, {'acc': 0.5, 'val acc': 0.25}, None)
    out = b''
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:         # the terminal's other end is closed: all was read
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode().replace('\r\n', '\n')


@pytest.mark.parametrize('rows, columns', [(0, 0), (24, 0), (0, 100)])
def test_a_terminal_of_no_size_gets_plain_progress_lines(rows, columns):
    """`script` and some CI and container pseudo-terminals report 0 x 0: tqdm drew nothing there."""
    out = on_terminal(rows, columns)
    assert '\r' not in out
    lines = out.splitlines()
    assert lines[0].startswith('Epoch     1 [acc 0.5000] 1 / 10 [') and lines[0].endswith('it/s]'), out
    assert lines[-1] == 'Epoch     1 [acc 0.5000, val acc 0.2500]'


def test_a_terminal_with_a_size_gets_the_live_bar():
    out = on_terminal(24, 100)
    assert '| 10 / 10 [' in out and '\r' in out
    assert out.split('\r')[-1] == 'Epoch     1 [acc 0.5000, val acc 0.2500]\n'


# ---- the summary's best epoch of a stage that trains several pipelines ---------------------------

GAN_ROWS = [{'val d_acc': 0.9998, 'val g_loss': 4.61}, {'val d_acc': 0.67, 'val g_loss': 1.23},
            {'val d_acc': 0.81, 'val g_loss': 1.02}]


def summary(training, best_metric=None):
    trainer = SimpleNamespace(store=SimpleNamespace(path='pretrained_gan'),
                              stages=[SimpleNamespace(index=0, training=training)])
    stream = io.StringIO()
    progress = ConsoleProgress(stream, best_metric=best_metric)
    progress.on_training_start(trainer, Progress())
    progress.on_training_end(Progress(epoch=3, stage=1, history={0: GAN_ROWS}), 60.0)
    return stream.getvalue()


def test_a_gan_stage_names_no_best_epoch_unless_the_spec_says_by_what():
    """A GAN's discriminator accuracy is highest when its generator is worst (epoch 1)."""
    text = summary(['discriminator', 'generator'])
    assert 'best val d_acc' not in text
    assert '  stage 0: no best epoch named: it trains 2 pipelines, so no one metric says which epoch is best; ' \
           'train.best_metric names one\n' in text
    assert '  stage 0: best val g_loss 1.0200 at epoch 3 of 3\n' in \
        summary(['discriminator', 'generator'], {'name': 'val g_loss', 'mode': 'min'})
    assert '  stage 0: best val d_acc 0.9998 at epoch 1 of 3\n' in summary(['classifier']), 'one pipeline: as before'
    stage = status._stage(0, GAN_ROWS, 1, None, pipelines=2)             # status and plot follow the same rule
    assert (stage.monitored, stage.best_epoch) == (None, None)
    stage = status._stage(0, GAN_ROWS, 1, {'name': 'val g_loss', 'mode': 'min'}, pipelines=2)
    assert (stage.monitored, stage.best_epoch) == ('val g_loss', 3)


def test_override_rules():
    original = {'definitions': [{'name': 'a', 'spec': {'x': 1, 'y': [1, 2]}}, {'name': 'b', 'spec': {}}],
                'pipelines': {'p': {'k': 1}}}
    merged = merge(original, {
        'definitions': {'options': [{'name': 'a', 'spec': {'y': [3]}}, {'name': 'c'}],
                        'replace_strategy': 'override', 'override_key': ['name']},
        'pipelines': {'p': {'replace_strategy': 'replace', 'options': {'z': 2}}}})
    assert merged == {'definitions': [{'name': 'a', 'spec': {'x': 1, 'y': [3]}}, {'name': 'b', 'spec': {}},
                                      {'name': 'c'}], 'pipelines': {'p': {'z': 2}}}
    assert original['definitions'][0]['spec']['y'] == [1, 2], 'the original is not modified'
    with pytest.raises(MergeError):
        merge(original, {'pipelines': {'replace_strategy': 'swap', 'options': {}}})


def test_components():
    assert BatchDivide()([(1, 'a'), (2, 'b')]) == ([1, 2], ['a', 'b'])
    assert EpochsCompleted(2)(2, []) and not EpochsCompleted(2)(1, [])
    accuracy = Accuracy()
    accuracy.update(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 0]))
    accuracy.update(torch.tensor([5]), torch.tensor([5]))
    assert accuracy.compute() == pytest.approx(0.6)
    assert accuracy.state_dict() == {'correct': 3, 'total': 5}
    accuracy.reset()
    assert accuracy.compute() != accuracy.compute()        # nothing seen: nan
    import torchmetrics
    assert isinstance(Accuracy(task='multiclass', num_classes=3), torchmetrics.classification.MulticlassAccuracy)
    with pytest.raises(TypeError, match='without "task" takes no arguments'):
        Accuracy(num_classes=3)


def test_store_falls_back_to_the_newest_intact_checkpoint(tmp_path):
    store = SessionStore.create(tmp_path / 's', '{}', {'seed': 1}, {'n': 0})
    store.save_checkpoint(1, {'n': 1})
    store.save_checkpoint(2, {'n': 2})
    (tmp_path / 's' / 'checkpoints' / 'epoch_2.sha256').unlink()     # killed between the two writes
    assert store.latest_checkpoint() == ((1, 0), {'n': 1})
    with open(tmp_path / 's' / 'checkpoints' / 'epoch_1.pt', 'r+b') as f:
        f.write(b'x')                                                     # torn write
    assert store.latest_checkpoint() == ((0, 0), {'n': 0})
    assert not [p for p in os.listdir(tmp_path / 's' / 'checkpoints') if p.startswith('.tmp')]


@pytest.mark.parametrize('kind, name', [('training', 'training.json'), ('evaluation', 'evaluation.json'),
                                        ('inference', 'inference.json')])
def test_json_schemas_accept_the_examples(kind, name):
    import json

    import forked
    import jsonschema
    schema = json.loads(forked.run([sys.executable, '-m', 'torchassistant.schema', kind], cwd=REPO,
                                       capture_output=True, text=True, check=True).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    with open(os.path.join(REPO, 'examples', 'mnist', name)) as f:
        example = json.load(f)
    jsonschema.validate(example, schema)
    broken = dict(example, sesion_dir='typo')
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_mean_weights_batches_by_their_size():
    from torchassistant.run.meters import Mean
    for make in (float, torch.tensor):
        mean = Mean()
        mean.add(make(1.0), 3)
        mean.add(make(3.0), 1)
        assert mean.compute() == pytest.approx(1.5)
    first = torch.tensor(2.0)
    mean = Mean()
    mean.add(first, 1)
    mean.add(torch.tensor(4.0), 1)
    assert first.item() == 2.0, 'the first batch value is not modified in place'


def test_a_fast_epoch_still_draws_its_last_line():
    """Our own throttle decides when to draw (tqdm's would swallow the final redraw of a quick epoch)."""
    stream = _Terminal()
    progress = ConsoleProgress(stream)
    progress.on_epoch_start(_Stage(), 1, 10)
    for done in range(1, 11):
        progress.on_batch_end(done, lambda: {'acc': 0.5})
    assert re.search(r'\| 10 / 10 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+it/s\]$', stream.getvalue()), stream.getvalue()


def test_loaders_with_workers_run_with_the_objects_before_them_frozen():
    import gc

    from torch.utils.data import DataLoader

    from torchassistant.run.data import settled_for_workers
    with settled_for_workers([DataLoader([1, 2])]):
        assert gc.get_freeze_count() == 0                  # no workers, nothing to spare them
    with settled_for_workers([DataLoader([1, 2]), DataLoader([1, 2], num_workers=1)]):
        assert gc.get_freeze_count() > 1000                # what the forked workers inherit, torch's included
    assert gc.get_freeze_count() == 0


def test_meter_states_saved_before_accuracy_left_torchmetrics_still_load():
    from torchassistant.run.meters import _CallableMetric, _load_meter_state
    accuracy = Accuracy()
    _load_meter_state(accuracy, {'torchmetrics': {'correct': torch.tensor(3), 'total': torch.tensor(5),
                                                  '_update_count': 2}})
    assert accuracy.compute() == pytest.approx(0.6)
    mean = _CallableMetric(lambda p, t: 1.0)
    _load_meter_state(mean, {'mean': {'total': 2.0, 'count': 4}})
    assert mean.compute() == pytest.approx(0.5)


# ---- .gitignore ignores the session folders the examples write ------------------------------------

def test_gitignore_lists_every_example_session_folder():
    with open(os.path.join(REPO, '.gitignore')) as f:
        ignored = {line.strip() for line in f}
    examples = os.path.join(REPO, 'examples')
    for name in sorted(os.listdir(examples)):
        path = os.path.join(examples, name, 'training.json')
        if os.path.isfile(path):
            with open(path) as f:
                session = json.load(f)['session_dir']
            assert f'{session}/' in ignored, f'examples/{name} writes {session}/, which .gitignore does not list'
