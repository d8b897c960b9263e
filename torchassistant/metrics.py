"""The framework's own metrics, found by bare name before torchmetrics'.

They keep running sums on the device and follow a small protocol the pipeline's meters call:
`update(*values)`, `compute(local=False)`, `reset()`, `state_dict(local=False)`,
`load_state_dict(state)`. In a distributed run `compute` and `state_dict` sum over all processes
(each must call them) unless `local`. torchmetrics is imported only by a spec that names one of
its classes: importing it costs about a second and 100 MiB in every process.
"""
import torch

from torchassistant.run.meters import RunningMetric


class Accuracy(RunningMetric):
    """Fraction of positions where the prediction equals the target, over all examples seen.

    With no arguments (the tutorial's `"class": "Accuracy"`) it compares predicted labels with
    target labels of the same shape. Given a `task` (torchmetrics 1.x's required argument), it is
    torchmetrics' own `Accuracy` with the same arguments.
    """
    sums = ('correct', 'total')
    dtype = torch.int64      # counts (float64 is not on every device)

    def __new__(cls, *args, **kwargs):
        if kwargs.get('task') is not None:
            import torchmetrics
            return torchmetrics.Accuracy(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, **kwargs):
        if kwargs:
            raise TypeError(f'Accuracy without "task" takes no arguments (got {", ".join(kwargs)}); with "task" '
                            f'(e.g. "multiclass") it is torchmetrics\' Accuracy, which takes them')
        super().__init__()

    def update(self, predictions, targets):
        if not isinstance(predictions, torch.Tensor):
            predictions = torch.as_tensor(predictions)
        if not isinstance(targets, torch.Tensor) or targets.device != predictions.device:
            targets = torch.as_tensor(targets, device=predictions.device)
        if predictions.shape != targets.shape:
            raise ValueError(f'Accuracy compares predicted labels with targets of the same shape; got '
                             f'predictions of shape {tuple(predictions.shape)} and targets of shape '
                             f'{tuple(targets.shape)} (turn scores into labels with argmax in a transform)')
        if self.correct.device != predictions.device:
            self.to(predictions.device)
        self.correct.add_((predictions == targets).sum())
        self.total.add_(targets.numel())

    def compute(self, local=False):
        correct, total = self.totals(local)
        return correct / total if total else float('nan')
