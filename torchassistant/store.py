"""The session folder: the only module that writes there.

Layout (see README):
    SESSION/session.json              format version, created by which TorchAssistant
    SESSION/spec.json                 the training spec as given
    SESSION/learned.pt                splits and fitted preprocessors, drawn once at init
    SESSION/checkpoints/epoch_N.pt    state after N finished epochs (0 = at init), with
    SESSION/checkpoints/epoch_N.sha256  its checksum, written after it
    SESSION/metrics/<stage>.csv       one row per epoch of that stage

Every file is written to a temporary name, flushed to disk and renamed, so a crash leaves either
the old file or the new one. A checkpoint without a matching checksum is ignored on load.
"""
import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile

import torch

from torchassistant import version
from torchassistant.errors import UsageError

FORMAT = 1
_CHECKPOINT = re.compile(r'epoch_(\d+)\.pt$')


class SessionStore:
    def __init__(self, path):
        self.path = os.fspath(path)

    # ---- creating -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path, spec_text, learned_state, checkpoint_state, overwrite=False):
        """Write a complete new session at `path` in a temporary folder, then move it into place."""
        path = os.path.normpath(os.fspath(path))
        cls.check_target(path, overwrite)
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.', dir=parent)
        except OSError as e:
            raise UsageError(f'cannot create the session folder "{path}": {e.strerror} ({e.filename})') from e
        try:
            store = cls(staging)
            _atomic_write(os.path.join(staging, 'session.json'),
                          json.dumps({'format': FORMAT, 'torchassistant': version}, indent=2).encode())
            _atomic_write(os.path.join(staging, 'spec.json'), spec_text.encode())
            _atomic_write(os.path.join(staging, 'learned.pt'), _serialize(learned_state))
            os.makedirs(os.path.join(staging, 'checkpoints'))
            os.makedirs(os.path.join(staging, 'metrics'))
            store.save_checkpoint(0, checkpoint_state)
            if os.path.exists(path):
                old = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.old.', dir=parent)
                os.replace(path, os.path.join(old, 'session'))
                os.replace(staging, path)
                shutil.rmtree(old)
            else:
                os.replace(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(path)

    @staticmethod
    def check_target(path, overwrite=False):
        """UsageError unless a new session may be created at `path`: nothing is there, or (with
        `overwrite`) a session, never any other folder or file."""
        if not os.path.exists(path):
            return
        if not overwrite:
            raise UsageError(f'"{path}" already exists; init never overwrites a session. Resume it with: '
                             f'python train.py {path} ; or pass --force to replace it with a fresh session.')
        if not os.path.isfile(os.path.join(path, 'session.json')):
            raise UsageError(f'"{path}" exists and is not a TorchAssistant session (it has no session.json); '
                             f'--force replaces only sessions, so nothing was changed. Pick another session_dir.')

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UsageError(f'session folder "{path}" does not exist; create it with: python init.py SPEC.json')
        if not os.path.isdir(path):
            raise UsageError(f'"{path}" is a file, not a session folder; the command expects the folder '
                             f'that init created (the spec\'s session_dir)')
        if not os.path.isfile(os.path.join(path, 'session.json')):
            raise UsageError(f'"{path}" is not a TorchAssistant session (it has no session.json); '
                             f'create one with: python init.py SPEC.json')
        with open(os.path.join(path, 'session.json')) as f:
            meta = json.load(f)
        if meta.get('format') != FORMAT:
            raise UsageError(f'session "{path}" has format {meta.get("format")}, this TorchAssistant reads {FORMAT}')
        return cls(path)

    def spec_file(self):
        return os.path.join(self.path, 'spec.json')

    def learned_state(self):
        with open(os.path.join(self.path, 'learned.pt'), 'rb') as f:
            return _deserialize(f.read())

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, epoch, state):
        data = _serialize(state)
        base = os.path.join(self.path, 'checkpoints', f'epoch_{epoch}')
        _atomic_write(base + '.pt', data)
        _atomic_write(base + '.sha256', hashlib.sha256(data).hexdigest().encode())

    def checkpoint_epochs(self):
        folder = os.path.join(self.path, 'checkpoints')
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return sorted(int(m.group(1)) for m in map(_CHECKPOINT.match, names) if m)

    def latest_checkpoint(self):
        """(epoch, state) of the newest checkpoint whose checksum matches; UsageError if none."""
        for epoch in reversed(self.checkpoint_epochs()):
            base = os.path.join(self.path, 'checkpoints', f'epoch_{epoch}')
            try:
                with open(base + '.pt', 'rb') as f:
                    data = f.read()
                with open(base + '.sha256') as f:
                    expected = f.read().strip()
            except OSError:
                continue
            if hashlib.sha256(data).hexdigest() == expected:
                return epoch, _deserialize(data)
        raise UsageError(f'session "{self.path}" has no intact checkpoint in {self.path}/checkpoints; '
                         f'recreate it with: python init.py --force SPEC.json')

    # ---- metrics ------------------------------------------------------------------------------
    def write_metrics(self, stage, rows):
        """Rewrite metrics/<stage>.csv from the stage's history, so it always matches the checkpoint."""
        header = ['epoch'] + list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(header)
        for epoch, row in enumerate(rows, start=1):
            writer.writerow([epoch] + [_format(row.get(k)) for k in header[1:]])
        _atomic_write(os.path.join(self.path, 'metrics', f'{stage}.csv'), out.getvalue().encode())


def _format(value):
    return '' if value is None else f'{value:.6g}'


def _serialize(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _deserialize(data):
    # Session files are written by this program for its user; they hold optimizer and RNG state
    # that weights_only loading rejects.
    return torch.load(io.BytesIO(data), map_location='cpu', weights_only=False)


def _atomic_write(path, data):
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix='.tmp-', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
