"""SESSION/train.lock: one trainer at a time writes a session.

The protocol, for every process that trains, and for whoever wants to know whether one does:

acquire   create the lock file exclusively (O_EXCL), holding JSON {"pid", "host", "since", "command"}
          (`since`: ISO time with its zone), and "job" under torchrun (a name of the torchrun job, the
          same in every group of processes it restarts), written and synced right after creating it.
held      the file exists and names a process that is alive on this host, or a host that is not this
          one (which cannot be checked from here).
stale     it names a process on this host that is gone, or a pid now running a process that started
          after the lock was taken (the pid was reused); `acquire` then takes it over with a notice:
          rename it aside (atomic among trainers racing to do so), check it is still the stale text,
          remove it, create ours. A lock naming our own torchrun job was left by an earlier group of it
          (torchrun stops a group's processes before it starts the next), on whichever host: taken over too.
release   remove the file if it still holds our text (it may have been taken over meanwhile).
unreadable  a lock that is not (yet) complete JSON naming a pid, host and time: its creator may be
          writing it; after a second it is reported, never taken over.

`parse`, `is_stale` and `inspect` are the public reading of the file (`torchassistant status` uses
them); only `acquire` and `release` write it.
"""
import json
import os
import socket
import time
from datetime import datetime

from torchassistant.core.errors import UsageError
from torchassistant.session import atomic
from torchassistant.session.atomic import WriteError

LOCK = 'train.lock'
STALE_SUFFIX = '.stale-'      # a stale lock renamed aside while being taken over

MAX_PID = 2 ** 31 - 1         # pid_t: a larger number names no process (and os.kill refuses it)
_HELD: set = set()            # lock files this process holds


def parse(text):
    """The holder {"pid", "host", "since", "command"?} a lock file's text names, or None when it is not
    a complete lock (still being written, or damaged)."""
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    ok = isinstance(holder, dict) and type(holder.get('pid')) is int and 0 < holder['pid'] <= MAX_PID \
        and isinstance(holder.get('host'), str) and isinstance(holder.get('since'), str)
    return holder if ok else None


def is_stale(holder):
    """Whether the lock's holder is certainly gone: on this host, and its pid is not running, or is
    running a process that started after the lock was taken (the pid was reused)."""
    if holder['host'] != socket.gethostname():
        return False
    pid = holder['pid']
    if pid == os.getpid():            # not a lock this process holds (checked first): the pid was reused
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:           # alive, another user's
        pass
    started, since = process_start(pid), _timestamp(holder['since'])
    return started is not None and since is not None and started > since + 2


def inspect(path):
    """Who holds the lock file `path`, read and never written: {"state": "not running" | "running" |
    "stale lock" | "unknown", and "pid", "host", "since", "command" when it names them, "why" for
    "unknown"}."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return {'state': 'not running'}
    except (OSError, UnicodeDecodeError) as e:
        return {'state': 'unknown', 'why': f'{path} cannot be read ({getattr(e, "strerror", None) or e})'}
    holder = parse(text)
    if holder is None:
        return {'state': 'unknown', 'why': f'{path} does not say who holds it (a trainer may be starting)'}
    found = {key: holder.get(key) for key in ('pid', 'host', 'since', 'command')}
    if is_stale(holder):
        return {'state': 'stale lock', **found}
    if holder['host'] != socket.gethostname():
        return {'state': 'unknown', **found, 'why': f'it is held on host "{holder["host"]}", which this host '
                                                    f'cannot check'}
    return {'state': 'running', **found}


def acquire(path, command, session, stream=None, job=None, replacing=False):
    """Create the lock file `path` naming this process (its text is returned: the token `release`
    needs), taking over a stale one, or one of an earlier group of the torchrun `job`, with a notice on
    `stream`; UsageError when another trainer holds it (`replacing`: the message says why init --force
    cannot replace the session)."""
    if os.path.abspath(path) in _HELD:
        raise UsageError(f'session "{session}" is already being trained by this process')
    mine = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                       'since': datetime.now().astimezone().isoformat(timespec='seconds'), 'command': command,
                       **({'job': job} if job else {})})
    for _ in range(5):
        try:
            created = atomic.create_exclusive(path, mine.encode())
        except OSError as e:
            raise WriteError(f'cannot lock session "{session}": {path}: {atomic.describe(e)}; training needs a '
                             f'writable session folder') from e
        if created:
            _HELD.add(os.path.abspath(path))
            return mine
        text = _read_settled(path)
        if text is None:
            continue                      # released meanwhile
        holder = parse(text)
        if holder is None:
            raise UsageError(f'{path} exists but does not say who holds it; a trainer may be starting. If no '
                             f'trainer runs on session "{session}", delete {path} and run again.')
        ours = job is not None and holder.get('job') == job     # an earlier group of this torchrun job
        if not ours and not is_stale(holder):
            raise UsageError(replace_refused(session, path, inspect(path)) if replacing else
                             held_message(session, path, holder))
        if _take_over(path, text):
            why = f'on host "{holder["host"]}" was an earlier group of this torchrun job, which torchrun ' \
                f'stopped' if ours else 'is no longer running on this host'
            print(f'notice: taking over {path}: pid {holder["pid"]} (since {holder["since"]}) {why}', file=stream,
                  flush=True)
    raise UsageError(f'could not lock session "{session}": {path} keeps changing; is another trainer starting?')


def release(path, mine):
    """Remove the lock file `path` if it still holds `mine` (acquire's token)."""
    _HELD.discard(os.path.abspath(path))
    try:
        with open(path) as f:
            if f.read() != mine:
                return                    # not ours any more
        os.unlink(path)
    except OSError:
        pass


def held_message(session, path, holder):
    """Why a session held by `holder` cannot be trained (or replaced) now, and what to do."""
    pid, host = holder['pid'], holder['host']
    who = f'pid {pid} on host "{host}" since {holder["since"]}' + \
        (f' ({holder["command"]})' if holder.get('command') else '')
    if host == socket.gethostname():
        return (f'session "{session}" is being trained by {who}; only one trainer may write a session. Wait '
                f'for it to finish, or stop it (kill {pid}); evaluate.py and infer.py can run meanwhile. If '
                f'that process is not training this session, delete {path} and run again.')
    return (f'session "{session}" is locked by {who}, and this is host "{socket.gethostname()}", which cannot '
            f'see whether that trainer still runs. If host "{host}" is gone or no longer trains this session, '
            f'delete {path} and run again.')


def replace_refused(session, path, state):
    """Why init --force does not replace `session`, whose lock file `path` says `state` (inspect's)."""
    if state['state'] == 'unknown' and not state.get('pid'):
        return (f'{path} exists but does not say who holds it (a trainer may be starting), so init --force does '
                f'not replace session "{session}". If no trainer runs on it, delete {path} and run again.')
    holder = {key: state.get(key) for key in ('pid', 'host', 'since', 'command')}
    return f'{held_message(session, path, holder)} (init --force would replace it under that trainer, so ' \
        f'nothing was changed.)'


def process_start(pid):
    """When process `pid` started (seconds since the epoch), where /proc tells; else None."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            ticks = int(f.read().rpartition(')')[2].split()[19])
        with open('/proc/stat') as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith('btime '))
        return boot + ticks / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _read_settled(path, patience=1.0):
    """The lock file's text once it is complete JSON (its creator writes it right after creating it),
    or whatever it holds after `patience` seconds; None if it is gone."""
    deadline = time.monotonic() + patience
    while True:
        try:
            with open(path, errors='replace') as f:
                text = f.read()
        except FileNotFoundError:
            return None
        if parse(text) is not None or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _timestamp(text):
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _take_over(path, stale_text):
    """Remove the stale lock `path` if it still holds `stale_text`; False when another trainer got there
    first. Renaming it aside first makes taking it over atomic among trainers racing to do so."""
    aside = f'{path}{STALE_SUFFIX}{os.getpid()}'
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    with open(aside, errors='replace') as f:
        taken = f.read()
    if taken != stale_text:           # a fresh lock taken between our read and the rename: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
    atomic.remove(aside)
    return taken == stale_text
