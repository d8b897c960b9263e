"""Shared fixtures: tiny real MNIST data, a tutorial-style user project, and running the scripts."""
import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, 'examples', 'mnist', 'mnist-sample')
EXAMPLE = os.path.join(REPO, 'examples', 'mnist')


def write_tiny_mnist(root, train=320, test=96):
    """ROOT/MNIST/raw with the first `train`/`test` real digits of the shipped sample, as IDX files."""
    raw = os.path.join(root, 'MNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    for prefix, count in (('train', train), ('t10k', test)):
        for kind, header, item in (('images-idx3', 16, 784), ('labels-idx1', 8, 1)):
            with gzip.open(os.path.join(SAMPLE, f'{prefix}-{kind}-ubyte.gz'), 'rb') as f:
                data = bytearray(f.read(header + count * item))
            data[4:8] = count.to_bytes(4, 'big')
            with open(os.path.join(raw, f'{prefix}-{kind}-ubyte'), 'wb') as f:
                f.write(data)
    return root


@pytest.fixture(scope='session')
def tiny_mnist(tmp_path_factory):
    return write_tiny_mnist(str(tmp_path_factory.mktemp('mnist-data')))


def tutorial_spec(data_root, epochs=2, collator='my_examples.mnist.MyCollator', num_workers=0):
    """The tutorial's training.json, with the data root, epochs and collator given."""
    with open(os.path.join(EXAMPLE, 'training.json')) as f:
        spec = json.load(f)
    text = json.dumps(spec).replace('examples.mnist.', 'my_examples.mnist.')
    spec = json.loads(text)
    for definition in spec['initialize']['definitions']:
        if definition['group'] == 'datasets':
            definition['spec']['args'] = [data_root]
        if definition['group'] == 'collators':
            definition['spec']['class'] = collator
        if definition['group'] == 'data_loaders':
            definition['spec']['kwargs']['num_workers'] = num_workers
    spec['train']['stages'][0]['stop_condition']['kwargs']['num_epochs'] = epochs
    return spec


def make_project(root, data_root, epochs=2):
    """A user's project as the tutorial builds it, in `root`: my_examples/mnist with the tutorial's code,
    its three specs (training on `data_root` for `epochs` epochs, no loader workers) and the ten digit
    images. The one tutorial project of the suite: `project` for a test, this for a module's fixture."""
    package = os.path.join(root, 'my_examples', 'mnist')
    os.makedirs(package)
    open(os.path.join(root, 'my_examples', '__init__.py'), 'w').close()
    shutil.copy(os.path.join(EXAMPLE, '__init__.py'), package)
    for digit in range(10):
        shutil.copy(os.path.join(EXAMPLE, f'digit_{digit}.png'), package)
    write_json(os.path.join(package, 'training.json'), tutorial_spec(data_root, epochs=epochs))
    for name in ('evaluation.json', 'inference.json'):
        with open(os.path.join(EXAMPLE, name)) as f:
            text = f.read().replace('examples.mnist.', 'my_examples.mnist.')
        with open(os.path.join(package, name), 'w') as f:
            f.write(text)
    return root


@pytest.fixture
def project(tmp_path, tiny_mnist):
    """A user's project folder as the tutorial builds it (`make_project`), training for 2 epochs."""
    return make_project(tmp_path, tiny_mnist)


def write_json(path, data):
    with open(path, 'w') as f:
        json.dump(data, f, indent=4)


def run_script(script, *args, cwd, timeout=300, **kwargs):
    """Run one of the root scripts in a subprocess, as a user would; output is not a terminal."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def folder_snapshot(path):
    """{relative path: bytes} of every file under `path`."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, 'rb') as f:
                out[os.path.relpath(full, path)] = f.read()
    return out
