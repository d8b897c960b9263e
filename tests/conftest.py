"""Shared fixtures: tiny real MNIST data, a tutorial-style user project, and running the scripts."""
import gzip
import json
import os
import shutil
import sys

import forked
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
    return forked.run([sys.executable, os.path.join(REPO, script), *map(str, args)], cwd=cwd, env=env,
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


# ---- one trained tutorial session, shared by the tests of export and serve -----------------------

def console_lines(*argv, cwd, timeout=300):
    """`python -m torchassistant ARGV` in a subprocess; (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    done = forked.run([sys.executable, '-m', 'torchassistant', *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope='session')
def shipped(tmp_path_factory):
    """A tutorial project (`make_project`) trained 1 epoch on 320 digits: `.root`; `.spec` (its
    inference.json) and `.classify` (the same with the Classification post-processor, raw scores kept);
    `.images`, PNG files of its first 256 test digits (paths relative to root) and `.answers`, what
    `infer --json` prints for each of them through `.classify`, in order (y_hat, label, probability, top)."""
    from types import SimpleNamespace

    from PIL import Image
    root = str(tmp_path_factory.mktemp('shipped'))
    data = write_tiny_mnist(os.path.join(root, 'data'), train=320, test=256)
    make_project(root, data, epochs=1)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    script = ('import sys; from torchassistant.cli import main; '
              'sys.exit(main(["init", "my_examples/mnist/training.json"]) or main(["train", "pretrained", "--quiet"]))')
    done = forked.run([sys.executable, '-c', script], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with gzip.open(os.path.join(SAMPLE, 't10k-images-idx3-ubyte.gz'), 'rb') as f:
        pixels = f.read(16 + 256 * 784)[16:]
    os.makedirs(os.path.join(root, 'digits'))
    images = [f'digits/test_{i}.png' for i in range(256)]
    for i, name in enumerate(images):
        Image.frombytes('L', (28, 28), pixels[i * 784:(i + 1) * 784]).save(os.path.join(root, name))
    with open(os.path.join(root, 'digits.txt'), 'w') as f:
        f.write('\n'.join(images) + '\n')
    spec = 'my_examples/mnist/inference.json'
    with open(os.path.join(root, spec)) as f:
        classify = dict(json.load(f), post_processor={'class': 'torchassistant.postprocessors.Classification',
                                                      'kwargs': {'top_k': 3, 'classes': 'test_ds', 'raw': True}})
    write_json(os.path.join(root, 'my_examples', 'mnist', 'classify.json'), classify)
    done = forked.run([sys.executable, '-m', 'torchassistant', 'infer', '--json', '--from', 'digits.txt',
                           'my_examples/mnist/classify.json'],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a['input'] for a in answers] == images
    return SimpleNamespace(root=root, spec=spec, classify='my_examples/mnist/classify.json', images=images,
                           answers=answers, env=env)
