"""The framework's own metrics, found by bare name before torchmetrics'."""
import torch
import torchmetrics


class Accuracy(torchmetrics.Metric):
    """Fraction of positions where the prediction equals the target, over all examples seen.

    With no arguments (the tutorial's `"class": "Accuracy"`) it compares predicted labels with
    target labels of the same shape. Given a `task` (torchmetrics 1.x's required argument), it is
    torchmetrics' own `Accuracy` with the same arguments.
    """
    full_state_update = False

    def __new__(cls, *args, **kwargs):
        # copy.deepcopy (Metric.clone) calls __new__ with internal arguments: only a `task`
        # keyword means "build torchmetrics' Accuracy".
        if kwargs.get('task') is not None:
            return torchmetrics.Accuracy(**kwargs)
        return super().__new__(cls)

    def __init__(self, task=None, **kwargs):
        super().__init__(**kwargs)
        self.add_state('correct', default=torch.tensor(0), dist_reduce_fx='sum')
        self.add_state('total', default=torch.tensor(0), dist_reduce_fx='sum')

    def update(self, predictions, targets):
        if not isinstance(predictions, torch.Tensor):
            predictions = torch.as_tensor(predictions)
        if not isinstance(targets, torch.Tensor) or targets.device != predictions.device:
            targets = torch.as_tensor(targets, device=predictions.device)
        if predictions.shape != targets.shape:
            raise ValueError(f'Accuracy compares predicted labels with targets of the same shape; got '
                             f'predictions of shape {tuple(predictions.shape)} and targets of shape '
                             f'{tuple(targets.shape)} (turn scores into labels with argmax in a transform)')
        self.correct.add_((predictions == targets).sum())     # in place: no new state tensors per batch
        self.total.add_(targets.numel())

    def compute(self):
        return self.correct.float() / self.total.clamp(min=1)
