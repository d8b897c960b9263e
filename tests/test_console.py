"""The `torchassistant` console command (and `python -m torchassistant`) through its command line, in
subprocesses on tiny real MNIST data: every subcommand, --version, --help examples, the hints that name
the form the user ran, exit codes, --debug, and `schema` into a closed pipe."""
import json
import os
import re
import shutil
import subprocess
import sys

import forked
import pytest
from conftest import REPO, make_project, run_script, tutorial_spec, write_json

import torchassistant
from torchassistant import cli
from torchassistant.cli import hints
from torchassistant.spec.schema import SCHEMAS

pytestmark = pytest.mark.e2e


COMMANDS = ['init', 'train', 'evaluate', 'infer', 'check', 'status', 'plot', 'schema']
METRIC_ROW = r'\[acc \d\.\d{4}, loss \d+\.\d{4}, val acc \d\.\d{4}, val loss \d+\.\d{4}\]'


def console(*args, cwd, timeout=300, **kwargs):
    """`python -m torchassistant ARGS` in a subprocess, as a user runs it (output is not a terminal)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return forked.run([sys.executable, '-m', 'torchassistant', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    return result


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_mnist):
    """A project whose session "pretrained" was created and trained (2 epochs) through the console command;
    the outputs of those two runs are kept for the tests."""
    root = make_project(str(tmp_path_factory.mktemp('console')), tiny_mnist)
    init = ok(console('init', 'my_examples/mnist/training.json', cwd=root))
    train = ok(console('train', 'pretrained', cwd=root))
    return root, init, train


def test_init_and_train_name_the_console_form(trained):
    root, init, train = trained
    assert 'Start training with: python -m torchassistant train pretrained' in init.stdout
    assert 'python train.py' not in init.stdout
    rows = [line for line in train.stdout.splitlines() if re.fullmatch(r'Epoch +\d+ ' + METRIC_ROW, line)]
    assert [line.split()[1] for line in rows] == ['1', '2'], train.stdout
    assert sorted(os.listdir(os.path.join(root, 'pretrained', 'metrics'))) == ['0.csv']
    again = ok(console('train', 'pretrained', cwd=root))
    assert 'Training is complete' in again.stdout


def test_the_root_scripts_name_their_own_form(tmp_path, tiny_mnist):
    make_project(str(tmp_path), tiny_mnist)
    result = run_script('init.py', 'my_examples/mnist/training.json', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'Start training with: python train.py pretrained' in result.stdout
    result = run_script('infer.py', 'my_examples/mnist/inference.json', cwd=tmp_path)
    assert result.returncode == 2
    assert 'python infer.py needs at least one input' in result.stderr
    assert 'e.g. python infer.py my_examples/mnist/inference.json digit.png' in result.stderr


def test_evaluate_prints_the_last_validation_row(trained):
    root, _, train = trained
    result = ok(console('evaluate', 'my_examples/mnist/evaluation.json', '--device', 'cpu', cwd=root))
    assert re.fullmatch(METRIC_ROW, result.stdout.strip()), result.stdout
    last = [line for line in train.stdout.splitlines() if line.startswith('Epoch     2 [')][-1]
    assert result.stdout.strip() == last[len('Epoch     2 '):]


def test_infer_default_output_is_the_tutorials(trained):
    root = trained[0]
    result = ok(console('infer', 'my_examples/mnist/inference.json', 'my_examples/mnist/digit_2.png',
                        '--precision', '32', cwd=root))
    lines = result.stdout.splitlines()
    assert lines[0] == "Running inference on:  ['my_examples/mnist/digit_2.png']"
    assert lines[1].startswith('y_hat:tensor([[')
    assert len(re.findall(r'-?\d+\.\d+', result.stdout)) == 10
    result = console('infer', 'my_examples/mnist/inference.json', cwd=root)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert 'python -m torchassistant infer needs at least one input' in result.stderr


def test_check_and_init_check_run_one_batch_per_pipeline(trained):
    root = trained[0]
    for args in (['check'], ['init', '--check']):
        result = ok(console(*args, 'my_examples/mnist/training.json', cwd=root))
        assert 'my_examples/mnist/training.json: spec is valid' in result.stdout
        assert re.search(r'pipeline "training_pipeline": OK \[acc', result.stdout), result.stdout
        assert re.search(r'pipeline "evaluation_pipeline": OK \[val acc', result.stdout), result.stdout
    expanded = ok(console('check', '--expanded', 'my_examples/mnist/training.json', cwd=root))
    with open(os.path.join(root, 'my_examples', 'mnist', 'training.json')) as f:
        written = json.load(f)
    assert json.loads(expanded.stdout)['initialize'] == written['initialize']     # explicit: nothing to fill in
    result = console('init', '--expanded', 'my_examples/mnist/training.json', cwd=root)
    assert result.returncode == 2 and '--expanded goes with --check' in result.stderr


def test_check_debug_shows_the_traceback_of_a_failing_pipeline(tmp_path, tiny_mnist):
    spec = tutorial_spec(tiny_mnist, collator='torchassistant.collators.BatchDivide')   # hands the model PIL images
    make_project(str(tmp_path), tiny_mnist)
    write_json(tmp_path / 'bad.json', spec)
    plain = console('check', 'bad.json', cwd=tmp_path)
    assert plain.returncode == 1
    assert 'pipeline "training_pipeline": FAILED' in plain.stdout
    assert 'Traceback' not in plain.stderr
    debug = console('--debug', 'check', 'bad.json', cwd=tmp_path)        # --debug after the command: below
    assert debug.returncode == 1
    assert_tracebacks_of_both_pipelines(debug.stderr)
    assert 'pipeline "evaluation_pipeline": FAILED' in debug.stdout
    script = run_script('init.py', '--check', '--debug', 'bad.json', cwd=tmp_path)
    assert script.returncode == 1
    assert_tracebacks_of_both_pipelines(script.stderr)


def assert_tracebacks_of_both_pipelines(stderr):
    """Each failing pipeline's full chained traceback: the user's TypeError, then the framework's error."""
    assert 'Traceback (most recent call last)' in stderr
    ends = re.findall(r'^torchassistant\.core\.errors\.UserCodeError: pipeline "(\w+)"', stderr, re.M)
    assert ends == ['training_pipeline', 'evaluation_pipeline'], stderr
    assert stderr.count('TypeError: conv2d() received an invalid combination') >= 2


def test_status_and_plot_through_the_console(trained):
    root = trained[0]
    status = ok(console('status', 'pretrained', cwd=root))
    assert 'training complete: all 1 stage finished, 2 epochs' in status.stdout
    plot = ok(console('plot', 'pretrained', cwd=root))
    assert plot.stdout.strip() == f'wrote {os.path.join("pretrained", "plots", "stage_0.png")}'
    assert os.path.getsize(os.path.join(root, 'pretrained', 'plots', 'stage_0.png')) > 10_000


def test_schema_prints_the_json_schema(tmp_path):
    for kind in SCHEMAS:
        result = ok(console('schema', kind, cwd=tmp_path))
        assert json.loads(result.stdout) == SCHEMAS[kind]


@pytest.mark.parametrize('argv', [['-m', 'torchassistant.schema', 'training'],
                                  ['-m', 'torchassistant', 'schema', 'training']], ids=['module', 'console'])
def test_schema_into_a_closed_pipe_exits_quietly(argv, tmp_path):
    """`... schema training | head`: the reader stops early; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)           # the reader is gone before anything is written
    env = dict(os.environ, PYTHONPATH=REPO)
    try:
        result = forked.run([sys.executable, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert result.stderr == ''
    assert result.returncode == 1


def test_version_and_help(tmp_path):
    result = ok(console('--version', cwd=tmp_path))
    assert result.stdout.strip() == f'torchassistant {torchassistant.version}'
    result = ok(console('--help', cwd=tmp_path))
    for command in COMMANDS:
        assert re.search(rf'^    {command} ', result.stdout, re.M), result.stdout


@pytest.mark.parametrize('command', COMMANDS)
def test_each_command_help_has_an_example(command, capsys, console_state):
    assert cli.main([command, '--help'], prog='python -m torchassistant') == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: python -m torchassistant {command} ')
    assert re.search(rf'^examples?:\n  python -m torchassistant {command} \S', out, re.M), out
    assert 'exit codes: 0 ok, 1 failure while running, 2 bad spec or usage, 130 interrupted' in out
    if command in ('init', 'train', 'evaluate', 'infer'):      # the root script shows its own form
        assert getattr(cli, f'{command}_main')(['--help']) == 0
        assert re.search(rf'^  python {command}\.py \S', capsys.readouterr().out, re.M)


@pytest.fixture
def console_state():
    """In-process runs of the console command set how hints are worded; put it back for other tests."""
    yield
    hints.use_console(None)


def test_bad_command_lines_exit_2_with_one_message(tmp_path):
    for args, says in ((['bogus'], "invalid choice: 'bogus'"), ([], 'the following arguments are required: COMMAND'),
                       (['train'], 'the following arguments are required: session_dir'),
                       (['status', 'nowhere'], 'session folder "nowhere" does not exist'),
                       (['plot', 'nowhere'], 'session folder "nowhere" does not exist'),
                       (['schema', 'train'], "invalid choice: 'train'")):
        result = console(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith('error: ') and says in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
        assert os.listdir(tmp_path) == []


def test_installed_console_command_works_from_another_folder(trained, tmp_path):
    executable = shutil.which('torchassistant')
    if executable is None:
        pytest.skip('the package is not installed (pip install -e .), so there is no torchassistant command')
    result = subprocess.run([executable, '--version'], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f'torchassistant {torchassistant.version}'
    session = os.path.join(trained[0], 'pretrained')
    result = subprocess.run([executable, 'status', session], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert f'Session "{session}"' in result.stdout
