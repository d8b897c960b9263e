"""A small synthetic problem for spec-feature tests: which of two coordinates is larger."""
import torch
from torch import nn

from torchassistant.preprocessors import ValuePreprocessor


class Points(torch.utils.data.Dataset):
    def __init__(self, size=200, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.rand(size, 2, generator=generator) * 10
        self.y = (self.x[:, 0] > self.x[:, 1]).long().tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


class Scale(ValuePreprocessor):
    """Divides by the largest value seen when fitted; appends a line to `log` on every fit."""

    def __init__(self, log):
        self.log = log
        self.scale = None

    def fit(self, dataset):
        self.scale = float(max(dataset[i][0].abs().max() for i in range(len(dataset))))
        with open(self.log, 'a') as f:
            f.write('fit\n')

    def process(self, value):
        return value / self.scale


def stack(batch):
    xs, ys = zip(*batch)
    return torch.stack(xs), torch.tensor(ys)


def make_classifier(session, hidden):
    """A factory function: sizes the model from an earlier definition."""
    features = session.datasets['points'][0][0].numel()
    return Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 2))


class Sequential(nn.Sequential):
    def forward(self, x):
        return [super().forward(x)]


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 8)

    def forward(self, x):
        return [torch.tanh(self.linear(x))]


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 2)

    def forward(self, h):
        return [self.linear(h)]


def argmax(scores, labels):
    return scores.argmax(-1), labels


class StopAfter:
    """Stops after `epochs` epochs and records the history it was given."""
    seen = []

    def __init__(self, epochs):
        self.epochs = epochs

    def __call__(self, epoch, history):
        StopAfter.seen.append((epoch, [dict(row) for row in history]))
        return epoch >= self.epochs


class Label:
    def __call__(self, text):
        x, y = (float(v) for v in text.split(','))
        return torch.tensor([x, y]), 0


class Argmax:
    def __init__(self, session):
        self.session = session

    def __call__(self, results):
        return {name: value.argmax(-1).tolist() for name, value in results.items()}


class _FailInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError('deliberate failure in backward')


class BackwardFails(nn.Module):
    """A loss whose backward pass raises."""

    def forward(self, scores, labels):
        return nn.functional.cross_entropy(_FailInBackward.apply(scores), labels)


class StepFails(torch.optim.SGD):
    def step(self, closure=None):
        raise RuntimeError('deliberate failure in step')


class NanAt(Points):
    """Points where every `every`-th example is NaN: the loss of a batch holding one is NaN."""

    def __init__(self, size=200, every=10):
        super().__init__(size)
        self.x[::every] = float('nan')


class Probe(nn.Module):
    """Records the dtype its hidden layer computes in (autocast shows there)."""
    dtypes = []

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(2, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        h = self.hidden(x)
        Probe.dtypes.append(h.dtype)
        return [self.out(torch.tanh(h))]
