"""Pipelines: one iteration of work on a batch, and the meters that average its losses and metrics.

The training iteration is what a hand-written loop does: forward, sum the losses, then the step
object (torchassistant.step) zeroes, back-propagates and steps. Loss and metric values stay on the
device; they are read (a host sync) only when displayed.
"""
import contextlib
from dataclasses import dataclass

import torch

from torchassistant.run.data import describe, to_device
from torchassistant.run.graph import StepError
from torchassistant.spec import rules


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
    variable_names: list     # None: rules.DEFAULT_VARIABLES (input_1..input_n)
    port: str

    def frame(self, batch):
        if isinstance(batch, torch.Tensor) or not isinstance(batch, (tuple, list)):
            batch = (batch,)
        names = self.variable_names or [rules.default_variable(i) for i in range(1, len(batch) + 1)]
        if len(names) != len(batch):
            raise ValueError(f'data loader "{self.loader_name}" yields batches of {len(batch)} elements '
                             f'but variable_names names {len(names)}: {names}')
        return dict(zip(names, batch))


class Pipeline:
    def __init__(self, name, graph, feeds, losses, metrics, device, where='', clippers=()):
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
        named = {id(o): (n, o) for p in processors for n, o in p.optimizers()}.values()
        self.optimizer_names = [n for n, _ in named]
        self.optimizers = [o for _, o in named]
        self.clippers = list(clippers)      # gradient_clippers of the models this pipeline trains
        # parameters of the graph's models that none of its optimizers updates (frozen nodes): the step
        # keeps gradients out of them while this pipeline trains, though gradients flow through them
        owned = {id(p) for o in self.optimizers for group in o.param_groups for p in group['params']}
        self.frozen = [p for m in self.models for p in m.parameters() if id(p) not in owned and p.requires_grad]

    def num_batches(self, limit=None):
        count = min(len(feed.loader) for feed in self.feeds)
        if isinstance(limit, float):
            count = max(1, int(count * limit))
        elif isinstance(limit, int):
            count = min(count, limit)
        return count

    def batches(self, limit=None, skip=0):
        """Port frames, one dict {port: frame} per iteration; loaders are iterated together. The
        loaders' iterators are created now (not at the first batch), so loaders draw their order in a
        fixed sequence; `skip` starts `skip` batches in without loading them (resuming mid-epoch)."""
        count = self.num_batches(limit) - skip
        for feed in self.feeds:
            if skip and hasattr(feed.loader, 'skip_next'):
                feed.loader.skip_next(skip)
        iterators = [iter(feed.loader) for feed in self.feeds]
        return self._frames(zip(*iterators), count)

    def _frames(self, batches, count):
        for index, batch in enumerate(batches):
            if index == count:
                return
            port_frames = {}
            for feed, part in zip(self.feeds, batch):
                port_frames.setdefault(feed.port, {}).update(feed.frame(part))
            yield port_frames

    def forward(self, port_frames, inference=False):
        """The graph on one batch; `inference` (infer only): models' run_inference where they define it."""
        if self.move_to is not None:
            port_frames = {port: to_device(frame, self.move_to) for port, frame in port_frames.items()}
        return self.graph(port_frames, inference=inference)

    def train_step(self, port_frames, meters, step):
        """One training iteration; `step` (a TrainStep) turns the summed loss into updates. A batch the
        step drops (a non-finite loss it is told to skip) leaves the meters as they were."""
        with step.forward(self):
            results = self.forward(port_frames)
            losses = [_apply(use, results, self.move_to) for use in self.losses]
            total = losses[0][0]
            for loss, _ in losses[1:]:
                total = total + loss
        if step.update(self, total, losses):
            for meter, (loss, count) in zip(meters.losses, losses):
                meter.add(loss.detach(), count)
            meters.update_metrics(results)

    def eval_step(self, port_frames, meters, precision=None):
        with precision.autocast() if precision is not None else contextlib.nullcontext():
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
