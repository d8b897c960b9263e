"""The benchmarks' data, specs and in-process loops.

Data: full-size Fashion-MNIST (60,000 training and 10,000 test images, from the Debian package
dataset-fashion-mnist), or with --quick the first digits of the MNIST sample the repository ships.
Specs: the tutorial's own examples/mnist/training.json with its data, session folder, workers and
seed replaced; and a preloaded-tensor spec (batches already in memory, no workers). The dataset
factory, collator and transform that spec names live here, so that the framework and the hand loop
call the very same functions.
"""
import contextlib
import functools
import gzip
import io
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_DIR = '/usr/share/datasets/fashion-mnist'
FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
BATCH_SIZE = 32
LR = 1e-3


class DataMissing(Exception):
    pass


class Data:
    """Where a torchvision MNIST-format dataset lies: `kind` "FashionMNIST" or "MNIST" (its class in
    torchvision.datasets), `root` (what the class takes)."""

    def __init__(self, kind, root):
        self.kind, self.root = kind, root

    def dataset(self, train):
        import torchvision
        return getattr(torchvision.datasets, self.kind)(self.root, train=train)

    def describe(self):
        return f'{self.kind} in {self.root}'


def fashion_mnist(root, source=SOURCE_DIR):
    """Full-size Fashion-MNIST un-gzipped into ROOT/FashionMNIST/raw/ (done once)."""
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    missing = [name for name in FILES if not os.path.isfile(os.path.join(raw, name))]
    sources = {name: os.path.join(source, name + '.gz') for name in missing}
    absent = [path for path in sources.values() if not os.path.isfile(path)]
    if absent:
        raise DataMissing(f'Fashion-MNIST not found: {", ".join(absent)} missing. Install it with '
                          f'"apt-get install -y dataset-fashion-mnist" (or pass --source-dir DIR holding the four '
                          f'*-ubyte.gz files), or run with --quick on the MNIST sample the repository ships')
    os.makedirs(raw, exist_ok=True)
    for name, path in sources.items():
        with gzip.open(path, 'rb') as f_in, open(os.path.join(raw, name + '.partial'), 'wb') as f_out:
            shutil.copyfileobj(f_in, f_out)
        os.replace(os.path.join(raw, name + '.partial'), os.path.join(raw, name))
    return Data('FashionMNIST', root)


def mnist_sample(root, train, test):
    """The first `train` and `test` digits of the shipped MNIST sample, in ROOT/mnist-TRAIN-TEST/MNIST/raw."""
    sys.path.insert(0, REPO)
    from examples.mnist.prepare_data import prepare
    root = os.path.join(root, f'mnist-{train}-{test}')
    prepare(root, limits=(train, test))
    return Data('MNIST', root)


# ---- specs ---------------------------------------------------------------------------------------

def tutorial_spec(session_dir, data, seed, num_workers, device='cpu', precision='32'):
    """examples/mnist/training.json for one epoch on `data`, with `num_workers` loader processes, on
    `device` in `precision`."""
    with open(os.path.join(REPO, 'examples', 'mnist', 'training.json')) as f:
        spec = json.load(f)
    spec.update({'session_dir': session_dir, 'seed': seed, 'device': device, 'precision': precision})
    for definition in spec['initialize']['definitions']:
        if definition['group'] == 'datasets':
            definition['spec'].update({'class': f'torchvision.datasets.{data.kind}', 'args': [data.root]})
            definition['spec']['kwargs'].pop('download', None)
        if definition['group'] == 'data_loaders':
            definition['spec']['kwargs']['num_workers'] = num_workers
    spec['train']['stages'][0]['stop_condition']['kwargs']['num_epochs'] = 1
    return spec


def inference_spec(session_dir):
    """examples/mnist/inference.json for the session `session_dir`."""
    with open(os.path.join(REPO, 'examples', 'mnist', 'inference.json')) as f:
        spec = json.load(f)
    spec['session_dir'] = session_dir
    return spec


def preloaded_spec(session_dir, data, seed, precision, count, device='cpu'):
    """LeNet5 on the first `count` training images as batches already in memory (no workers, no
    collation; on a GPU each batch is moved there as it comes), one epoch, no validation; `precision`
    "32", "bf16-mixed" or "16-mixed"."""
    definitions = [
        ('datasets', 'batches', {'factory_fn': 'bench.workloads.preloaded_batches',
                                 'args': [data.kind, data.root, count]}),
        ('collators', 'whole', {'class': 'bench.workloads.WholeBatches'}),
        ('data_loaders', 'loader', {'dataset': 'batches', 'collator': 'whole', 'kwargs': {'batch_size': None}}),
        ('models', 'LeNet5', {'class': 'examples.mnist.LeNet5'}),
        ('optimizers', 'optimizer', {'class': 'Adam', 'kwargs': {'lr': LR}, 'model': 'LeNet5'}),
        ('losses', 'cross_entropy', {'class': 'CrossEntropyLoss', 'inputs': ['y_hat', 'input_2']}),
        ('metrics', 'accuracy', {'class': 'Accuracy', 'inputs': ['y_hat', 'input_2'],
                                 'transform': 'bench.workloads.predicted_labels'}),
    ]
    return {
        'session_dir': session_dir, 'seed': seed, 'device': device, 'precision': precision,
        'initialize': {
            'definitions': [{'group': g, 'name': n, 'spec': s} for g, n, s in definitions],
            'pipelines': {'training_pipeline': {
                'input_injector': [{'data_loader': 'loader'}],
                'losses': [{'loss_name': 'cross_entropy', 'loss_display_name': 'loss'}],
                'metrics': [{'metric_name': 'accuracy', 'display_name': 'acc'}]}},
        },
        'train': {'stages': [{'training_pipelines': ['training_pipeline'],
                              'stop_condition': {'class': 'torchassistant.stop_conditions.EpochsCompleted',
                                                 'kwargs': {'num_epochs': 1}}}]},
    }


def write_json(path, data):
    with open(path, 'w') as f:
        json.dump(data, f, indent=2)
    return path


# ---- what the preloaded spec names (both sides call these) --------------------------------------

@functools.lru_cache(maxsize=2)
def _images(kind, root, count):
    import torch
    dataset = Data(kind, root).dataset(train=True)
    x = dataset.data[:count].unsqueeze(1).to(torch.float32).div_(255)
    return x, dataset.targets[:count].clone()


def preloaded_batches(session, kind, root, count):
    """The first `count` training images as a list of (images, labels) batches of 32, in memory (made
    once per process: every later run reuses them)."""
    x, y = _images(kind, root, count)
    return [(x[i:i + BATCH_SIZE], y[i:i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)]


class WholeBatches:
    """The collator of a loader whose dataset items are whole batches (batch_size None): as they are."""

    def __call__(self, batch):
        return batch


def predicted_labels(y_hat, labels):
    return y_hat.argmax(dim=-1), labels


# ---- the preloaded workload, in this process -----------------------------------------------------

def hand_preloaded(data, seed, precision, count, device='cpu'):
    """The preloaded workload written by hand, in this process: ({"epoch", "epoch_cpu", "seconds"}, results).
    On a GPU each batch is moved there as it comes (non_blocking, as TorchAssistant does); "16-mixed"
    scales the loss with a GradScaler."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from examples.mnist import LeNet5

    start = time.perf_counter()
    device = torch.device(device)
    torch.manual_seed(seed)
    model = LeNet5().to(device)
    batches = preloaded_batches(None, data.kind, data.root, count)
    loader = DataLoader(batches, batch_size=None, collate_fn=WholeBatches())
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    criterion = nn.CrossEntropyLoss()
    dtype = {'bf16-mixed': torch.bfloat16, '16-mixed': torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None

    epoch_start, epoch_cpu = time.perf_counter(), time.process_time()
    model.train()
    correct, loss_sum, seen = torch.zeros((), dtype=torch.long, device=device), torch.zeros((), device=device), 0
    for x, labels in loader:
        if device.type != 'cpu':
            x, labels = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast():
            y_hat = model(x)[0]
            loss = criterion(y_hat, labels)
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        predictions, truth = predicted_labels(y_hat, labels)
        correct += (predictions == truth).sum()
        loss_sum += loss.detach().float() * len(labels)
        seen += len(labels)
    results = {'acc': correct.item() / seen, 'loss': loss_sum.item() / seen}    # one host sync per epoch
    now = time.perf_counter()
    return {'epoch': now - epoch_start, 'epoch_cpu': time.process_time() - epoch_cpu, 'seconds': now - start}, results


def framework_preloaded(workdir, index, data, seed, precision, count, device='cpu'):
    """The preloaded spec through the commands API in this process: commands.init (not timed), then
    commands.train timed whole and its one Trainer.epoch call timed by a wrapper."""
    from torchassistant.cli import commands
    from torchassistant.run import trainer
    session = os.path.join(workdir, f'preloaded-{precision}-{index}')
    spec = write_json(os.path.join(workdir, f'preloaded-{precision}-{index}.json'),
                      preloaded_spec(session, data, seed, precision, count, device))
    commands.init(spec, stream=io.StringIO())
    epochs, rows, original = [], [], trainer.Trainer.epoch

    def timed_epoch(self, *args, **kwargs):
        t0, cpu = time.perf_counter(), time.process_time()
        rows.append(original(self, *args, **kwargs))
        epochs.append((time.perf_counter() - t0, time.process_time() - cpu))
        return rows[-1]

    trainer.Trainer.epoch = timed_epoch
    try:
        start = time.perf_counter()
        commands.train(session, stream=io.StringIO())
        whole = time.perf_counter() - start
    finally:
        trainer.Trainer.epoch = original
    shutil.rmtree(session, ignore_errors=True)
    if len(epochs) != 1:
        raise RuntimeError('torchassistant.run.trainer.Trainer.epoch was not called once: this benchmark\'s timing '
                           'hook no longer matches the trainer; update framework_preloaded()')
    return {'epoch': epochs[0][0], 'epoch_cpu': epochs[0][1], 'seconds': whole}, \
        {'acc': rows[0]['acc'], 'loss': rows[0]['loss']}
