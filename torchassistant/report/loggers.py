"""Loggers: trainer-event listeners that record training in the session folder (through the store).

    "loggers": ["csv", "tensorboard"]      (training spec, under "train"; default ["csv"])

csv          metrics/<stage>.csv, rewritten from the stage's history whenever an epoch-end checkpoint
             is saved, so the CSV always matches the newest checkpoint
tensorboard  tensorboard/ event files: per-epoch scalars (every metric of the row, by stage), the
             learning rate of each optimizer, and the training loss of every batch
plots        plots/stage_N.png learning curves (as `torchassistant plot` draws them), redrawn after each
             epoch (implies csv, which they are drawn from)

Listeners run in the order of LOGGERS, so the CSV is written before the plots read it.
"""


class MetricsCSV:
    def __init__(self, store):
        self.store = store

    def on_checkpoint_saved(self, stage, progress, path):
        if progress.batch == 0:      # end of an epoch
            self.store.write_metrics(stage.index, progress.history[stage.index])


class TensorBoard:
    """Scalars for TensorBoard under SESSION/tensorboard: every metric of each epoch's row (tag
    "<stage>/<name>", step = epochs finished), each optimizer's learning rate ("lr/<optimizer>"), and
    each training batch's loss ("batch/<pipeline>/<loss>", step = training iterations so far). Batch
    losses stay on the device until the epoch ends: one host sync per epoch, not per batch."""

    def __init__(self, store, entities):
        try:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked for
        except ImportError as e:
            from torchassistant.core.errors import UsageError
            raise UsageError('the "tensorboard" logger (train.loggers) needs the tensorboard package: '
                             'pip install tensorboard (or pip install "torchassistant[tensorboard]")') from e
        self.writer = SummaryWriter(log_dir=store.folder('tensorboard'))
        self.entities = entities
        self.before = 0           # training iterations of the finished epochs
        self.pending = []

    def on_training_start(self, trainer, progress):
        per_epoch = {stage.index: sum(p.num_batches() for p in stage.training) for stage in trainer.stages}
        self.before = sum(per_epoch.get(index, 0) * len(rows) for index, rows in progress.history.items())

    def on_epoch_start(self, stage, epoch, total):
        self.total = total

    def on_batch_end(self, done, read_values, meters):
        for use, meter in zip(meters.pipeline.losses, meters.losses):
            self.pending.append((f'batch/{meters.pipeline.name}/{use.display_name}', meter.last, self.before + done))

    def on_epoch_end(self, stage, epoch, row, progress):
        self.before += self.total
        self._write_batches()
        for name, value in row.items():
            self.writer.add_scalar(f'stage {stage.index}/{name}', value, progress.epoch)
        for name, record in self.entities.optimizers.items():
            for i, group in enumerate(record.optimizer.param_groups):
                suffix = f' group {i}' if len(record.optimizer.param_groups) > 1 else ''
                self.writer.add_scalar(f'lr/{name}{suffix}', group['lr'], progress.epoch)
        self.writer.flush()

    def _write_batches(self):
        if not self.pending:
            return
        import torch
        values = torch.stack([v.detach().float().reshape(()) for _, v, _ in self.pending]).tolist()
        for (tag, _, step), value in zip(self.pending, values):
            self.writer.add_scalar(tag, value, step)
        self.pending = []

    def on_training_end(self, progress, seconds):
        self.writer.close()


class Plots:
    def __init__(self, store):
        self.store = store

    def on_checkpoint_saved(self, stage, progress, path):
        if progress.batch == 0:
            from torchassistant.report import plots  # matplotlib: only when asked for
            plots.write(self.store.path)


LOGGERS = {'csv': lambda store, entities: MetricsCSV(store), 'tensorboard': TensorBoard,
           'plots': lambda store, entities: Plots(store)}
