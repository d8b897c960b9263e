"""docs/mnist-tutorial.md followed as a new user would: its code blocks copied verbatim into
my_examples/mnist (only the collator line changed, as the tutorial's own BatchDivide hands the model
PIL images), its commands run in order, its outputs compared in form. MNIST files already in
data/MNIST/raw (here the first few hundred real digits of the shipped sample)."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from conftest import REPO, run_script, write_tiny_mnist

TUTORIAL = os.path.join(REPO, 'docs', 'mnist-tutorial.md')


def code_blocks():
    with open(TUTORIAL) as f:
        return re.findall(r'^```\n(.*?)^```', f.read(), re.S | re.M)


def block(blocks, start):
    """The one block that starts with `start`."""
    found = [b for b in blocks if b.startswith(start)]
    assert len(found) == 1, (start, len(found))
    return found[0]


def assemble(blocks):
    """(__init__.py, training.json, evaluation.json, inference.json) as the tutorial builds them."""
    python = [block(blocks, s) for s in ('import torch', 'class LeNet5', 'def reverse_onehot',
                                         'class MyCollator', 'class InputConverter')]
    first = blocks.index('{\n    "session_dir": "pretrained",\n')     # the opening, alone in its block
    last = blocks.index(block(blocks, '    "train": {'))
    fragments = [b for b in blocks[first:last + 1] if b.startswith(('{', ' '))]   # prose snippets are not
    training = ''.join(fragments)
    literal = '"class": "torchassistant.collators.BatchDivide"'
    assert training.count(literal) == 1
    training = training.replace(literal, '"class": "my_examples.mnist.MyCollator"')
    return ('\n\n'.join(python), training, block(blocks, '{\n    "session_dir": "pretrained",\n    "validation'),
            block(blocks, '{\n    "session_dir": "pretrained",\n    "inference'))


def command(blocks, start):
    """A command line of the tutorial as argv: the script and its arguments."""
    return shlex.split(block(blocks, start))[1:]


def test_the_tutorial_verbatim(tmp_path):
    blocks = code_blocks()
    init_code, training, evaluation, inference = assemble(blocks)
    package = tmp_path / 'my_examples' / 'mnist'
    package.mkdir(parents=True)
    (tmp_path / 'my_examples' / '__init__.py').write_text('')
    (package / '__init__.py').write_text(init_code)
    (package / 'training.json').write_text(training)
    (package / 'evaluation.json').write_text(evaluation)
    (package / 'inference.json').write_text(inference)
    json.loads(training)       # the fragments make one valid spec
    write_tiny_mnist(str(tmp_path / 'data'))

    result = run_script(*command(blocks, 'python init.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'pretrained').is_dir()

    result = run_script(*command(blocks, 'python train.py'), cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    shown = block(blocks, 'Training stage 0').splitlines()
    lines = result.stdout.splitlines()
    assert lines[0] == shown[0]
    assert len(lines) == 21 and all(re.fullmatch(r'Epoch +\d+ \[acc [\d.]+, loss [\d.]+, val acc [\d.]+, '
                                                 r'val loss [\d.]+\]', line) for line in lines[1:])
    assert (tmp_path / 'pretrained' / 'metrics' / '0.csv').is_file()

    result = run_script(*command(blocks, 'python evaluate.py'), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    shape = lambda text: re.sub(r'\d+\.\d{4}', 'N', text.strip())  # noqa: E731  the numbers differ
    assert shape(result.stdout) == shape(block(blocks, '[acc')) == '[acc N, loss N, val acc N, val loss N]'

    snippet = block(blocks, 'from torchvision import datasets')
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, '-c', snippet], cwd=tmp_path, env=env, check=True, timeout=120)
    shutil.copy(tmp_path / 'digit_2.png', package / 'digit_2.png')     # "Now copy that file ..."
    argv = command(blocks, 'python infer.py my_examples')
    result = run_script(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == f"Running inference on:  ['{argv[-1]}']"
    assert re.fullmatch(r'y_hat:tensor\(\[\[.*', out[1])
    assert len(re.findall(r'-?\d+\.\d+', result.stdout)) == 10
