"""Console output of training, as a trainer-event listener.

On a terminal, a tqdm line per epoch that is replaced by the epoch's row, then a bar for validation:

    Training stage 0 in progress
    Epoch     1 [acc 0.8693, loss 0.4311] |███▌      | 366 / 1875 [00:04<00:19, 79.3 it/s]
    Epoch     1 [acc 0.9421, loss 0.1903, val acc 0.9387, val loss 0.2015]

In a log (not a terminal), and on a terminal that reports no size (0 columns or 0 rows: `script`, some CI
and container pseudo-terminals, where tqdm would draw nothing), there is no `\\r`: a plain progress line
every `log_seconds` or 10 % of the epoch, and the row. Running metrics (a host sync) are read only when a
line is drawn.

The end-of-training summary names each stage's best epoch by `train.best_metric` if the spec gives one,
else by `best_epoch`'s default (the first validation metric); a stage that trains several pipelines (a
GAN's two players) has no one objective to default to, so it names none.
"""
import math
import os
import sys
import time

from tqdm import tqdm

from torchassistant.spec.rules import best_epoch, best_metric_mode, lower_is_better  # noqa: F401  (defined there)

BAR_FORMAT = '{desc} |{bar:20}| {n_fmt} / {total_fmt} [{elapsed}<{remaining}, {rate_fmt}]'


def format_metrics(values):
    return '[' + ', '.join(f'{name} {value:.4f}' for name, value in values.items()) + ']'


def epoch_label(epoch):
    return f'Epoch {epoch:5d}'


class ConsoleProgress:
    """Prints what training does. `quiet`: only the summary at the end."""

    def __init__(self, stream=None, quiet=False, interval=0.2, log_seconds=30.0, best_metric=None):
        self.stream = stream or sys.stdout
        self.best_metric = best_metric or {}     # the spec's train.best_metric decides "best", if given
        self.quiet = quiet
        self.live = not quiet and live_terminal(self.stream)
        self.interval = interval
        self.log_seconds = log_seconds
        self.bar = None
        self.session = None
        self.trained = {}        # stage index -> how many pipelines it trains (from the trainer's stages)

    # -- events --
    def on_training_start(self, trainer, progress):
        self.session = trainer.store.path
        self.first_epoch = progress.epoch
        self.trained = {stage.index: len(stage.training) for stage in trainer.stages}

    def on_stage_start(self, stage, progress):
        self._print(f'Training stage {stage.index} in progress')

    def on_epoch_start(self, stage, epoch, total):
        self.epoch, self.total = epoch, total
        self.started = self.next_draw = time.monotonic()
        self.next_log, self.next_log_count = self.started + self.log_seconds, max(1, math.ceil(total / 10))
        if self.live:
            self.bar = tqdm(total=total, desc=epoch_label(epoch), bar_format=BAR_FORMAT, file=self.stream,
                            leave=False, mininterval=0, miniters=1, dynamic_ncols=True)   # we throttle: below

    def on_batch_end(self, done, read_values, meters=None):
        if self.quiet:
            return
        now = time.monotonic()
        if self.live:
            if now >= self.next_draw or done == self.total:
                self.next_draw = now + self.interval
                self.bar.set_description_str(f'{epoch_label(self.epoch)} {format_metrics(read_values())}',
                                             refresh=False)
                self.bar.update(done - self.bar.n)
        elif now >= self.next_log or done >= self.next_log_count:
            self.next_log = now + self.log_seconds
            self.next_log_count = done + max(1, math.ceil(self.total / 10))
            elapsed = now - self.started
            rate = done / elapsed if elapsed > 0 else float('nan')
            left = (self.total - done) / rate if rate and rate == rate else float('nan')
            self._print(f'{epoch_label(self.epoch)} {format_metrics(read_values())} {done} / {self.total} '
                        f'[{_clock(elapsed)}<{_clock(left)}, {rate:.2f} it/s]')

    def on_validation_start(self, stage, total):
        if self.live:
            self.bar.close()
            self.bar = tqdm(total=total, desc=f'{epoch_label(self.epoch)} validating', bar_format=BAR_FORMAT,
                            file=self.stream, leave=False, mininterval=self.interval, dynamic_ncols=True)

    def on_validation_batch(self, done):
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def on_epoch_end(self, stage, epoch, row, progress):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._print(f'{epoch_label(epoch)} {format_metrics(row)}')

    def on_training_end(self, progress, seconds):
        epochs = progress.epoch - self.first_epoch
        lines = [f'Training finished: {epochs} epoch(s) in {_clock(seconds)} (all {progress.stage} stage(s) done, '
                 f'{progress.epoch} epochs in total)']
        for stage, rows in sorted(progress.history.items()):
            mode = best_metric_mode(self.best_metric) if self.best_metric else None
            pipelines = self.trained.get(int(stage), 1)
            best = best_epoch(rows, self.best_metric.get('name'), mode, pipelines)
            if best is not None:
                number, name, value = best
                lines.append(f'  stage {stage}: best {name} {value:.4f} at epoch {number} of {len(rows)}')
            elif rows and pipelines > 1:
                lines.append(f'  stage {stage}: no best epoch named: it trains {pipelines} pipelines, so no one '
                             f'metric says which epoch is best; train.best_metric names one')
        lines.append(f'  metrics: {os.path.join(self.session, "metrics")}/<stage>.csv; checkpoints: '
                     f'{os.path.join(self.session, "checkpoints")}')
        print('\n'.join(lines), file=self.stream, flush=True)

    def _print(self, line):
        if not self.quiet:
            print(line, file=self.stream, flush=True)


def _clock(seconds):
    if seconds != seconds or seconds == float('inf'):
        return '?'
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return (f'{hours}:' if hours else '') + f'{rest // 60:02d}:{rest % 60:02d}'


def live_terminal(stream):
    """Whether `stream` gets a live bar: a terminal, unless it reports 0 columns or 0 rows (tqdm then
    draws nothing at all); one whose size cannot be read (no file descriptor) is taken as it says."""
    if not _isatty(stream):
        return False
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return True
    return size.columns > 0 and size.lines > 0


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
