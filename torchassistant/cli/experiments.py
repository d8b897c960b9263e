"""The experiment commands: `sweep`, `status`/`plot` of a sweep folder, `compare`."""
import sys

from torchassistant.cli import sweep as sweep_command
from torchassistant.experiment import compare as comparing


def sweep(sweep_path, jobs=1, worker=False, stream=None):
    if jobs < 1:
        from torchassistant.core.errors import UsageError
        raise UsageError(f'--jobs must be at least 1, not {jobs}')
    return sweep_command.sweep(sweep_path, jobs=jobs, worker=worker, stream=stream)


def sweep_status(sweep_dir, as_json=False, stream=None):
    status = comparing.sweep_status(sweep_dir)
    print(comparing.to_json(status) if as_json else comparing.describe(status), file=stream or sys.stdout)
    return status


def plot_sweep(sweep_dir, out_dir=None, stream=None):
    paths = comparing.plot_sweep(sweep_dir, out_dir)
    for path in paths:
        print(f'wrote {path}', file=stream or sys.stdout)
    return paths


def compare(paths, metric=None, out=None, stream=None):
    rows, statuses = comparing.compare(paths, metric)
    print(comparing.describe_comparison(rows), file=stream or sys.stdout)
    if out:
        print(f'wrote {comparing.plot_comparison(rows, statuses, out)}', file=stream or sys.stdout)
    return rows
