"""The session folder: its layout, and the only module that writes there.

Layout (see README):
    SESSION/session.json                    format version, created by which TorchAssistant
    SESSION/spec.json                       the training spec as given (spec.yaml: given in YAML)
    SESSION/overrides.json                  the --set arguments it is used with: {"init": [...], "train": [...]}
    SESSION/trial.json                      a sweep's trial: its number, values, state (pruned: when and why)
    SESSION/mlflow.json                     the "mlflow" logger's run id
    SESSION/expanded.json                   a concise spec: the explicit spec it was filled in to at init
    SESSION/learned.pt                      splits and fitted preprocessors, drawn once at init (and
    SESSION/learned.sha256                    its checksum)
    SESSION/train.lock                      while a trainer runs: {"pid", "host", "since", "command"}
                                              (the protocol: torchassistant.session.lock)
    SESSION/checkpoints/epoch_N.pt          state after N finished epochs (0 = at init), with
    SESSION/checkpoints/epoch_N.sha256        its checksum, written after it
    SESSION/checkpoints/epoch_N_batch_M.pt  state M batches into epoch N+1 (and its .sha256)
                                              (what a checkpoint holds: torchassistant.session.checkpoint)
    SESSION/checkpoints/best.pt             a copy of the best epoch-end checkpoint by train.best_metric;
    SESSION/checkpoints/best.json             its record: which epoch, what value, best.pt's checksum
                                              (and the record before, while an update is under way)
    SESSION/metrics/<stage>.csv             one row per epoch of that stage
    SESSION/plots/stage_<stage>.png         learning curves (`torchassistant plot`, the "plots" logger)
    SESSION/tensorboard/                    event files, written by TensorBoard's own writer (`folder`)
    SESSION/exports/<model>.<format>        models `torchassistant export` wrote (.safetensors, .pt2, .onnx)

Every file is written through `torchassistant.session.atomic` (a temporary name, synced, renamed), so a
crash leaves either the old file or the new one; a write that fails (disk full, read-only folder) leaves
the old one and no temporary file. A checkpoint without a matching checksum is ignored on load. Every
.pt file is read as plain data (torch.load(weights_only=True)): a file that holds code is refused, never
run.

Retention, after each checkpoint: the newest `keep_checkpoints` epoch-end checkpoints and the newest
`keep_checkpoints` mid-epoch ones of the epoch in progress; best.pt is a file of its own (a copy), never
deleted by retention.
Checkpoints are written only by the trainer holding train.lock (`lock()`).
"""
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
from collections import namedtuple

import torch

from torchassistant import version
from torchassistant.core.errors import TorchAssistantError, UsageError
from torchassistant.core.hints import Hint
from torchassistant.session import atomic
from torchassistant.session import lock as session_lock
from torchassistant.session.atomic import WriteError
from torchassistant.session.checkpoint import plain_data_problem
from torchassistant.session.checkpoint import rows as checkpoint_rows
from torchassistant.session.lock import LOCK
from torchassistant.spec.rules import KEEP_CHECKPOINTS, best_metric_mode, better, comparable

EXPANDED = 'expanded.json'
SPEC = 'spec.json'
SPEC_YAML = 'spec.yaml'     # a spec given in YAML is kept as it was given
FORMAT = 2          # 2: every .pt file is plain data (format 1 kept numpy arrays in checkpoints)
_CHECKPOINT = re.compile(r'epoch_(\d+)(?:_batch_(\d+))?\.(pt|sha256)$')


class CheckpointId(namedtuple('CheckpointId', 'epoch batch')):
    """(epoch, batch): `epoch` epochs finished and `batch` batches into the next (0: at an epoch's end)."""
    __slots__ = ()

    @property
    def name(self):
        return f'epoch_{self.epoch}' + (f'_batch_{self.batch}' if self.batch else '')

    def describe(self):
        return f'epoch {self.epoch}' + (f' + {self.batch} batches' if self.batch else '')


class SessionStore:
    def __init__(self, path, keep_checkpoints=KEEP_CHECKPOINTS, best_metric=None):
        self.path = os.fspath(path)
        self.shown = self.path          # the name messages use (create writes in a staging folder)
        self.set_retention(keep_checkpoints, best_metric)

    def set_retention(self, keep_checkpoints=KEEP_CHECKPOINTS, best_metric=None):
        """Keep the newest `keep_checkpoints` (>= 1) epoch-end checkpoints, and best.pt by `best_metric`,
        {"name": a metric's display name, "mode": "min" | "max"} (None: no best.pt)."""
        if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints < 1:
            raise ValueError(f'keep_checkpoints must be an integer >= 1, not {keep_checkpoints!r}')
        if best_metric is not None and best_metric_mode(best_metric) not in ('min', 'max'):
            raise ValueError(f'best_metric mode must be "min" or "max", not {best_metric.get("mode")!r}')
        self.keep_checkpoints = keep_checkpoints
        self.best_metric = best_metric

    # ---- creating -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path, spec_text, learned_state, checkpoint_state, overwrite=False, expanded_text=None,
               records=None, spec_name=SPEC):
        """Write a complete new session at `path` in a temporary folder, then move it into place.
        `expanded_text`: for a concise spec, the explicit spec it was filled in to (expanded.json);
        `records`: {name: data} of RECORDS written with it (overrides.json); `spec_name`: spec.json, or
        spec.yaml for a spec given in YAML (kept as it was given)."""
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
            store.shown = path
            atomic.write(os.path.join(staging, spec_name), spec_text.encode())
            for name, data in (records or {}).items():
                store.write_record(name, data)
            if expanded_text is not None:
                atomic.write(os.path.join(staging, EXPANDED), expanded_text.encode())
            learned = _serialize(learned_state, os.path.join(path, 'learned.pt'))
            atomic.write(os.path.join(staging, 'learned.pt'), learned)
            atomic.write(os.path.join(staging, 'learned.sha256'), _digest(learned))
            os.makedirs(os.path.join(staging, 'checkpoints'))
            os.makedirs(os.path.join(staging, 'metrics'))
            store.save_checkpoint(0, checkpoint_state)
            store._write_meta({'format': FORMAT, 'torchassistant': version, SPEC_DIGESTS: store.spec_digests()})
            if os.path.exists(path):
                cls._replace(path, staging, parent)
            else:
                os.replace(staging, path)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            raise WriteError(f'cannot create the session "{path}": {_os_error(e)}; nothing was created') from e
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(path)

    @classmethod
    def _replace(cls, path, staging, parent):
        """Put the session `staging` in place of the session `path`, holding the old one's train.lock
        meanwhile, so that no trainer starts on it (or still runs) while it is replaced."""
        lock = os.path.join(path, LOCK)
        mine = session_lock.acquire(lock, 'init --force', path, replacing=True)
        old = None
        try:
            old = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.old.', dir=parent)
            os.replace(path, os.path.join(old, 'session'))       # its train.lock (ours now) goes with it
            os.replace(staging, path)
        except BaseException:
            if old is not None and os.path.isdir(os.path.join(old, 'session')) and not os.path.exists(path):
                os.replace(os.path.join(old, 'session'), path)      # put the old session back
            session_lock.release(lock, mine)
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        session_lock.release(lock, mine)       # forgets it: the file went with the old session

    @staticmethod
    def check_target(path, overwrite=False):
        """UsageError unless a new session may be created at `path`: nothing is there, or (with
        `overwrite`) a session that no trainer holds and that is not the current folder (or above it);
        never any other folder or file."""
        if not os.path.exists(path):
            return
        if not overwrite:
            raise UsageError(f'"{path}" already exists; init never overwrites a session. Resume it with: ',
                             Hint("train", path), ' ; or pass --force to replace it with a fresh session.')
        if not os.path.isfile(os.path.join(path, 'session.json')):
            raise UsageError(f'"{path}" exists and is not a TorchAssistant session (it has no session.json); '
                             f'--force replaces only sessions, so nothing was changed. Pick another session_dir.')
        here, target = os.path.realpath(os.getcwd()), os.path.realpath(path)
        if here == target or here.startswith(target + os.sep):
            raise UsageError(f'"{path}" is the current folder; init --force cannot replace the folder it runs in. '
                             f'Run it from the folder above, with "session_dir": '
                             f'"{os.path.basename(target)}"; nothing was changed.')
        holder = session_lock.inspect(os.path.join(path, LOCK))
        if holder['state'] not in ('not running', 'stale lock'):
            raise UsageError(session_lock.replace_refused(path, os.path.join(path, LOCK), holder))

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path, keep_checkpoints=KEEP_CHECKPOINTS, best_metric=None):
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UsageError(f'session folder "{path}" does not exist; create it with: ', Hint("init", "SPEC.json"))
        if not os.path.isdir(path):
            raise UsageError(f'"{path}" is a file, not a session folder; the command expects the folder '
                             f'that init created (the spec\'s session_dir)')
        if not os.path.isfile(os.path.join(path, 'session.json')):
            raise UsageError(f'"{path}" is not a TorchAssistant session (it has no session.json); '
                             f'create one with: ', Hint("init", "SPEC.json"))
        meta = cls._meta(path)
        if meta.get('format') != FORMAT:
            raise UsageError(f'session "{path}" has format {meta.get("format")}, this TorchAssistant reads {FORMAT} '
                             f'(format 1 sessions hold objects that are not plain data); train it with the '
                             f'TorchAssistant that created it ({meta.get("torchassistant", "unknown version")}), '
                             f'or recreate it with: ', Hint("init", "--force", "SPEC.json"))
        return cls(path, keep_checkpoints, best_metric)

    def spec_file(self):
        yaml_spec = os.path.join(self.path, SPEC_YAML)
        return yaml_spec if os.path.isfile(yaml_spec) else os.path.join(self.path, SPEC)

    def overrides(self, part=None):
        """The --set arguments the session's spec is used with, as texts: init's (applied to the spec as
        given), train's (applied to the spec training runs: for a concise spec, the one it was filled in
        to), or both (`part` None)."""
        record = self.read_record('overrides.json', {})
        parts = ('init', 'train') if part is None else (part,)
        texts = [x for p in parts for x in record.get(p, [])] if isinstance(record, dict) else None
        if texts is None or not all(isinstance(x, str) for x in texts):
            raise UsageError(f'{self._shown("overrides.json")} is damaged: expected {{"init": [...], "train": [...]}} '
                             f'of --set arguments')
        return texts

    def expanded_spec(self):
        """The explicit spec a concise spec was filled in to at init (plain data), or None."""
        path = os.path.join(self.path, EXPANDED)
        if not os.path.isfile(path):
            return None
        try:
            with open(path, 'rb') as f:
                expanded = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise UsageError(f'{self._shown(EXPANDED)} is damaged ({e}): it is the explicit spec the session\'s '
                             f'concise spec was filled in to at init. Recreate the session with: ',
                             Hint("init", "--force", "SPEC.json")) from None
        if not isinstance(expanded, dict):
            raise UsageError(f'{self._shown(EXPANDED)} is damaged (not a JSON object)')
        return expanded

    def folder(self, name):
        """SESSION/<name>, created if missing: for files a library writes itself (TensorBoard's events)."""
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        return path

    @staticmethod
    def _meta(path):
        """session.json of the session at `path`: a UsageError naming it when it is not what init wrote."""
        shown = os.path.join(path, 'session.json')
        try:
            with open(shown, 'rb') as f:
                meta = json.loads(f.read())
        except OSError as e:
            raise UsageError(f'{shown} cannot be read: {_os_error(e)}') from None
        except ValueError as e:
            raise UsageError(f'{shown} is damaged (it is not JSON: {e}); it says which format the session has, so '
                             f'the session cannot be used. Recreate it with: ', Hint("init", "--force", "SPEC.json"),
                             ' (or restore the file from a copy)') from None
        if not isinstance(meta, dict):
            raise UsageError(f'{shown} is damaged (it holds {type(meta).__name__}, not {{"format": ...}}); recreate '
                             f'the session with: ', Hint("init", "--force", "SPEC.json"))
        return meta

    def learned_state(self):
        """learned.pt (splits and fitted preprocessors, drawn at init), checked against learned.sha256
        (sessions made before it was written have none)."""
        shown = self._shown('learned.pt')
        try:
            with open(os.path.join(self.path, 'learned.pt'), 'rb') as f:
                data = f.read()
        except OSError as e:
            raise UsageError(f'{shown} cannot be read: {_os_error(e)}; it holds the splits and fitted '
                             f'preprocessors init drew, which the session needs') from None
        try:
            with open(os.path.join(self.path, 'learned.sha256')) as f:
                expected = f.read().strip()
        except FileNotFoundError:
            expected = None
        if expected is not None and _digest(data).decode() != expected:
            raise UsageError(f'{shown} is damaged (its checksum does not match learned.sha256): it holds the splits '
                             f'and fitted preprocessors init drew, which cannot be drawn again the same way, so the '
                             f'session is not used. Restore the file from a copy, or recreate the session with: ',
                             Hint("init", "--force", "SPEC.json"))
        return _deserialize(data, shown)

    # ---- one writer ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, command, stream=None, job=None):
        """Hold SESSION/train.lock while the block runs, so one trainer at a time writes the session.
        A lock left by a process that is gone (on this host), or by an earlier group of the same torchrun
        `job`, is taken over with a one-line notice on `stream`; any other holder is a UsageError naming
        it. Temporary files of a writer that died are removed once the lock is held."""
        path = os.path.join(self.path, LOCK)
        mine = session_lock.acquire(path, command, self.shown, stream, job)
        try:
            self._remove_leftovers()
            yield self
        finally:
            session_lock.release(path, mine)

    def _remove_leftovers(self):
        for folder in (self.path, self._file(''), os.path.join(self.path, 'metrics'), os.path.join(self.path, 'plots')):
            names = os.listdir(folder) if os.path.isdir(folder) else []
            for name in names:
                if name.startswith(atomic.TEMPORARY_PREFIX) or name.startswith(LOCK + session_lock.STALE_SUFFIX):
                    atomic.remove(os.path.join(folder, name))

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, epoch, state, batch=0, metrics=None):
        """Save `state` as the checkpoint (epoch, batch) and apply retention; the .pt file's path.
        `metrics` (the epoch's row, epoch-end checkpoints only) decides whether it becomes best.pt."""
        ident = CheckpointId(epoch, batch)
        base = self._file(ident.name)
        data = _serialize(state, self._shown('checkpoints', ident.name + '.pt'))
        try:
            atomic.write(base + '.pt', data)
            atomic.write(base + '.sha256', _digest(data))
        except OSError as e:
            raise WriteError(f'could not save the checkpoint {self._shown("checkpoints", ident.name + ".pt")}: '
                             f'{_os_error(e)}. {self._intact_note(ident)}') from e
        if not batch and metrics is not None and self.best_metric:
            self._update_best(ident, metrics, data)
        self._prune(ident)
        return base + '.pt'

    def checkpoint_ids(self):
        """CheckpointIds of the checkpoints with both files present (not yet verified), oldest first."""
        found = {}
        for match in filter(None, map(_CHECKPOINT.match, self._names())):
            found.setdefault(_ident(match), set()).add(match.group(3))
        return sorted(ident for ident, kinds in found.items() if kinds == {'pt', 'sha256'})

    def damaged_checkpoints(self):
        """Names of the checkpoints present whose checksum does not match (never used), oldest first."""
        return [i.name for i in self.checkpoint_ids() if self._read_intact(i.name) is None]

    def checkpoint_epochs(self):
        """Epochs of the epoch-end checkpoints present, oldest first."""
        return [i.epoch for i in self.checkpoint_ids() if not i.batch]

    def latest_checkpoint(self, notice=None, check=None):
        """(CheckpointId, state) of the newest checkpoint whose checksum matches; UsageError if none.
        `notice(text)` is told of newer ones passed over because they are damaged; `check(state)` says
        what is wrong with a state that is not a checkpoint (checkpoint.problem): a UsageError naming it."""
        damaged = []
        for ident in reversed(self.checkpoint_ids()):
            data = self._read_intact(ident.name)
            if data is None:
                damaged.append(self._shown('checkpoints', ident.name + '.pt'))
                continue
            if damaged and notice is not None:
                notice(f'{", ".join(damaged)} {"is" if len(damaged) == 1 else "are"} damaged (the checksum does not '
                       f'match); using the newest intact checkpoint, {ident.name}.pt ({ident.describe()}), instead')
            return ident, _checked(data, self._shown('checkpoints', ident.name + '.pt'), check)
        raise UsageError(f'session "{self.shown}" has no intact checkpoint in {self.shown}/checkpoints; '
                         f'recreate it with: ', Hint("init", "--force", "SPEC.json"))

    def checkpoint(self, which='latest', notice=None, check=None):
        """The state of checkpoint `which`: "latest" (the newest intact one), "best" (best.pt) or an
        epoch number N (the checkpoint at the end of epoch N). UsageError, listing what exists, if absent.
        `notice(text)` is told when what is used is not what was asked for (an older best.pt); `check`:
        as for latest_checkpoint."""
        if which == 'latest':
            return self.latest_checkpoint(notice, check)[1]
        if which == 'best':
            return self.best_checkpoint(notice, check)[1]
        if not (isinstance(which, int) and not isinstance(which, bool) and which >= 0):
            raise UsageError(f'a checkpoint is "latest", "best" or an epoch number, not {which!r}')
        name = f'epoch_{which}'
        shown = self._shown('checkpoints', name + '.pt')
        if not os.path.isfile(self._file(name) + '.pt'):
            raise UsageError(f'session "{self.shown}" has no checkpoint of epoch {which}; it has {self.inventory()}')
        data = self._read_intact(name)
        if data is None:
            raise UsageError(f'{shown} is damaged (its checksum does not match); session "{self.shown}" has '
                             f'{self.inventory()}')
        return _checked(data, shown, check)

    # ---- best.pt ------------------------------------------------------------------------------
    # best.pt is a copy of the best epoch-end checkpoint; best.json its record: {"epoch", "metric", "mode",
    # "value", "sha256" (of best.pt), "previous": the record before, or null}. An update writes best.json
    # first, then best.pt, each atomically: whenever a process stops, best.pt matches best.json's record or
    # its "previous" one, so best.pt is always described. The next trainer completes an update a crash cut
    # short (repair_best).

    def best_record(self):
        """The record of the best epoch (best.json), or None when there is none; UsageError naming
        best.json when it is not a record TorchAssistant wrote."""
        path = self._file('best') + '.json'
        try:
            with open(path, 'rb') as f:
                text = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UsageError(f'{self._shown("checkpoints", "best.json")} cannot be read: {_os_error(e)}') from None
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        problem = _record_problem(record)
        if problem:
            raise UsageError(f'{self._shown("checkpoints", "best.json")} is damaged ({problem}); it is not the record '
                             f'TorchAssistant writes of best.pt. The next train repairs it: ', Hint('train', self.shown))
        if 'sha256' not in record:       # written before best.json held its checksum: best.sha256 did
            try:
                with open(self._file('best') + '.sha256') as f:
                    record = {**record, 'sha256': f.read().strip(), 'previous': None}
            except OSError:
                record = {**record, 'sha256': None, 'previous': None}
        return record

    def best_checkpoint(self, notice=None, check=None):
        """(record, state) of best.pt, the record being the one of best.json that best.pt matches; when
        that is the "previous" one (training stopped while updating it), `notice(text)` says so."""
        record = self.best_record()
        shown = self._shown('checkpoints', 'best.pt')
        if record is None or not os.path.isfile(self._file('best') + '.pt'):
            raise UsageError(f'session "{self.shown}" has no best checkpoint (train.best_metric picks it at the end '
                             f'of each epoch); it has {self.inventory()}')
        held, data = self._best_held(record)
        if held is None:
            raise UsageError(f'{shown} is damaged (its checksum does not match its record, '
                             f'{self._shown("checkpoints", "best.json")}); session "{self.shown}" has '
                             f'{self.inventory()}. The next train rebuilds it where it can: ', Hint('train', self.shown))
        if held is not record and notice is not None:
            notice(f'{shown} still holds epoch {held["epoch"]} ({held["metric"]} {held["value"]:.6g}), the best '
                   f'before epoch {record["epoch"]}: training stopped while updating it; the next train completes '
                   f'that update')
        return held, _checked(data, shown, check)

    def best_state(self):
        """What best.pt holds, without loading it: (record it matches or None, problem or None)."""
        try:
            record = self.best_record()
        except UsageError as e:
            return None, e.message
        if record is None or not os.path.isfile(self._file('best') + '.pt'):
            return None, None
        held, _ = self._best_held(record)
        if held is None:
            return None, 'best.pt is damaged (its checksum does not match best.json)'
        if held is not record:
            return held, f'best.pt holds the best before epoch {record["epoch"]} (an update was cut short)'
        return held, None

    def _best_held(self, record):
        """(the record, or its "previous", that best.pt matches, or None; best.pt's bytes)."""
        try:
            with open(self._file('best') + '.pt', 'rb') as f:
                data = f.read()
        except OSError:
            return None, None
        digest = _digest(data).decode()
        previous = record.get('previous')
        held = record if digest == record['sha256'] else previous if previous and digest == previous['sha256'] \
            else None
        return held, data

    def inventory(self):
        """What checkpoints exist, in words, for messages."""
        ids = self.checkpoint_ids()
        ends = [str(i.epoch) for i in ids if not i.batch]
        parts = [f'epoch-end checkpoints of epochs {", ".join(ends)}' if ends else 'no epoch-end checkpoint']
        parts += [f'a mid-epoch one at {i.describe()}' for i in ids if i.batch]
        best, problem = self.best_state()
        if best:
            parts.append(f'best.pt (epoch {best["epoch"]}, {best["metric"]} {best["value"]:.6g})')
        elif problem:
            parts.append(problem)
        return '; '.join(parts)

    def _update_best(self, ident, row, data):
        """Make the epoch-end checkpoint `ident` (its bytes `data`, its row `row`) best.pt if it beats the
        best so far; True when it did."""
        name, mode = self.best_metric['name'], best_metric_mode(self.best_metric)
        if name not in row:
            raise UsageError(f'train.best_metric names "{name}", which is not among the metrics of epoch '
                             f'{ident.epoch}: {", ".join(row) or "none"}')
        value = float(row[name])
        try:
            best = self.best_record()
        except UsageError:
            best = None                 # damaged: replaced (repair_best, at the start of training, said so)
        if not comparable(value) or best and (best['metric'], best['mode']) == (name, mode) \
                and not better(value, best['value'], mode):
            return False
        held = self._best_held(best)[0] if best else None
        record = {'epoch': ident.epoch, 'metric': name, 'mode': mode, 'value': value, 'sha256': _digest(data).decode(),
                  'previous': {k: v for k, v in held.items() if k != 'previous'} if held else None}
        self._write_best(record, data)
        return True

    def _write_best(self, record, data):
        base = self._file('best')
        try:        # the record first: best.pt, as it is until replaced, matches its "previous"
            atomic.write(base + '.json', json.dumps(record).encode())
            atomic.write(base + '.pt', data)
            atomic.remove(base + '.sha256')     # what best.json's checksum replaced
        except OSError as e:
            raise WriteError(f'could not update {self._shown("checkpoints", "best.pt")}: {_os_error(e)}; the '
                             f'checkpoint of epoch {record["epoch"]} itself is saved, and the next train completes '
                             f'the update') from e

    def repair_best(self, stream=None):
        """Before training (the lock held): best.pt and best.json made consistent after whatever stopped
        the last run (a crash between their writes, damage), and the latest epoch-end checkpoint's update
        of them done if it did not happen (a crash right after that checkpoint). Each change is a notice
        on `stream`; True when something changed."""
        if not self.best_metric:
            return False
        base, shown = self._file('best'), self._shown('checkpoints', 'best.pt')

        def say(text):
            print(f'notice: {text}', file=stream, flush=True)
        changed = False
        try:
            record = self.best_record()
        except UsageError as e:
            say(f'{e.message.split(" The next train")[0]} Removing it and {shown}; the best epoch is chosen '
                f'again from the next epoch-end checkpoint on')
            record, changed = None, True
            for suffix in ('.json', '.pt', '.sha256'):
                atomic.remove(base + suffix)
        if record is not None:
            held, _ = self._best_held(record)
            if held is not record:
                data = self._read_intact(f'epoch_{record["epoch"]}')
                if data is not None and _digest(data).decode() == record['sha256']:
                    self._write_best(record, data)
                    say(f'{shown} completed: it now holds epoch {record["epoch"]}, as best.json records (the update '
                        f'was cut short)')
                elif held is not None:
                    atomic.write(base + '.json', json.dumps({**held, 'previous': None}).encode())
                    say(f'{shown} holds epoch {held["epoch"]}, the best before epoch {record["epoch"]}, whose '
                        f'checkpoint is gone: best.json records epoch {held["epoch"]} again')
                else:
                    for suffix in ('.json', '.pt', '.sha256'):
                        atomic.remove(base + suffix)
                    say(f'{shown} was damaged and the checkpoint of epoch {record["epoch"]} it copied is gone: '
                        f'removed; the best epoch is chosen again from the next epoch-end checkpoint on')
                changed = True
        latest = next((i for i in reversed(self.checkpoint_ids()) if not i.batch and i.epoch), None)
        data = self._read_intact(latest.name) if latest else None
        rows = checkpoint_rows(_deserialize(data, self._shown('checkpoints', latest.name + '.pt'))) if data else None
        if rows is not None:
            if rows and self.best_metric['name'] in rows[-1] and self._update_best(latest, rows[-1], data):
                say(f'{shown} updated to epoch {latest.epoch}, which beats the best before it (the run that saved '
                    f'that checkpoint stopped before updating best.pt)')
                changed = True
        return changed

    def _prune(self, saved):
        """Delete the checkpoints up to `saved` that retention does not keep, and half-written pairs.
        Any later than `saved` are left alone: they failed their checksum (training resumed before them)
        and are replaced when training reaches them again."""
        ids = [i for i in self.checkpoint_ids() if i <= saved]
        ends = [i for i in ids if not i.batch]
        running = [i for i in ids if i.batch and (not ends or i > ends[-1])]
        keep = set(ends[-self.keep_checkpoints:] + running[-self.keep_checkpoints:])
        doomed = [m for m in filter(None, map(_CHECKPOINT.match, self._names()))
                  if _ident(m) <= saved and _ident(m) not in keep]
        for match in sorted(doomed, key=lambda m: m.group(3) == 'pt'):      # checksums first
            atomic.remove(self._file(match.group(0)))

    def _read_intact(self, name):
        """The bytes of checkpoints/<name>.pt when its checksum matches, else None."""
        try:
            with open(self._file(name) + '.pt', 'rb') as f:
                data = f.read()
            with open(self._file(name) + '.sha256') as f:
                expected = f.read().strip()
        except OSError:
            return None
        return data if _digest(data).decode() == expected else None

    def _intact_note(self, failed):
        previous = next((i for i in reversed(self.checkpoint_ids()) if i != failed and self._read_intact(i.name)),
                        None)
        if previous is None:
            return 'No earlier checkpoint is intact.'
        shown = self._shown('checkpoints', previous.name + '.pt')
        return (f'The previous checkpoint, {shown} ({previous.describe()}), is intact: free disk space or make '
                f'the folder writable, then run train.py again to resume from it.')

    def _file(self, name):
        return os.path.join(self.path, 'checkpoints', name)

    def _shown(self, *parts):
        return os.path.join(self.shown, *parts)

    def _names(self):
        folder = self._file('')
        return os.listdir(folder) if os.path.isdir(folder) else []

    # ---- metrics and plots --------------------------------------------------------------------
    def write_plot(self, name, data):
        """Write the PNG bytes `data` as SESSION/plots/<name>; its path."""
        path = os.path.join(self.folder('plots'), name)
        try:
            atomic.write(path, data)
        except OSError as e:
            raise WriteError(f'could not write {self._shown("plots", name)}: {_os_error(e)}') from e
        return path

    def write_export(self, name, data):
        """Write the bytes `data` as SESSION/exports/<name> (a model `torchassistant export` wrote); its path."""
        path = os.path.join(self.folder('exports'), name)
        try:
            atomic.write(path, data)
        except OSError as e:
            raise WriteError(f'could not write {self._shown("exports", name)}: {_os_error(e)}') from e
        return os.path.join(self.shown, 'exports', name)

    def write_metrics(self, stage, rows):
        """Rewrite metrics/<stage>.csv from the stage's history, so it always matches the checkpoint."""
        header = ['epoch'] + list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(header)
        for epoch, row in enumerate(rows, start=1):
            writer.writerow([epoch] + [_format(row.get(k)) for k in header[1:]])
        try:
            atomic.write(os.path.join(self.path, 'metrics', f'{stage}.csv'), out.getvalue().encode())
        except OSError as e:
            raise WriteError(f'could not write {self._shown("metrics", f"{stage}.csv")}: {_os_error(e)}') from e

    # ---- small JSON records: overrides.json (the --set arguments), trial.json (a sweep's trial) --------
    def write_record(self, name, data):
        """Write SESSION/<name> (one of RECORDS) as JSON; standard JSON only (NaN and inf as null). One of
        SPEC_FILES (overrides.json, written by init and train --set) gets its digest recorded too."""
        assert name in RECORDS, name
        text = json.dumps(_plain_json(data), indent=4, allow_nan=False) + '\n'
        try:
            atomic.write(os.path.join(self.path, name), text.encode())
        except OSError as e:
            raise WriteError(f'could not write {self._shown(name)}: {_os_error(e)}') from e
        meta_file = os.path.join(self.path, 'session.json')
        if name in SPEC_FILES and os.path.isfile(meta_file):
            meta = self._meta(self.path)
            if isinstance(meta.get(SPEC_DIGESTS), dict):
                self._write_meta({**meta, SPEC_DIGESTS: {**meta[SPEC_DIGESTS], name: _digest(text.encode()).decode()}})

    # ---- the spec, and what it makes run -------------------------------------------------------
    def spec_digests(self):
        """{file: SHA-256} of the SPEC_FILES present: what decides which code opening the session runs."""
        found = {}
        for name in SPEC_FILES:
            try:
                with open(os.path.join(self.path, name), 'rb') as f:
                    found[name] = _digest(f.read()).decode()
            except FileNotFoundError:
                pass
        return found

    def spec_changes(self):
        """The SPEC_FILES that differ from what init (or the last `torchassistant trust`) recorded, by
        name, added or removed ([] when none); None for a session made before digests were recorded."""
        recorded = self._meta(self.path).get(SPEC_DIGESTS)
        if recorded is None:
            return None
        if not isinstance(recorded, dict):
            raise UsageError(f'{self._shown("session.json")} is damaged ("{SPEC_DIGESTS}" is not {{file: digest}})')
        now = self.spec_digests()
        return [name for name in SPEC_FILES if recorded.get(name) != now.get(name)]

    def require_unchanged_spec(self):
        """UsageError when the spec files changed since they were recorded: opening the session would run
        code nobody accepted. [] when unchanged, None when no digest was recorded (an older session)."""
        changed = self.spec_changes()
        if changed:
            files = ', '.join(self._shown(name) + ('' if os.path.exists(os.path.join(self.path, name))
                                                   else ' (removed)') for name in changed)
            them = 'it' if len(changed) == 1 else 'them'
            raise UsageError(f'session "{self.shown}": {files} changed since init recorded {them}. The spec decides '
                             f'which code runs when the session is opened (every class and function it names is '
                             f'imported and called), so a changed spec is not used unasked. See what it imports '
                             f'now with: ', Hint('status', self.shown), ' ; if you made the change and trust it, '
                             'accept it with: ', Hint('trust', self.shown))
        return changed

    def accept_spec(self):
        """Record the spec files as they are now (`torchassistant trust`); the digests recorded."""
        digests = self.spec_digests()
        self._write_meta({**self._meta(self.path), SPEC_DIGESTS: digests})
        return digests

    def _write_meta(self, meta):
        try:
            atomic.write(os.path.join(self.path, 'session.json'), json.dumps(meta, indent=2).encode())
        except OSError as e:
            raise WriteError(f'could not write {self._shown("session.json")}: {_os_error(e)}') from e

    def read_record(self, name, default=None):
        """SESSION/<name> as data; `default` when absent. A damaged record is an error naming it."""
        path = os.path.join(self.path, name)
        if not os.path.isfile(path):
            return default
        try:
            with open(path, encoding='utf-8') as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f'{self._shown(name)} is damaged ({type(e).__name__}: {e}); it is a small JSON file '
                             f'the session keeps, fix or delete it') from None


RECORDS = ('overrides.json', 'trial.json', 'mlflow.json')
SPEC_FILES = (SPEC, SPEC_YAML, EXPANDED, 'overrides.json')    # what decides the code opening a session runs
SPEC_DIGESTS = 'spec_sha256'        # session.json: {file: SHA-256} of SPEC_FILES, recorded by init


def _plain_json(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_json(v) for v in value]
    return value


def _record_problem(record, nested=False):
    """What is wrong with a best.json record (or its "previous"), or None."""
    if not isinstance(record, dict):
        return 'not a JSON object'
    number = (int, float)
    checks = [('epoch', lambda v: type(v) is int and v >= 0, 'an epoch number'),
              ('metric', lambda v: isinstance(v, str), 'a metric\'s name'),
              ('mode', lambda v: v in ('min', 'max'), '"min" or "max"'),
              ('value', lambda v: isinstance(v, number) and not isinstance(v, bool), 'a number'),
              ('sha256', lambda v: isinstance(v, str) and re.fullmatch('[0-9a-f]{64}', v), 'a SHA-256 digest')]
    for key, ok, what in checks:
        if key not in record:
            if key == 'sha256' and not nested:
                continue            # an older record; best.sha256 holds it
            return f'"{key}" is missing'
        if not ok(record[key]):
            return f'"{key}" is {json.dumps(record[key])}, not {what}'
    previous = record.get('previous')
    if not nested and previous is not None:
        problem = _record_problem(previous, nested=True)
        if problem:
            return f'its "previous": {problem}'
    return None


def _format(value):
    return '' if value is None else f'{value:.6g}'


def _ident(match):
    return CheckpointId(int(match.group(1)), int(match.group(2) or 0))


def _digest(data):
    return hashlib.sha256(data).hexdigest().encode()


_os_error = atomic.describe


# ---- plain data in, plain data out ---------------------------------------------------------------

def _serialize(obj, shown):
    problem = plain_data_problem(obj)
    if problem:
        raise TorchAssistantError(f'cannot save {shown}: the state holds {problem}. Session files hold only plain '
                                  f'data (tensors, numbers, strings, lists, tuples, dicts), since they are loaded '
                                  f'without running code; return such data from state_dict() instead')
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _checked(data, shown, check=None):
    """The plain data of the checkpoint `shown` (its bytes `data`); `check(state)`: what is wrong with it
    as a checkpoint, or None: a UsageError naming the file when something is."""
    state = _deserialize(data, shown)
    problem = check(state) if check is not None else None
    if problem:
        raise UsageError(f'{shown} was not loaded: its checksum matches, but it is not a checkpoint TorchAssistant '
                         f'wrote ({problem}); something else wrote or changed it. Nothing in it was used')
    return state


def _deserialize(data, shown):
    """The plain data in `data` (the bytes of the session file `shown`); a file that would need code or
    other objects to load is refused: nothing in it runs."""
    try:
        return torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = re.search(r'GLOBAL ([\w.]+)', str(e))
        if culprit is None:
            raise UsageError(f'{shown} was not loaded: it is damaged or not a session file written by '
                             f'TorchAssistant (its contents are not plain data)') from None
        raise UsageError(f'{shown} was not loaded: it contains code or objects that are not plain data (it '
                         f'refers to {culprit.group(1)}), and loading it could run code. TorchAssistant writes '
                         f'only tensors, numbers, strings, lists and dicts, so something else wrote or changed '
                         f'this file. Nothing in it was run; if you do not know where it came from, recreate '
                         f'the session with: ', Hint("init", "--force", "SPEC.json")) from None
    except (RuntimeError, EOFError) as e:
        raise UsageError(f'{shown} was not loaded: it is damaged ({e})') from None
