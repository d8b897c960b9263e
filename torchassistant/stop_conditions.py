"""Stop conditions: called once after every epoch as `condition(epoch, history)`; True ends the stage.

`epoch` is the number of epochs the stage has completed (1 after its first); `history` is the list of
that stage's per-epoch metric dicts (display name -> value), oldest first, restored on resume. A stage
always runs at least one epoch: the condition is never asked before it.
"""
from torchassistant.spec.rules import num_epochs_problem


class EpochsCompleted:
    def __init__(self, num_epochs):
        problem = num_epochs_problem(num_epochs)
        if problem:
            raise ValueError(problem)
        self.num_epochs = num_epochs

    def __call__(self, epoch, history):
        return epoch >= self.num_epochs


class EarlyStopping:
    """Stops when `monitor` (a display name in the stage's rows, e.g. "val loss") has failed to beat
    its best value so far for more than `patience` epochs in a row.

    An epoch fails when it does not improve on the best by at least `min_delta` (with min_delta 0 a
    value equal to the best does not fail); `mode` is "min" (lower is better) or "max". A NaN fails.
    Everything is read from `history`, which is restored on resume, so a resumed stage stops exactly
    when an uninterrupted one would.
    """

    def __init__(self, monitor, min_delta=0, patience=1, mode='min'):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f'monitor must be the display name of a metric or loss (e.g. "val loss"), not {monitor!r}')
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not min_delta >= 0:
            raise ValueError(f'min_delta must be a number >= 0, not {min_delta!r}')
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f'patience must be an integer >= 0 (epochs in a row without improvement), '
                             f'not {patience!r}')
        if mode not in ('min', 'max'):
            raise ValueError(f'mode must be "min" (lower is better) or "max", not {mode!r}')
        self.monitor, self.min_delta, self.patience, self.mode = monitor, min_delta, patience, mode

    def __call__(self, epoch, history):
        return self.failures(history) > self.patience

    def failures(self, history):
        """How many epochs in a row, up to the last, failed to beat the best value before them."""
        best, failed = None, 0
        for row in history:
            value = self._value(row)
            if value != value:                  # NaN
                failed += 1
            elif best is None:
                best, failed = value, 0
            else:
                gain = best - value if self.mode == 'min' else value - best
                if gain >= self.min_delta:
                    best, failed = (value if gain > 0 else best), 0
                else:
                    failed += 1
        return failed

    def _value(self, row):
        if self.monitor not in row:
            raise ValueError(f'EarlyStopping monitors "{self.monitor}", which this stage does not record; its rows '
                             f'have: {", ".join(row) or "nothing"}')
        return float(row[self.monitor])
