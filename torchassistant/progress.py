"""Console output of training: a live line on a terminal, one row per epoch everywhere.

    Epoch     1 [acc 0.8693, loss 0.4311] ===>................. 366 / 1875

The live line reads the running metrics (a host sync) only when it redraws, at most every
`interval` seconds; when output is not a terminal there is no live line, so logs get no `\\r` spam.
"""
import sys
import time

BAR_WIDTH = 20


def format_metrics(values):
    return '[' + ', '.join(f'{name} {value:.4f}' for name, value in values.items()) + ']'


def bar(done, total):
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total) if total else BAR_WIDTH
    return '=' * filled + '>' + '.' * (BAR_WIDTH - filled)


class EpochProgress:
    def __init__(self, epoch, total, stream=None, interval=0.2):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.epoch = epoch
        self.total = total
        self.interval = interval
        self.next_draw = 0.0
        self.width = 0

    def update(self, done, read_values):
        """Called after every batch; `read_values()` is called only when the line is redrawn."""
        if not self.live:
            return
        now = time.monotonic()
        if now < self.next_draw and done != self.total:
            return
        self.next_draw = now + self.interval
        line = f'Epoch {self.epoch:5d} {format_metrics(read_values())} {bar(done, self.total)} {done} / {self.total}'
        self._draw(line)

    def finish(self, values):
        line = f'Epoch {self.epoch:5d} {format_metrics(values)}'
        if self.live:
            self._draw(line)
            self.stream.write('\n')
            self.width = 0
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def _draw(self, line):
        padding = ' ' * max(0, self.width - len(line))
        self.stream.write('\r' + line + padding)
        self.stream.flush()
        self.width = len(line)
