"""Meters: running averages of a pipeline's losses and metrics, kept on the device and read only when
shown, and their state in a mid-epoch checkpoint.

`RunningMetric` is the protocol of the framework's own metrics (torchassistant.metrics): running sums
as tensors, summed over processes when computed; torchmetrics' metrics and plain callables are
wrapped to look the same.
"""
import copy

import torch

from torchassistant.run import distributed
from torchassistant.run.data import describe
from torchassistant.run.graph import StepError
from torchassistant.run.pipeline import batch_size


class RunningMetric:
    """Sums kept as tensors on the device, added to in place (no new tensor per batch)."""

    sums: tuple = ()         # the names of the running sums
    dtype = torch.float64

    def __init__(self):
        self.device = None
        self.reset()

    def reset(self):
        for name in self.sums:
            setattr(self, name, torch.zeros((), dtype=self.dtype, device=self.device))

    def to(self, device):
        self.device = torch.device(device)
        for name in self.sums:
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    def totals(self, local=False):
        """The sums as floats: over all processes of a distributed run, or with `local` this one's."""
        values = [getattr(self, name) for name in self.sums]
        values = values if local else distributed.sum_over_processes(*values)
        return [float(v) for v in values]

    def state_dict(self, local=False):
        return dict(zip(self.sums, self.totals(local)))

    def load_state_dict(self, state):
        for name in self.sums:
            setattr(self, name, torch.tensor(state[name], dtype=self.dtype, device=self.device))


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
