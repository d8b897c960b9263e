"""Fast unit tests of the pieces: loader locations, progress line, overrides, store, components."""
import io
import re
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from torchassistant.collators import BatchDivide
from torchassistant.errors import SpecError
from torchassistant.metrics import Accuracy
from torchassistant.progress import ConsoleProgress, best_epoch
from torchassistant.spec.loader import parse
from torchassistant.spec.merge import MergeError, merge
from torchassistant.stop_conditions import EpochsCompleted
from torchassistant.store import SessionStore

from conftest import REPO, tutorial_spec, write_json


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


@pytest.mark.parametrize('signum, code', [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_checkpoint_where_they_stop_and_resume_continues(tmp_path, tiny_mnist, signum, code):
    import shutil
    package = tmp_path / 'my_examples' / 'mnist'
    package.mkdir(parents=True)
    (tmp_path / 'my_examples' / '__init__.py').write_text('')
    shutil.copy(os.path.join(REPO, 'examples', 'mnist', '__init__.py'), package / '__init__.py')
    write_json(package / 'training.json', tutorial_spec(tiny_mnist, epochs=3))
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, os.path.join(REPO, 'init.py'), 'my_examples/mnist/training.json'],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    process = subprocess.Popen([sys.executable, os.path.join(REPO, 'train.py'), 'pretrained'], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / 'pretrained' / 'checkpoints' / 'epoch_1.sha256').exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert f'training stopped by {signal.Signals(signum).name} in epoch 2' in err and 'Traceback' not in err
    assert 'a checkpoint was saved there' in err and 'python train.py pretrained' in err
    saved = SessionStore(str(tmp_path / 'pretrained')).latest_checkpoint()[0]
    assert saved.epoch == 1 and saved.batch >= 1          # where it stopped, inside epoch 2
    result = subprocess.run([sys.executable, os.path.join(REPO, 'train.py'), 'pretrained'], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f'Resuming "pretrained" after epoch 1 and {saved.batch} batches of the next' in result.stdout


@pytest.mark.parametrize('kind, name', [('training', 'training.json'), ('evaluation', 'evaluation.json'),
                                        ('inference', 'inference.json')])
def test_json_schemas_accept_the_examples(kind, name):
    import json
    import subprocess
    import jsonschema
    schema = json.loads(subprocess.run([sys.executable, '-m', 'torchassistant.schema', kind], cwd=REPO,
                                       capture_output=True, text=True, check=True).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    with open(os.path.join(REPO, 'examples', 'mnist', name)) as f:
        example = json.load(f)
    jsonschema.validate(example, schema)
    broken = dict(example, sesion_dir='typo')
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_mean_weights_batches_by_their_size():
    from torchassistant.pipeline import Mean
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
    from torchassistant.data import settled_for_workers
    with settled_for_workers([DataLoader([1, 2])]):
        assert gc.get_freeze_count() == 0                  # no workers, nothing to spare them
    with settled_for_workers([DataLoader([1, 2]), DataLoader([1, 2], num_workers=1)]):
        assert gc.get_freeze_count() > 1000                # what the forked workers inherit, torch's included
    assert gc.get_freeze_count() == 0


def test_meter_states_saved_before_accuracy_left_torchmetrics_still_load():
    from torchassistant.pipeline import _CallableMetric, _load_meter_state
    accuracy = Accuracy()
    _load_meter_state(accuracy, {'torchmetrics': {'correct': torch.tensor(3), 'total': torch.tensor(5),
                                                  '_update_count': 2}})
    assert accuracy.compute() == pytest.approx(0.6)
    mean = _CallableMetric(lambda p, t: 1.0)
    _load_meter_state(mean, {'mean': {'total': 2.0, 'count': 4}})
    assert mean.compute() == pytest.approx(0.5)
