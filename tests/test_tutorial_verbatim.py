"""docs/mnist-tutorial.md followed as a newcomer would, every code block used unmodified.

The tutorial is read top to bottom in a fresh project folder (the repository's root scripts and
examples/ linked in): a block with `file=PATH` is appended to PATH, a `bash` block is run with bash
and a `python` block with python, both in a terminal (a pty) as a user would; the `text` block after
a command is compared, in form (numbers, times and bars aside), with what the terminal shows at the
end; `text while-running` with what it showed during the command; `text pitfall` with the output of
that same command on the spec with the collator the aside warns about; a `json` block without a file
(the spec's outline) must parse and have the keys of the spec the pieces make. Any other kind of
block fails the test, so none goes unchecked.

Only the amount of data differs from a reader's run: prepare_data.py writes the first 320/96 shipped
digits (TORCHASSISTANT_MNIST_DIGITS, which the tutorial does not show), so that training takes seconds;
and the device is the CPU (TORCHASSISTANT_DEVICE), as in the outputs shown.
"""
import fcntl
import gzip
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time

import pytest
from conftest import EXAMPLE, REPO, SAMPLE
from PIL import Image

pytestmark = pytest.mark.e2e


TUTORIAL = os.path.join(REPO, 'docs', 'mnist-tutorial.md')
LINKED = ['init.py', 'train.py', 'evaluate.py', 'infer.py', 'examples']      # the repository root, seen by the reader
DIGITS = '320,96'
FENCE = re.compile(r'(> ?)?```(\S*)[ \t]*(.*)')


def code_blocks(text):
    """[(language, label, body)] of the fenced blocks in order; a block in a quote (an aside) loses its `> `."""
    blocks, body, opening = [], None, None
    for line in text.splitlines(keepends=True):
        fence = FENCE.fullmatch(line.rstrip('\n'))
        if body is None and fence:
            opening, body = fence, []
        elif body is not None and fence and fence.group(1) == opening.group(1) and not fence.group(2):
            blocks.append((opening.group(2), opening.group(3).strip(), ''.join(body)))
            body = None
        elif body is not None:
            body.append(line[len(opening.group(1)):] if opening.group(1) and line.startswith(opening.group(1))
                        else line)
    assert body is None, 'a code block is not closed'
    return blocks


def shape(text):
    """Text with what differs between runs made uniform: numbers, addresses, bars, spacing."""
    text = re.sub(r'\x1b\[[0-9;?]*[A-Za-z]', '', text)
    text = re.sub(r'0x[0-9a-fA-F]+', 'ADDRESS', text)
    text = re.sub(r'\|[^|\n]*\|', '|BAR|', text)
    text = text.replace('s/it', 'it/s')
    text = re.sub(r'-?\d+(\.\d+)?(e[+-]?\d+)?', 'N', text)
    text = re.sub(r'([\[(])\s+', r'\1', text)         # torch pads numbers to a common width
    return ' '.join(text.split())


def screen(raw):
    """The lines a terminal shows once the command is done: each line as its last redraw."""
    lines = (line.split('\r')[-1].rstrip() for line in raw.replace('\r\n', '\n').split('\n'))
    return [line for line in lines if line.strip()]


def redraws(raw):
    """Every state a line of the terminal passed through (live progress lines included)."""
    return [part for line in raw.replace('\r\n', '\n').split('\n') for part in line.split('\r') if part.strip()]


def in_terminal(argv, cwd, env, timeout):
    """(exit status, everything written) of argv run with a 160-column pty as stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 160, 0, 0))
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    out, deadline = b'', time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # the other end closed
                    break
                if not chunk:
                    break
                out += chunk
            elif process.poll() is not None:
                break
        else:
            process.kill()
            raise AssertionError(f'{argv} ran longer than {timeout} s; it printed:\n{out.decode(errors="replace")}')
    finally:
        os.close(master)
    return process.wait(), out.decode(errors='replace')


class Reader:
    """Does what the tutorial says, block by block, in `folder`."""

    def __init__(self, folder):
        self.folder = folder
        self.env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH'],
                        PYTHONPATH=REPO, TORCHASSISTANT_DEVICE='cpu', TORCHASSISTANT_MNIST_DIGITS=DIGITS)
        self.last = None            # (argv, output) of the latest command, until its output is compared
        self.outline = None
        self.checked = []           # commands whose output was compared with the tutorial's

    def read(self, blocks):
        for language, label, body in blocks:
            if label.startswith('file='):
                self.append(label[len('file='):], language, body)
            elif (language, label) == ('bash', ''):
                self.run(['bash', '-e', '-c', body], body)
            elif (language, label) == ('python', ''):
                self.run([sys.executable, '-c', body], body)
            elif (language, label) == ('json', ''):
                self.outline = json.loads(body)
            elif language == 'text':
                self.compare(label, body)
            else:
                raise AssertionError(f'a block the test does not know how to use ({language} {label}):\n{body}')

    def append(self, path, language, body):
        """Add the block at the end of the file; the file's folder must exist (the tutorial makes it)."""
        target = os.path.join(self.folder, path)
        assert os.path.isdir(os.path.dirname(target)), f'{path}: the tutorial never creates its folder'
        with open(target, 'a') as f:
            if language == 'python' and f.tell():
                f.write('\n\n')
            f.write(body)

    def run(self, argv, body, folder=None, timeout=600):
        status, output = in_terminal(argv, folder or self.folder, self.env, timeout)
        if folder is None:
            assert status == 0, f'{body.strip()} failed ({status}):\n{output}'
            self.last = argv, body, output
        return status, output

    def compare(self, label, shown):
        assert self.last, f'an output block with no command before it:\n{shown}'
        argv, body, output = self.last
        expected = shown.splitlines()
        if label == '':
            assert shape('\n'.join(screen(output))) == shape(shown), (body, output)
            self.checked.append(body.strip())
        elif label == 'while-running':
            seen = {shape(line) for line in redraws(output)}
            missing = [line for line in expected if shape(line) not in seen]
            assert not missing, (missing, output)
        elif label == 'pitfall':
            status, output = self.run(argv, body, folder=self.with_batch_divide())
            assert status != 0, output
            got, want = [shape(line) for line in screen(output)], [shape(line) for line in expected]
            assert any(got[i:i + len(want)] == want for i in range(len(got))), (want, output)
            self.checked.append('pitfall: ' + body.strip())
        else:
            raise AssertionError(f'unknown output block "text {label}"')

    def with_batch_divide(self):
        """A copy of the project whose collator is BatchDivide itself, as the aside describes."""
        copy = os.path.join(os.path.dirname(self.folder), 'pitfall')
        shutil.copytree(self.folder, copy, symlinks=True, ignore=shutil.ignore_patterns('data', 'pretrained'))
        os.symlink(os.path.join(self.folder, 'data'), os.path.join(copy, 'data'))
        path = os.path.join(copy, 'my_examples', 'mnist', 'training.json')
        text = open(path).read()
        assert text.count('"my_examples.mnist.MyCollator"') == 1
        with open(path, 'w') as f:
            f.write(text.replace('"my_examples.mnist.MyCollator"', '"torchassistant.collators.BatchDivide"'))
        return copy


def test_the_tutorial_as_written(tmp_path):
    with open(TUTORIAL) as f:
        blocks = code_blocks(f.read())
    folder = tmp_path / 'project'
    folder.mkdir()
    for name in LINKED:
        os.symlink(os.path.join(REPO, name), folder / name)
    reader = Reader(str(folder))
    reader.read(blocks)

    package = folder / 'my_examples' / 'mnist'
    training = json.loads((package / 'training.json').read_text())       # the pieces make one spec
    assert reader.outline.keys() == training.keys()
    assert reader.outline['initialize'].keys() == training['initialize'].keys()
    assert [c.split()[:2] for c in reader.checked] == [
        ['python', 'examples/mnist/prepare_data.py'], ['import', 'torchvision'], ['python', 'init.py'],
        ['pitfall:', 'python'], ['python', 'init.py'], ['python', 'train.py'], ['cat', 'pretrained/metrics/0.csv'],
        ['python', 'evaluate.py'], ['from', 'torchvision'], ['python', 'infer.py'], ['python', 'infer.py']]
    saved = Image.open(package / 'digit_2.png')
    assert saved.tobytes() == Image.open(os.path.join(EXAMPLE, 'digit_2.png')).tobytes(), \
        'the image the tutorial saves as digit_2.png is not the first 2 of the shipped test digits'


def sample(prefix):
    """(images as 784-byte strings, labels) of the shipped sample's `prefix` (train or t10k) files."""
    with gzip.open(os.path.join(SAMPLE, f'{prefix}-images-idx3-ubyte.gz')) as f:
        images = f.read()[16:]
    with gzip.open(os.path.join(SAMPLE, f'{prefix}-labels-idx1-ubyte.gz')) as f:
        labels = list(f.read()[8:])
    return [images[i * 784:(i + 1) * 784] for i in range(len(labels))], labels


def test_the_shipped_digits_are_what_the_tutorial_says():
    """8,000 + 2,000 digits; test example 29 is the first 2; digit_N.png is the first test example of N."""
    train_images, _ = sample('train')
    images, labels = sample('t10k')
    assert (len(train_images), len(images)) == (8000, 2000)
    assert labels.index(2) == 29
    for digit in range(10):
        png = Image.open(os.path.join(EXAMPLE, f'digit_{digit}.png'))
        assert (png.mode, png.size) == ('L', (28, 28))
        assert png.tobytes() == images[labels.index(digit)], f'digit_{digit}.png'
