"""Edges found by trying to break the commands (issue 16): standard JSON only from --json (NaN and
infinities as null), a closed pipe (`infer ... | head -1`) ends a command quietly, an image too large
to decode is refused as it is opened, `infer --from` a binary file is a usage error, and the commands
a message suggests paste into a shell whatever the session's name. Each on a session trained one
epoch on tiny real MNIST data, through the console command as a user runs it."""
import json
import os
import shlex
import struct
import subprocess
import sys
import zlib

import forked
import pytest
from conftest import REPO, make_project, write_json
from test_console import console, ok

from torchassistant.report import status as session_status

pytestmark = pytest.mark.e2e

SPEC = 'my_examples/mnist/inference.json'
DIGIT = 'my_examples/mnist/digit_2.png'
EXTRAS = '''
class Unbounded:
    """A post-processor whose scores are not all finite: NaN, +inf and -inf."""
    def __init__(self, session):
        pass

    def __call__(self, results):
        scores = results['y_hat'].clone()
        scores[:, 0], scores[:, 1], scores[:, 2] = float('nan'), float('inf'), float('-inf')
        return {'y_hat': scores}
'''


def strict_json(text):
    """`text` parsed as standard JSON: NaN, Infinity and -Infinity are refused, as most readers do."""
    def refuse(constant):
        raise AssertionError(f'{constant} is not JSON: {text[:300]}')
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope='module')
def project(tmp_path_factory, tiny_mnist):
    """A project with the session "pretrained" trained one epoch, and an inference spec whose results
    are not all finite (unbounded.json)."""
    root = make_project(str(tmp_path_factory.mktemp('edges')), tiny_mnist, epochs=1)
    with open(os.path.join(root, 'my_examples', 'extras.py'), 'w') as f:
        f.write(EXTRAS)
    ok(console('init', 'my_examples/mnist/training.json', cwd=root))
    ok(console('train', 'pretrained', '--quiet', cwd=root))
    with open(os.path.join(root, SPEC)) as f:
        spec = json.load(f)
    write_json(os.path.join(root, 'unbounded.json'), dict(spec, post_processor={'class': 'my_examples.extras.Unbounded'}))
    with open(os.path.join(root, 'many.txt'), 'w') as f:
        f.write(f'{DIGIT}\n' * 2000)        # more output than a pipe holds: the writer meets the closed end
    return root


# ---- standard JSON -------------------------------------------------------------------------------

def test_infer_json_writes_nan_and_infinities_as_null(project):
    out = ok(console('infer', '--json', 'unbounded.json', DIGIT, cwd=project)).stdout
    line = strict_json(out)
    assert line['input'] == DIGIT and line['y_hat'][:3] == [None, None, None]
    assert all(isinstance(v, float) for v in line['y_hat'][3:])


def test_status_json_writes_a_nan_metric_as_null(project):
    report = session_status.read(os.path.join(project, 'pretrained'))
    report.stages[0].rows[0]['val loss'] = float('nan')           # as a diverged validation records it
    report.stages[0].rows[0]['loss'] = float('inf')
    row = strict_json(session_status.to_json(report))['stages'][0]['rows'][0]
    assert row['val loss'] is None and row['loss'] is None and isinstance(row['val acc'], float)
    strict_json(ok(console('status', '--json', 'pretrained', cwd=project)).stdout)


# ---- a closed pipe -------------------------------------------------------------------------------

def closed_after(lines, *args, cwd):
    """Run the console command with its stdout read for `lines` lines and then closed (as `| head`
    does); (exit status, stderr)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    process = forked.Popen([sys.executable, '-m', 'torchassistant', *args], cwd=cwd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(lines):
        process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    return process.wait(timeout=300), stderr


@pytest.mark.parametrize('json_lines', [False, True])
def test_infer_into_a_closed_pipe_ends_quietly(project, json_lines):
    code, stderr = closed_after(1, 'infer', *(['--json'] if json_lines else []), '--from', 'many.txt', SPEC,
                                cwd=project)
    assert stderr == '' and code != 0, stderr        # before: "output_device failed ...: BrokenPipeError"


def test_train_into_a_closed_pipe_ends_quietly_and_releases_the_session(project):
    code, stderr = closed_after(0, 'train', 'pretrained', cwd=project)     # complete: it prints one line
    assert stderr == '' and code != 0, stderr
    assert not os.path.exists(os.path.join(project, 'pretrained', 'train.lock'))


# ---- images too large to decode ------------------------------------------------------------------

def write_png(path, width, height):
    """A black greyscale PNG of width x height, written row by row: 10,000 x 10,000 is about 100 KB."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    packer, row = zlib.compressobj(9), b'\0' * (width + 1)
    data = b''.join(packer.compress(row) for _ in range(height)) + packer.flush()
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0))
                + chunk(b'IDAT', data) + chunk(b'IEND', b''))


def test_an_image_larger_than_the_limit_is_refused_as_it_is_opened(project, tmp_path):
    big = str(tmp_path / 'big.png')
    write_png(big, 10_000, 10_000)
    assert os.path.getsize(big) < 200_000
    result = console('infer', SPEC, big, cwd=project, timeout=60)     # before: 43 s, 9.8 GB, a shape error
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr
    assert (f"error: input '{big}' is an image of 100,000,000 pixels, more than the limit of 89,478,485: it is "
            f"refused as it is opened, before it is decoded") in result.stderr, result.stderr
    assert 'TORCHASSISTANT_MAX_IMAGE_PIXELS=N' in result.stderr

    limited = dict(os.environ, PYTHONPATH=REPO, TORCHASSISTANT_MAX_IMAGE_PIXELS='500')
    small = forked.run([sys.executable, '-m', 'torchassistant', 'infer', SPEC, DIGIT], cwd=project, env=limited,
                           capture_output=True, text=True, timeout=300)
    assert small.returncode == 2 and 'an image of 784 pixels, more than the limit of 500' in small.stderr, small.stderr
    limited['TORCHASSISTANT_MAX_IMAGE_PIXELS'] = '800'
    ok(forked.run([sys.executable, '-m', 'torchassistant', 'infer', SPEC, DIGIT], cwd=project, env=limited,
                      capture_output=True, text=True, timeout=300))


# ---- --from a binary file ------------------------------------------------------------------------

def test_infer_from_a_binary_file_is_a_usage_error_naming_it(project):
    result = console('infer', '--from', DIGIT, SPEC, cwd=project)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr     # before: UnicodeDecodeError
    assert result.stderr.startswith(f'error: --from {DIGIT}: it is not text (byte 0x89 is not UTF-8); --from takes a '
                                    f'text file with one input per line'), result.stderr
    with open(os.path.join(project, DIGIT), 'rb') as f:
        piped = forked.run([sys.executable, '-m', 'torchassistant', 'infer', '--from', '-', SPEC], cwd=project,
                               env=dict(os.environ, PYTHONPATH=REPO), input=f.read(), capture_output=True, timeout=300)
    assert piped.returncode == 2 and b'error: --from <stdin>: it is not text' in piped.stderr, piped.stderr


# ---- hints paste into a shell --------------------------------------------------------------------

def test_a_hint_naming_a_session_with_a_space_and_a_quote_pastes_into_a_shell(project):
    with open(os.path.join(project, 'my_examples', 'mnist', 'training.json')) as f:
        spec = json.load(f)
    write_json(os.path.join(project, 'odd.json'), dict(spec, session_dir="Bob's first run"))
    said = ok(console('init', 'odd.json', cwd=project)).stdout
    hint = said.rsplit('Start training with: ', 1)[1].strip()
    argv = shlex.split(hint)
    assert argv[-2:] == ['train', "Bob's first run"], hint
    pasted = forked.run(hint + ' --quiet', shell=True, cwd=project, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHONPATH=REPO, PATH=os.path.dirname(sys.executable) + os.pathsep
                                     + os.environ.get('PATH', '')))
    assert pasted.returncode == 0 and 'Training finished' in pasted.stdout, pasted.stdout + pasted.stderr
