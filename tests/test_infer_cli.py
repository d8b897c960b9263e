"""`torchassistant infer` for real use, on a session trained on tiny real MNIST data: --json (one object
per example on stdout, nothing else there), --from FILE / --from - in batches of the data loader's batch
size with results streamed per batch, output devices called with the results dict, and bad input."""
import json
import os
import queue
import re
import subprocess
import sys
import threading

import forked
import pytest
from conftest import REPO, make_project, write_json
from test_console import console, ok

from torchassistant import cli
from torchassistant.cli import hints

pytestmark = pytest.mark.e2e


EXTRAS = '''
from my_examples.mnist import InputConverter


class NoisyConverter(InputConverter):
    def __call__(self, path):
        print(f'converting {path}')          # user code printing on stdout
        return super().__call__(path)


class Recorder:
    """An output device as the reference has them: called with the dict of results."""
    def __call__(self, results):
        for name, value in results.items():
            print(f'device got {name} {tuple(value.shape)}')


class Mean:
    def __init__(self, session):
        pass

    def __call__(self, results):
        return {name: value.mean() for name, value in results.items()}     # one number, not one per example
'''
DIGITS = [f'my_examples/mnist/digit_{d}.png' for d in range(10)]
SPEC = 'my_examples/mnist/inference.json'


@pytest.fixture(scope='module')
def project(tmp_path_factory, tiny_mnist):
    """A project with a session trained one epoch, user code for inference, and inference specs:
    small.json runs the test loader in batches of 2."""
    root = make_project(str(tmp_path_factory.mktemp('infer')), tiny_mnist, epochs=1)
    with open(os.path.join(root, 'my_examples', 'extras.py'), 'w') as f:
        f.write(EXTRAS)
    ok(console('init', 'my_examples/mnist/training.json', cwd=root))
    ok(console('train', 'pretrained', cwd=root))
    with open(os.path.join(root, SPEC)) as f:
        base = json.load(f)
    loader = {'group': 'data_loaders', 'name': 'test_loader', 'spec': {'kwargs': {'batch_size': 2}}}
    write_json(os.path.join(root, 'small.json'), {**base, 'initialize': {'definitions': {
        'options': [loader], 'replace_strategy': 'override', 'override_key': ['group', 'name']}}})
    converter = {'input_converter': {'class': 'my_examples.extras.NoisyConverter'}}
    write_json(os.path.join(root, 'noisy.json'), {**base, 'inputs_meta': [converter]})
    write_json(os.path.join(root, 'device.json'), {**base, 'output_device': {'class': 'my_examples.extras.Recorder'}})
    write_json(os.path.join(root, 'mean.json'), {**base, 'post_processor': {'class': 'my_examples.extras.Mean'}})
    return root


def json_lines(stdout):
    return [json.loads(line) for line in stdout.splitlines()]


def numbers(text):
    return [float(v) for v in re.findall(r'-?\d+\.\d+(?:e[-+]\d+)?', text)]


def test_json_is_one_object_per_example_with_the_default_outputs_values(project):
    inputs = DIGITS[2:5]
    printed = ok(console('infer', SPEC, *inputs, cwd=project))
    assert printed.stdout.splitlines()[0] == f'Running inference on:  {inputs}'
    assert printed.stdout.splitlines()[1].startswith('y_hat:tensor([[')
    result = ok(console('infer', '--json', SPEC, *inputs, cwd=project))
    objects = json_lines(result.stdout)
    assert [list(o) for o in objects] == [['input', 'y_hat']] * 3
    assert [o['input'] for o in objects] == inputs
    assert all(len(o['y_hat']) == 10 and all(isinstance(v, float) for v in o['y_hat']) for o in objects)
    # the same numbers the tutorial's output prints (4 decimals), example by example
    assert [v for o in objects for v in o['y_hat']] == pytest.approx(numbers(printed.stdout), abs=1e-4)


def test_json_keeps_stdout_for_json_only(project):
    result = ok(console('infer', '--json', 'noisy.json', DIGITS[2], DIGITS[7], cwd=project))
    assert [o['input'] for o in json_lines(result.stdout)] == [DIGITS[2], DIGITS[7]]
    assert f'converting {DIGITS[2]}\nconverting {DIGITS[7]}\n' in result.stderr     # user prints go to stderr


def test_from_file_runs_in_batches_of_the_loader_batch_size(project, tmp_path):
    listing = tmp_path / 'digits.txt'
    listing.write_text('\n'.join(DIGITS[:3]) + '\n\n' + '\n'.join(DIGITS[3:5]) + '\n')     # a blank line is skipped
    printed = ok(console('infer', '--from', listing, 'small.json', cwd=project))
    blocks = re.findall(r"^Running inference on:  (\[.*\])$", printed.stdout, re.M)
    assert [eval(block) for block in blocks] == [DIGITS[0:2], DIGITS[2:4], DIGITS[4:5]]
    assert printed.stdout.count('y_hat:tensor([[') == 3

    result = ok(console('infer', '--json', '--from', listing, 'small.json', cwd=project))
    objects = json_lines(result.stdout)
    assert [o['input'] for o in objects] == DIGITS[:5]
    assert [v for o in objects for v in o['y_hat']] == pytest.approx(numbers(printed.stdout), abs=1e-4)
    alone = json_lines(ok(console('infer', '--json', SPEC, DIGITS[3], cwd=project)).stdout)[0]
    assert objects[3]['y_hat'] == pytest.approx(alone['y_hat'], abs=1e-5)


def test_from_stdin_streams_each_batch_as_it_finishes(project):
    """The first batch's results arrive while its input is still open: results are not held back."""
    env = dict(os.environ, PYTHONPATH=REPO)
    process = forked.Popen([sys.executable, '-m', 'torchassistant', 'infer', '--json', '--from', '-', 'small.json'],
                               cwd=project, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        process.stdin.write(f'{DIGITS[6]}\n{DIGITS[1]}\n')      # one full batch of 2
        process.stdin.flush()
        first = [lines.get(timeout=240) for _ in range(2)]
        assert process.poll() is None, 'still waiting for more input'
        assert [json.loads(line)['input'] for line in first] == [DIGITS[6], DIGITS[1]]
        process.stdin.write(f'{DIGITS[9]}\n')
        process.stdin.close()
        assert process.wait(timeout=240) == 0, process.stderr.read()
        assert json.loads(lines.get(timeout=10))['input'] == DIGITS[9]
        assert lines.empty()
    finally:
        process.kill()
        process.wait()


def test_output_device_is_called_with_the_results(project):
    result = ok(console('infer', 'device.json', DIGITS[0], DIGITS[8], cwd=project))
    assert result.stdout.splitlines() == [f'Running inference on:  {[DIGITS[0], DIGITS[8]]}',
                                          'device got y_hat (2, 10)']


# ---- bad input: one message, exit code 2, in-process through the console's main ------------------

@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(project)
    yield project
    hints.use_console(None)
    for name in [n for n in sys.modules if n == 'my_examples' or n.startswith('my_examples.')]:
        del sys.modules[name]


@pytest.mark.parametrize('argv, says', [
    (['--from', 'missing.txt', SPEC], '--from missing.txt: cannot read it (No such file or directory)'),
    (['--from', 'my_examples', SPEC], '--from my_examples: that is a folder'),
    (['--from', 'list.txt', SPEC, DIGITS[0]], 'inputs were given both after the spec (1) and in --from list.txt'),
    (['--from', 'list.txt', SPEC], "list.txt:2: input 'my_examples/mnist/digit_X.png' does not exist"),
    (['--json', 'mean.json', DIGITS[0], DIGITS[1]],
     '--json writes one object per example, but result "y_hat" (Tensor() float32 on cpu) has no entry per example'),
], ids=['from-missing', 'from-folder', 'both', 'bad-line', 'json-not-per-example'])
def test_bad_inference_input(argv, says, in_project, capsys):
    with open('list.txt', 'w') as f:
        f.write(f'{DIGITS[0]}\nmy_examples/mnist/digit_X.png\n')
    code = cli.main(['infer', *argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith('error: ') and says in err, err
    assert 'Traceback' not in err
    assert out == ''


def test_json_values_of_tensor_results_are_exact_with_nan_and_inf_as_null():
    import torch

    from torchassistant.assembly.inference import _per_example
    from torchassistant.core.errors import UsageError
    finite = torch.tensor([[0.1, -2.5], [3.0, 1e-8]])
    assert _per_example('y', finite, 2) == finite.tolist() == json.loads(json.dumps(finite.tolist()))
    assert _per_example('y', torch.tensor([[1.0, float('nan')], [float('inf'), -float('inf')]]), 2) == [[1.0, None], [None, None]]
    assert _per_example('y', torch.tensor([[1.0, float('nan')]], dtype=torch.bfloat16), 1) == [[1.0, None]]
    assert _per_example('label', torch.tensor([3, 7]), 2) == [3, 7]
    assert _per_example('ok', torch.tensor([True, False]), 2) == [True, False]
    with pytest.raises(UsageError, match='--json cannot write result "z"'):
        _per_example('z', torch.tensor([1 + 2j]), 1)
