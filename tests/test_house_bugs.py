"""Bugs issue 15 found on the way, through the commands on the tutorial project (each test failed before
its fix): status and plot of a concise session, a check seeded from the spec, and the message for a
session_dir that is relative to the current folder. The others are tested where their pieces are:
progress on a terminal of no size, the best epoch of a GAN-like stage and .gitignore in test_units.py,
`status --json`'s stage of a finished session in test_plots_status.py."""
import json
import os

import pytest
from conftest import REPO, write_json

from torchassistant.cli import commands
from torchassistant.core.errors import UsageError

pytestmark = pytest.mark.e2e


# ---- status and plot read the spec training runs: a concise spec's expansion ---------------------

def test_status_and_plot_of_a_concise_session(tmp_path, tiny_mnist, monkeypatch, capsys):
    """The shipped concise example leaves out "train": status and plot crashed with KeyError: 'train'."""
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(REPO, 'examples', 'mnist-concise', 'training.json')) as f:
        spec = json.load(f)
    for definition in spec['initialize']['definitions']['data']:
        definition['spec']['args'] = [tiny_mnist]
    write_json(tmp_path / 'training.json', spec)
    commands.init('training.json')
    capsys.readouterr()
    assert 'train' not in json.loads((tmp_path / 'pretrained-concise' / 'spec.json').read_text())

    report = commands.status('pretrained-concise', as_json=True)
    assert (report.stage, report.stages_done, report.num_stages, report.complete) == (0, 0, 1, False)
    assert json.loads(capsys.readouterr().out)['stages'][0]['state'] == 'not started'
    with pytest.raises(UsageError, match='has no finished epoch yet, so there is nothing to plot'):
        commands.plot('pretrained-concise')


# ---- check is seeded from the spec -----------------------------------------------------------------

def test_check_prints_the_same_numbers_every_time(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    runs = []
    for seed in (2024, 2024, 7):
        spec = json.loads((project / 'my_examples' / 'mnist' / 'training.json').read_text())
        write_json(project / 'check.json', {**spec, 'seed': seed})
        assert commands.check('check.json')
        runs.append(capsys.readouterr().out)
    assert 'pipeline "training_pipeline": OK [acc ' in runs[0]
    assert runs[0] == runs[1], 'the same seed: the same weights and batches'
    assert runs[0] != runs[2], 'another seed: other numbers'


# ---- session_dir is relative to the current folder; the message says where it looked -------------

def test_a_session_beside_the_spec_but_not_in_the_current_folder(project, monkeypatch):
    monkeypatch.syspath_prepend(str(project))
    spec_folder = project / 'my_examples' / 'mnist'
    monkeypatch.chdir(spec_folder)
    commands.init('training.json')                      # my_examples/mnist/pretrained
    monkeypatch.chdir(project)
    with pytest.raises(UsageError) as error:
        commands.evaluate('my_examples/mnist/evaluation.json')
    message = error.value.message
    assert message.startswith('my_examples/mnist/evaluation.json:2:')
    assert f'session folder "pretrained" does not exist in the current folder ({project})' in message
    assert 'not to the folder of the spec file ("my_examples/mnist")' in message
    assert 'It does exist relative to the spec file, as "my_examples/mnist/pretrained": run the command ' \
           'from "my_examples/mnist", or set "session_dir": "my_examples/mnist/pretrained" in the spec' in message

    (spec_folder / 'pretrained').rename(spec_folder / 'elsewhere')
    with pytest.raises(UsageError) as error:
        commands.infer('my_examples/mnist/inference.json', ['my_examples/mnist/digit_2.png'])
    message = error.value.message
    assert f'does not exist in the current folder ({project})' in message
    assert 'not to the folder of the spec file ("my_examples/mnist"); it is not there either. Create it ' \
           'with: ' in message and message.endswith(' init SPEC.json')
