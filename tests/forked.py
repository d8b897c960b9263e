"""`run` and `Popen` for the suite's end-to-end calls, as `subprocess` has them, without paying for torch's
import in every one.

Every command of the suite is a new Python process, and on a small machine most of its time is the
import of torch and torchvision (about 6 s here, torchvision importing torch._dynamo), not the test. So a
`python SCRIPT ...`, `python -m MODULE ...` or `python -c CODE ...` goes to a server that imported those
libraries once (one per pytest worker) and forks a child for it. The child is a real process of its own:
its own pid, folder, environment, stdin/stdout/stderr (the caller's file descriptors, passed over a Unix
socket), exit status (negative for a signal, as `subprocess` says it) and signals; it runs the script as
`__main__` through `runpy` with the `sys.path` that `python` would give it, and nothing of the commands
(torchassistant, the user's modules) is imported before it. What differs from a new interpreter:
libraries imported before the fork keep the state they had then (torch has not run an operation; the
number of threads is taken from OMP_NUM_THREADS in the child), and interpreter options (`-u`, `-X`,
`-W`) are not supported: such a command, or any other program, runs as `subprocess` would run it.

TORCHASSISTANT_TEST_FRESH=1 runs every command in a new interpreter instead (the suite as it was).
"""
import atexit
import io
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PIPE, STDOUT, DEVNULL = subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL
TimeoutExpired, CalledProcessError, CompletedProcess = (subprocess.TimeoutExpired, subprocess.CalledProcessError,
                                                        subprocess.CompletedProcess)
PRELOAD = ('torch', 'torchvision', 'torchvision.datasets', 'torchvision.transforms', 'PIL.Image', 'numpy', 'tqdm')
_MESSAGE = 1 << 20


# ---- the client ------------------------------------------------------------------------------------

def _python_command(args):
    """(kind, target, rest) for `python SCRIPT|-m MODULE|-c CODE ARGS...`, or None for anything else."""
    if not isinstance(args, (list, tuple)):
        return None
    args = [os.fspath(a) for a in args]
    if len(args) < 2 or args[0] != sys.executable:
        return None
    if args[1] in ('-m', '-c'):
        return (('module' if args[1] == '-m' else 'code'), args[2], args[3:]) if len(args) > 2 else None
    if args[1].startswith('-'):
        return None
    return 'script', args[1], args[2:]


class _Server:
    """The fork server of this process: started at the first command, stopped when this process ends."""
    process = None
    path = None

    @classmethod
    def address(cls):
        if cls.process is None or cls.process.poll() is not None:
            folder = tempfile.mkdtemp(prefix='forked-')
            cls.path = os.path.join(folder, 'socket')
            cls.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), cls.path],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            line = cls.process.stdout.readline()
            if line.strip() != 'ready':
                raise RuntimeError(f'the fork server did not start (it said {line!r})')
            atexit.register(cls.stop)
        return cls.path

    @classmethod
    def stop(cls):
        if cls.process is not None and cls.process.poll() is None:
            cls.process.kill()
            cls.process.wait()


def fresh():
    return os.environ.get('TORCHASSISTANT_TEST_FRESH') == '1'


def _descriptor(value, default, opened, stdout_fd=None):
    """(fd to pass, our end of a pipe or None) for one of stdin/stdout/stderr as `subprocess` takes them."""
    if value is None:
        return default, None
    if value == DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        opened.append(fd)
        return fd, None
    if value == STDOUT:
        return stdout_fd, None
    if value == PIPE:
        read, write = os.pipe()
        mine, theirs = (write, read) if default == 0 else (read, write)
        opened.append(theirs)
        return theirs, mine
    return (value if isinstance(value, int) else value.fileno()), None


class Popen:
    """`subprocess.Popen` for a Python command, run by the fork server (see the module's docstring)."""

    def __new__(cls, args, **kwargs):
        if fresh() or _python_command(args) is None or set(kwargs) - {
                'cwd', 'env', 'stdin', 'stdout', 'stderr', 'text', 'encoding', 'errors', 'start_new_session'}:
            return subprocess.Popen(args, **kwargs)
        return super().__new__(cls)

    def __init__(self, args, *, cwd=None, env=None, stdin=None, stdout=None, stderr=None, text=False,
                 encoding=None, errors=None, start_new_session=False):
        self.args = args
        self.returncode = None
        kind, target, rest = _python_command(args)
        opened = []
        try:
            in_fd, in_mine = _descriptor(stdin, 0, opened)
            out_fd, out_mine = _descriptor(stdout, 1, opened)
            err_fd, err_mine = _descriptor(stderr, 2, opened, stdout_fd=out_fd)
            request = {'kind': kind, 'target': target, 'args': rest, 'cwd': os.fspath(cwd or os.getcwd()),
                       'env': dict(os.environ if env is None else env), 'new_session': bool(start_new_session)}
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            self._socket.connect(_Server.address())
            socket.send_fds(self._socket, [json.dumps(request).encode()], [in_fd, out_fd, err_fd])
            self.pid = json.loads(self._socket.recv(_MESSAGE))['pid']
        finally:
            for fd in opened:
                os.close(fd)
        as_text = text or encoding is not None or errors is not None

        def wrap(fd, mode):
            if fd is None:
                return None
            stream = open(fd, mode + 'b', buffering=0 if mode == 'w' else -1)
            return io.TextIOWrapper(stream, encoding=encoding, errors=errors, write_through=mode == 'w') \
                if as_text else stream
        self.stdin, self.stdout, self.stderr = wrap(in_mine, 'w'), wrap(out_mine, 'r'), wrap(err_mine, 'r')

    def _status(self, timeout):
        if self.returncode is None:
            ready, _, _ = select_one(self._socket, timeout)
            if not ready:
                return None
            message = self._socket.recv(_MESSAGE)
            self.returncode = json.loads(message)['status'] if message else -signal.SIGKILL
            self._socket.close()
        return self.returncode

    def poll(self):
        return self._status(0)

    def wait(self, timeout=None):
        if self._status(timeout) is None:
            raise TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, input=None, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            if input:
                threading.Thread(target=self._feed, args=(input,), daemon=True).start()
            else:
                self.stdin.close()
        chunks = {stream: [] for stream in (self.stdout, self.stderr) if stream is not None}
        with selectors.DefaultSelector() as selector:
            for stream in chunks:
                selector.register(stream, selectors.EVENT_READ)
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutExpired(self.args, timeout)
                for key, _ in selector.select(left):
                    raw = getattr(key.fileobj, 'buffer', key.fileobj)
                    data = os.read(raw.fileno(), 1 << 16)
                    if data:
                        chunks[key.fileobj].append(data)
                    else:
                        selector.unregister(key.fileobj)
        results = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                results.append(None)
                continue
            data = b''.join(chunks[stream])
            if isinstance(stream, io.TextIOWrapper):
                data = data.decode(stream.encoding, stream.errors).replace('\r\n', '\n').replace('\r', '\n')
            results.append(data)
            stream.close()
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return tuple(results)

    def _feed(self, data):
        try:
            self.stdin.write(data)
        except BrokenPipeError:
            pass
        finally:
            try:
                self.stdin.close()
            except BrokenPipeError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait()


def select_one(sock, timeout):
    return select.select([sock], [], [], timeout)


def run(args, *, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """`subprocess.run` through `Popen` above."""
    if capture_output:
        kwargs['stdout'] = kwargs['stderr'] = PIPE
    if input is not None:
        kwargs['stdin'] = PIPE
    with Popen(args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except TimeoutExpired:
            process.kill()
            process.wait()
            raise
    done = CompletedProcess(args, process.returncode, stdout, stderr)
    if check:
        done.check_returncode()
    return done


# ---- the server --------------------------------------------------------------------------------------

def _serve(path):
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    own_path = [entry for entry in os.environ.get('PYTHONPATH', '').split(os.pathsep) if entry]
    base_path = [entry for entry in sys.path[1:] if entry not in own_path]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    parent = os.getppid()
    out = os.fdopen(os.dup(1), 'w')
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    print('ready', file=out, flush=True)
    children = {}
    while os.getppid() == parent:
        ready, _, _ = select_one(listener, 0.02)
        if ready:
            connection, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(connection, _MESSAGE, 3)
            pid = os.fork()
            if pid == 0:
                listener.close()
                out.close()
                for other in children.values():
                    other.close()
                connection.close()
                _child(json.loads(message), fds, base_path)
            for fd in fds:
                os.close(fd)
            _send(connection, {'pid': pid})
            children[pid] = connection
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = children.pop(pid, None)
            if connection is not None:
                _send(connection, {'status': os.waitstatus_to_exitcode(status)})
                connection.close()


def _send(connection, message):
    try:
        connection.send(json.dumps(message).encode())
    except OSError:
        pass


def _child(request, fds, base_path):
    """In the forked child: become the command's process, run it as `__main__`, exit as python would."""
    import runpy
    import traceback
    import types
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    if request['new_session']:
        os.setsid()
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    unbuffered = bool(os.environ.get('PYTHONUNBUFFERED'))
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, 'r', closefd=False), encoding='utf-8')
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False), encoding='utf-8',
                                                   line_buffering=unbuffered or os.isatty(1),
                                                   write_through=unbuffered)
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, 'w', closefd=False), encoding='utf-8',
                                                   errors='backslashreplace', line_buffering=True)
    kind, target, args = request['kind'], request['target'], request['args']
    first = {'script': os.path.dirname(os.path.abspath(target)), 'module': os.getcwd(), 'code': ''}[kind]
    extra = [entry for entry in os.environ.get('PYTHONPATH', '').split(os.pathsep) if entry]
    sys.path[:] = [first, *extra, *[entry for entry in base_path if entry not in extra]]
    if os.environ.get('OMP_NUM_THREADS', '').isdigit():
        import torch
        torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        if kind == 'script':
            sys.argv = [target, *args]
            runpy.run_path(target, run_name='__main__')
        elif kind == 'module':
            sys.argv = [target, *args]
            runpy.run_module(target, run_name='__main__', alter_sys=True)
        else:
            sys.argv = ['-c', *args]
            main = types.ModuleType('__main__')
            sys.modules['__main__'] = main
            exec(compile(target, '<string>', 'exec'), main.__dict__)
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


if __name__ == '__main__':
    _serve(sys.argv[1])
