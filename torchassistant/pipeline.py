"""Pipelines: one iteration of work on a batch, and the meters that average its losses and metrics.

The training iteration is what a hand-written loop does: forward, sum the losses, then the step
object (torchassistant.step) zeroes, back-propagates and steps. Loss and metric values stay on the
device; they are read (a host sync) only when displayed.
"""
import contextlib
import copy
from dataclasses import dataclass

import torch

from torchassistant import distributed
from torchassistant.data import describe, to_device
from torchassistant.graph import StepError
from torchassistant.metrics import RunningMetric


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


class Meters:
    """Running averages over examples of a pipeline's losses and metrics, kept on the device."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.losses = [Mean(torch.device(pipeline.device)) for _ in pipeline.losses]
        self.metrics = [_metric_meter(use.criterion.function, pipeline.device) for use in pipeline.metrics]

    def update_metrics(self, results):
        for use, meter in zip(self.pipeline.metrics, self.metrics):
            variables = results[use.node]
            try:
                meter.update(*use.criterion.values(variables, self.pipeline.move_to))
            except Exception as e:
                received = {n: describe(variables[n]) for n in use.criterion.inputs if n in variables}
                raise StepError(f'metric "{use.criterion.name}" ({use.criterion.where})', received, e) from e

    def state_dict(self):
        """The running sums, for a mid-epoch checkpoint (tensors and numbers only); in a distributed run
        the sums over all processes (each must call it), which one process loads on resume."""
        return {'losses': [m.state_dict(local=False) for m in self.losses],
                'metrics': [_meter_state(m) for m in self.metrics]}

    def load_state_dict(self, state):
        for meter, saved in zip(self.losses, state['losses']):
            meter.load_state_dict(saved)
        for meter, saved in zip(self.metrics, state['metrics']):
            _load_meter_state(meter, saved)

    def values(self, local=False):
        """{display name: float}: reads the device (a host sync), so call it only to display or log. In a
        distributed run, over all processes (each must call it), or with `local` this process's alone."""
        out = {use.display_name: _to_float(_compute(m, local)) for use, m in zip(self.pipeline.metrics, self.metrics)}
        out.update({use.display_name: m.compute(local) for use, m in zip(self.pipeline.losses, self.losses)})
        return out


def _compute(meter, local):
    if _is_ours(meter):
        return meter.compute(local)
    if local and _is_torchmetrics(meter) and distributed.active():
        return type(meter).compute(meter)     # torchmetrics wraps compute in its sync over processes
    return meter.compute()


def _is_ours(meter):
    """Whether `meter` follows the protocol of torchassistant.metrics (sums over processes itself)."""
    return isinstance(meter, (RunningMetric, _CallableMetric))


def _is_torchmetrics(meter):
    return hasattr(meter, '_defaults')       # a torchmetrics.Metric: its states are the attributes it registered


def _to_float(value):
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class Mean:
    """Example-weighted mean of per-batch values (each the batch's mean)."""

    def __init__(self, device_hint=None):
        self.total = 0.0
        self.count = 0
        self.last = None                   # the latest batch's value (a loss: a tensor on the device)
        self.device_hint = device_hint     # where a restored running total goes

    def add(self, value, count):
        self.last = value
        if isinstance(self.total, torch.Tensor):
            self.total.add_(value, alpha=count)      # in place: one op, no new tensor per batch
        else:
            self.total = self.total + value * count  # numbers, or the first tensor (a new one: no aliasing)
        self.count += count

    def compute(self, local=False):
        """The mean over all processes of a distributed run (each must call it), or with `local` this one's."""
        total, count = (self.total, self.count) if local else distributed.sum_over_processes(self.total, self.count)
        return _to_float(total) / count if count else float('nan')

    def state_dict(self, local=True):
        total, count = (self.total, self.count) if local else distributed.sum_over_processes(self.total, self.count)
        total = total.clone() if isinstance(total, torch.Tensor) else total
        return {'total': total, 'count': int(count)}

    def load_state_dict(self, state):
        total = state['total']
        if isinstance(total, torch.Tensor) and isinstance(self.device_hint, torch.device):
            total = total.to(self.device_hint)
        self.total, self.count = total, state['count']


class _CallableMetric:
    """A plain function metric `f(*values) -> number`, averaged over examples."""

    def __init__(self, function):
        self.function = function
        self.mean = Mean()

    def update(self, *values):
        self.mean.add(self.function(*values), batch_size(values))

    def compute(self, local=False):
        return self.mean.compute(local)

    def state_dict(self, local=False):
        return self.mean.state_dict(local)

    def load_state_dict(self, state):
        self.mean.load_state_dict(state)


def _metric_meter(metric, device):
    """A fresh accumulator for `metric`: a reset copy of an object with update/compute (ours, or
    torchmetrics'), or a mean of a plain function's values."""
    if hasattr(metric, 'update') and hasattr(metric, 'compute'):
        fresh = copy.deepcopy(metric)
        fresh.reset()
        return fresh.to(device) if isinstance(fresh, (torch.nn.Module, RunningMetric)) else fresh
    return _CallableMetric(metric)


def _meter_state(meter):
    """A metric accumulator's state as tensors and numbers (a torchmetrics Metric's registered states,
    or the sums of ours), reduced over the processes of a distributed run."""
    if _is_ours(meter):
        return {'state_dict': meter.state_dict(local=False)}
    if not _is_torchmetrics(meter):
        if hasattr(meter, 'state_dict') and hasattr(meter, 'load_state_dict'):
            return {'state_dict': meter.state_dict()}
        raise TypeError(f'{type(meter).__name__} keeps running state this checkpoint cannot save')
    with meter.sync_context():      # reduced over processes while the block runs (one process: as is)
        state = {name: _clone(getattr(meter, name), meter._defaults[name]) for name in meter._defaults}
    state['_update_count'] = getattr(meter, '_update_count', 0)
    return {'torchmetrics': state}


def _load_meter_state(meter, saved):
    if 'state_dict' in saved or 'mean' in saved:      # "mean": a plain function's sums, as saved until 0cea753
        meter.load_state_dict(saved.get('state_dict', saved.get('mean')))
        return
    if isinstance(meter, RunningMetric):               # our Accuracy, saved when it was a torchmetrics Metric
        meter.load_state_dict({name: saved['torchmetrics'][name].item() for name in meter.sums})
        return
    state = dict(saved['torchmetrics'])
    meter._update_count = state.pop('_update_count')
    for name, value in state.items():
        current = getattr(meter, name)
        device = current.device if isinstance(current, torch.Tensor) else None
        setattr(meter, name, value.to(device) if device is not None and isinstance(value, torch.Tensor)
                else [v.to(device) if isinstance(v, torch.Tensor) and device else v for v in value]
                if isinstance(value, list) else value)
    meter._computed = None


def _clone(value, default=None):
    if isinstance(value, torch.Tensor) and isinstance(default, list):    # a list state a sync concatenated
        return [value.detach().clone()]
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value
