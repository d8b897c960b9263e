"""The suite's fork server (tests/forked.py) runs a command as a new interpreter would: the same output,
exit status, folder, environment, sys.path, stdin and signals as `subprocess`, for each kind of command."""
import os
import signal
import subprocess
import sys
import time

import forked
import pytest

pytestmark = pytest.mark.unit

PROBE = '''
import json, os, sys
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "env": os.environ.get("PROBE"),
                  "name": __name__, "tty": sys.stdout.isatty(), "stdin": sys.stdin.read(),
                  "preimported": sorted(m for m in ("torchassistant", "probe_helper") if m in sys.modules)}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[-1]))
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / 'probe.py').write_text(PROBE)
    (tmp_path / 'pkg').mkdir()
    (tmp_path / 'pkg' / '__init__.py').write_text('')
    (tmp_path / 'pkg' / '__main__.py').write_text(PROBE)
    (tmp_path / 'elsewhere').mkdir()
    return tmp_path


@pytest.mark.parametrize('command', [['probe.py', 'a', '3'], ['-m', 'pkg', 'b', '0'], ['-c', PROBE, 'c', '7']],
                         ids=['script', 'module', 'code'])
def test_a_command_gives_what_a_new_interpreter_gives(folder, command):
    env = dict(os.environ, PROBE='x', PYTHONPATH=str(folder))
    args = [sys.executable, *command]
    cwd = folder if command[0] != 'probe.py' else folder / 'elsewhere'
    if command[0] == 'probe.py':
        args[1] = str(folder / 'probe.py')
    expected = subprocess.run(args, cwd=cwd, env=env, input='typed', capture_output=True, text=True, timeout=60)
    got = forked.run(args, cwd=cwd, env=env, input='typed', capture_output=True, text=True, timeout=60)
    process = forked.Popen(args, cwd=cwd, env=env, stdin=forked.DEVNULL, stdout=forked.DEVNULL,
                           stderr=forked.DEVNULL)
    assert isinstance(process, forked.Popen) and process.wait(timeout=60) == expected.returncode
    assert (got.returncode, got.stdout, got.stderr) == (expected.returncode, expected.stdout, expected.stderr)
    assert '"preimported": []' in got.stdout and int(command[-1]) == got.returncode


def test_an_exception_a_signal_a_timeout_and_a_pipe_read_as_it_is_written(tmp_path):
    raised = forked.run([sys.executable, '-c', 'raise ValueError("boom")'], capture_output=True, text=True)
    assert raised.returncode == 1 and raised.stderr.rstrip().endswith('ValueError: boom')

    sleeper = forked.Popen([sys.executable, '-c', 'import time; print("up", flush=True); time.sleep(60)'],
                           stdout=forked.PIPE, text=True)
    assert sleeper.stdout.readline() == 'up\n' and sleeper.poll() is None
    sleeper.send_signal(signal.SIGTERM)
    assert sleeper.wait(timeout=30) == -signal.SIGTERM
    sleeper.stdout.close()

    interrupted = forked.Popen([sys.executable, '-c', 'import time; print("up", flush=True); time.sleep(60)'],
                               stdout=forked.PIPE, stderr=forked.PIPE, text=True)
    assert interrupted.stdout.readline() == 'up\n'
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=30)
    assert interrupted.returncode == -signal.SIGINT and 'KeyboardInterrupt' in err

    started = time.monotonic()
    with pytest.raises(forked.TimeoutExpired):
        forked.run([sys.executable, '-c', 'import time; time.sleep(60)'], timeout=1)
    assert time.monotonic() - started < 30

    with open(tmp_path / 'log', 'w') as log:
        done = forked.run([sys.executable, '-c', 'import sys; print("out"); print("err", file=sys.stderr)'],
                          stdout=log, stderr=forked.STDOUT)
    assert done.returncode == 0 and sorted((tmp_path / 'log').read_text().split()) == ['err', 'out']


def test_the_thread_count_follows_the_childs_environment_and_fresh_runs_a_new_interpreter(monkeypatch):
    code = 'import torch; print(torch.get_num_threads())'
    one = forked.run([sys.executable, '-c', code], env=dict(os.environ, OMP_NUM_THREADS='1'), capture_output=True,
                     text=True)
    assert one.stdout.strip() == '1', one.stderr
    monkeypatch.setenv('TORCHASSISTANT_TEST_FRESH', '1')
    assert isinstance(forked.Popen([sys.executable, '-c', 'pass']), subprocess.Popen)
    assert isinstance(forked.Popen(['true']), subprocess.Popen)
