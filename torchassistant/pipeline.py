"""Pipelines: one iteration of work on a batch, and the meters that average its losses and metrics.

The training step is what a hand-written loop does: forward, sum the losses, zero_grad, backward,
step. Loss and metric values stay on the device; they are read (a host sync) only when displayed.
"""
import copy
from dataclasses import dataclass

import torch

from torchassistant.data import describe, to_device
from torchassistant.graph import StepError


@dataclass
class Criterion:
    """A loss or metric definition: the object, the variables it reads and an optional transform."""
    kind: str            # "loss" or "metric"
    name: str
    function: object
    inputs: list
    transform: object
    where: str           # spec location of the definition

    def values(self, variables, device=None):
        """The inputs read from `variables`, transformed; tensors a transform made on the CPU
        (the tutorial's `torch.LongTensor(labels)`) are moved to `device` unless it is None."""
        values = [variables[name] for name in self.inputs]
        if self.transform is not None:
            values = self.transform(*values)
            if not isinstance(values, (tuple, list)):
                raise TypeError(f'its transform must return a tuple of values, one per argument of the '
                                f'{self.kind}; it returned {describe(values)}')
            if device is not None:
                values = [to_device(v, device) for v in values]
        return values


@dataclass
class Use:
    """A criterion as a pipeline uses it: under a display name, reading one node's frame."""
    display_name: str
    criterion: Criterion
    node: str


@dataclass
class Feed:
    """One data loader of an input injector: its batches become named variables on a port."""
    loader_name: str
    loader: object
    variable_names: list     # None: input_1..input_n
    port: str

    def frame(self, batch):
        if isinstance(batch, torch.Tensor) or not isinstance(batch, (tuple, list)):
            batch = (batch,)
        names = self.variable_names or [f'input_{i}' for i in range(1, len(batch) + 1)]
        if len(names) != len(batch):
            raise ValueError(f'data loader "{self.loader_name}" yields batches of {len(batch)} elements '
                             f'but variable_names names {len(names)}: {names}')
        return dict(zip(names, batch))


class Pipeline:
    def __init__(self, name, graph, feeds, losses, metrics, device, where=''):
        self.name = name
        self.where = where
        self.graph = graph
        self.feeds = feeds
        self.losses = losses
        self.metrics = metrics
        self.device = device
        self.move_to = None if torch.device(device).type == 'cpu' else device   # CPU: nothing to move
        processors = graph.processors()
        self.models = list({id(m): m for p in processors for m in p.models()}.values())
        self.optimizers = list({id(o): o for p in processors for o in p.optimizers()}.values())

    def num_batches(self, limit=None):
        count = min(len(feed.loader) for feed in self.feeds)
        if isinstance(limit, float):
            count = max(1, int(count * limit))
        elif isinstance(limit, int):
            count = min(count, limit)
        return count

    def batches(self, limit=None):
        """Port frames, one dict {port: frame} per iteration; loaders are iterated together."""
        count = self.num_batches(limit)
        for index, batches in enumerate(zip(*(feed.loader for feed in self.feeds))):
            if index == count:
                return
            port_frames = {}
            for feed, batch in zip(self.feeds, batches):
                port_frames.setdefault(feed.port, {}).update(feed.frame(batch))
            yield port_frames

    def forward(self, port_frames):
        if self.move_to is not None:
            port_frames = {port: to_device(frame, self.move_to) for port, frame in port_frames.items()}
        return self.graph(port_frames)

    def train_step(self, port_frames, meters):
        results = self.forward(port_frames)
        total = None
        for use, meter in zip(self.losses, meters.losses):
            loss, count = _apply(use, results, self.move_to)
            meter.add(loss.detach(), count)
            total = loss if total is None else total + loss
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        total.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        meters.update_metrics(results)

    def eval_step(self, port_frames, meters):
        results = self.forward(port_frames)
        for use, meter in zip(self.losses, meters.losses):
            meter.add(*_apply(use, results, self.move_to))
        meters.update_metrics(results)
        return results

    def train(self, mode=True):
        for model in self.models:
            model.train(mode)

    def output_names(self, node):
        """Names of the outputs the graph node `node` adds to its frame."""
        processor = dict((name, p) for name, p, _ in self.graph.order)[node]
        return [name for n in processor.nodes for name in n.outputs]


def _apply(use, results, device):
    """(value, batch size) of the loss `use` on the node frame it reads; errors name the loss and its inputs."""
    variables = results[use.node]
    try:
        values = use.criterion.values(variables, device)
        return use.criterion.function(*values), batch_size(values)
    except Exception as e:
        received = {name: describe(variables[name]) for name in use.criterion.inputs if name in variables}
        missing = [name for name in use.criterion.inputs if name not in variables]
        if missing:
            received['(missing)'] = ', '.join(missing) + '; available: ' + ', '.join(variables)
        raise StepError(f'{use.criterion.kind} "{use.criterion.name}" ({use.criterion.where})', received, e) from e


def batch_size(values):
    first = values[0]
    return first.shape[0] if isinstance(first, torch.Tensor) and first.dim() else len(first) \
        if hasattr(first, '__len__') else 1


class Meters:
    """Running averages over examples of a pipeline's losses and metrics, kept on the device."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.losses = [Mean() for _ in pipeline.losses]
        self.metrics = [_metric_meter(use.criterion.function, pipeline.device) for use in pipeline.metrics]

    def update_metrics(self, results):
        for use, meter in zip(self.pipeline.metrics, self.metrics):
            variables = results[use.node]
            try:
                meter.update(*use.criterion.values(variables, self.pipeline.move_to))
            except Exception as e:
                received = {n: describe(variables[n]) for n in use.criterion.inputs if n in variables}
                raise StepError(f'metric "{use.criterion.name}" ({use.criterion.where})', received, e) from e

    def values(self):
        """{display name: float}: reads the device (a host sync), so call it only to display or log."""
        out = {use.display_name: _to_float(m.compute()) for use, m in zip(self.pipeline.metrics, self.metrics)}
        out.update({use.display_name: m.compute() for use, m in zip(self.pipeline.losses, self.losses)})
        return out


def _to_float(value):
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class Mean:
    """Example-weighted mean of per-batch values (each the batch's mean)."""

    def __init__(self):
        self.total = 0.0
        self.count = 0

    def add(self, value, count):
        if isinstance(self.total, torch.Tensor):
            self.total.add_(value, alpha=count)      # in place: one op, no new tensor per batch
        else:
            self.total = self.total + value * count  # numbers, or the first tensor (a new one: no aliasing)
        self.count += count

    def compute(self):
        return _to_float(self.total) / self.count if self.count else float('nan')


class _CallableMetric:
    """A plain function metric `f(*values) -> number`, averaged over examples."""

    def __init__(self, function):
        self.function = function
        self.mean = Mean()

    def update(self, *values):
        self.mean.add(self.function(*values), batch_size(values))

    def compute(self):
        return self.mean.compute()


def _metric_meter(metric, device):
    """A fresh accumulator for `metric`: a reset copy of a torchmetrics-style object, or a mean."""
    if hasattr(metric, 'update') and hasattr(metric, 'compute'):
        fresh = copy.deepcopy(metric)
        fresh.reset()
        return fresh.to(device) if isinstance(fresh, torch.nn.Module) else fresh
    return _CallableMetric(metric)
