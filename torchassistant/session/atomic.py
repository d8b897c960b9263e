"""Writing a file so that a crash, a full disk or a read-only folder leaves either the old file or the
new one, never half of either: write a temporary file in the same folder, sync it, rename it over the
target, sync the folder (so the rename itself survives a power cut). A failed write removes its
temporary file. Temporary files are named `.tmp-*`; the store removes those of a writer that died.

Only the session store (`torchassistant.session.store`) and the lock (`torchassistant.session.lock`)
call these for files inside a session folder; anything else that writes there goes through the store.
"""
import contextlib
import errno
import os
import tempfile

from torchassistant.core.errors import TorchAssistantError

TEMPORARY_PREFIX = '.tmp-'


class WriteError(TorchAssistantError):
    """Writing a session file failed (disk full, read-only folder...); what was there stays intact."""


def write(path, data):
    """Write the bytes `data` to `path` through a synced temporary file and a rename; on any failure the
    old file stays, the temporary one is removed and the OSError (or interruption) propagates."""
    directory = os.path.dirname(path) or '.'
    fd, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise
    sync_folder(directory)


def create_exclusive(path, data):
    """Create `path` holding `data`, synced, only if it does not exist: False when it does. A failure
    while writing (disk full, or Ctrl-C right now) leaves no file behind and propagates."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        remove(path)
        raise
    return True


def sync_folder(directory):
    """fsync a folder, so the renames and deletions in it are on disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(path):
    """Delete `path` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def describe(error):
    """An OSError in words for messages: 'No space left on device (ENOSPC)'."""
    if error.errno:
        return f'{error.strerror or error} ({errno.errorcode.get(error.errno, error.errno)})'
    return str(error)
