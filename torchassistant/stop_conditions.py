"""Stop conditions: called after every epoch as `condition(epoch, history)`; True ends the stage.

`epoch` is the number of epochs the stage has completed; `history` is the list of that stage's
per-epoch metric dicts (display name -> value), oldest first.
"""


class EpochsCompleted:
    def __init__(self, num_epochs):
        if not isinstance(num_epochs, int) or isinstance(num_epochs, bool) or num_epochs < 0:
            raise ValueError(f'num_epochs must be a non-negative integer, got {num_epochs!r}')
        self.num_epochs = num_epochs

    def __call__(self, epoch, history):
        return epoch >= self.num_epochs
