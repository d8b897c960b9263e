"""Trainer events: what loggers (progress, CSV, TensorBoard, plots) subscribe to.

A listener is any object with methods named `on_<event>`; it implements only those it needs.
Adding a logger means writing a listener, never touching the loop.

    training_start(trainer, progress)          before the first epoch of this run
    stage_start(stage, progress)               a stage's first epoch in this run is about to start
    epoch_start(stage, epoch, total)           `epoch` is the stage's epoch number, `total` its batches
    batch_end(done, read_values, meters)       after each training iteration; `read_values()` returns the
                                               running metrics (a host sync: call it only when displaying);
                                               `meters`: the Meters of the pipeline that just stepped
                                               (`meters.losses[i].last` is its batch loss, on the device)
    validation_start(stage, total)             `total`: the batches the validation passes will run
    validation_batch(done)                     after each validation batch
    epoch_end(stage, epoch, row, progress)     the epoch's recorded row (validation metrics, or running ones)
    checkpoint_saved(stage, progress, path)    a checkpoint (end of epoch or mid-epoch) is safely on disk
    training_end(progress, seconds)            this run ends normally (not on errors or interruption)
"""

NAMES = ('training_start', 'stage_start', 'epoch_start', 'batch_end', 'validation_start', 'validation_batch',
         'epoch_end', 'checkpoint_saved', 'training_end')


class Events:
    def __init__(self, listeners=()):
        self.handlers = {name: [] for name in NAMES}
        for listener in listeners:
            self.subscribe(listener)

    def subscribe(self, listener):
        for name in NAMES:
            handler = getattr(listener, 'on_' + name, None)
            if handler is not None:
                self.handlers[name].append(handler)

    def emit(self, name, *args):
        for handler in self.handlers[name]:
            handler(*args)

    def emitter(self, name):
        """A function that emits `name` to the listeners subscribed now, for the loop to call on every
        batch: the one handler itself when there is one, so emitting costs no more than the call."""
        handlers = tuple(self.handlers[name])
        if len(handlers) == 1:
            return handlers[0]

        def emit(*args):
            for handler in handlers:
                handler(*args)
        return emit
