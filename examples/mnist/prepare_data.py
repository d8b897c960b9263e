"""Put the shipped 10,000-digit MNIST sample where torchvision.datasets.MNIST looks for it.

    python examples/mnist/prepare_data.py [ROOT]      (ROOT defaults to "data")

torchvision's MNIST(ROOT, download=True) first checks for the un-gzipped IDX files in
ROOT/MNIST/raw/ and downloads only when they are missing, so after this it runs offline.
Existing files are left alone (a full MNIST downloaded earlier is kept).

For quick tests, the environment variable TORCHASSISTANT_MNIST_DIGITS="TRAIN,TEST" (e.g. "320,96")
writes only the first TRAIN training and TEST test digits of the sample.
"""
import gzip
import os
import shutil
import sys

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mnist-sample')
FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']
HEADER = {'images-idx3': (16, 784), 'labels-idx1': (8, 1)}     # IDX header bytes, bytes per example
LIMIT_VARIABLE = 'TORCHASSISTANT_MNIST_DIGITS'


def prepare(root='data', limits=None):
    """ROOT/MNIST/raw with the sample's four files; `limits` = (train, test) keeps only the first digits."""
    raw = os.path.join(root, 'MNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    for name in FILES:
        target = os.path.join(raw, name)
        if os.path.exists(target):
            continue
        with gzip.open(os.path.join(SAMPLE, name + '.gz'), 'rb') as source, open(target + '.part', 'wb') as out:
            if limits is None:
                shutil.copyfileobj(source, out)
            else:
                out.write(first_examples(source, name, limits[0] if name.startswith('train') else limits[1]))
        os.replace(target + '.part', target)
    return raw


def first_examples(source, name, count):
    """The IDX file `name` (read from `source`) cut to its first `count` examples, header updated."""
    header, size = HEADER[name.split('-', 1)[1].rsplit('-', 1)[0]]
    data = bytearray(source.read(header + count * size))
    data[4:8] = ((len(data) - header) // size).to_bytes(4, 'big')     # fewer when the sample has fewer
    return bytes(data)


def limits_from_environment():
    value = os.environ.get(LIMIT_VARIABLE)
    if not value:
        return None
    try:
        train, test = (int(part) for part in value.split(','))
        if train > 0 and test > 0:
            return train, test
    except ValueError:
        pass
    sys.exit(f'error: {LIMIT_VARIABLE}={value!r}: expected two positive numbers "TRAIN,TEST", e.g. "320,96"')


if __name__ == '__main__':
    print('MNIST sample ready in', prepare(*sys.argv[1:2], limits=limits_from_environment()))
