"""Put the shipped 10,000-digit MNIST sample where torchvision.datasets.MNIST looks for it.

    python examples/mnist/prepare_data.py [ROOT]      (ROOT defaults to "data")

torchvision's MNIST(ROOT, download=True) first checks for the un-gzipped IDX files in
ROOT/MNIST/raw/ and downloads only when they are missing, so after this it runs offline.
Existing files are left alone (a full MNIST downloaded earlier is kept).
"""
import gzip
import os
import shutil
import sys

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'mnist-sample')
FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']


def prepare(root='data'):
    raw = os.path.join(root, 'MNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    for name in FILES:
        target = os.path.join(raw, name)
        if os.path.exists(target):
            continue
        with gzip.open(os.path.join(SAMPLE, name + '.gz'), 'rb') as source, open(target + '.part', 'wb') as out:
            shutil.copyfileobj(source, out)
        os.replace(target + '.part', target)
    return raw


if __name__ == '__main__':
    print('MNIST sample ready in', prepare(*sys.argv[1:2]))
