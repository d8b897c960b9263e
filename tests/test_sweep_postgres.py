"""Two sweep processes share one study through a real PostgreSQL server that the test starts itself
(initdb + pg_ctl in a temporary folder, a free port on 127.0.0.1). `.ci/run` installs Debian's
postgresql when it is missing; the server refuses to run as root, so as root it runs as `postgres`."""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import forked
import pytest
from conftest import REPO, make_project, write_json

pytestmark = pytest.mark.e2e


def _bin(name):
    found = shutil.which(name) or sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def postgres():
    initdb, pg_ctl = _bin('initdb'), _bin('pg_ctl')
    if not (initdb and pg_ctl):
        pytest.fail('PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it')
    as_user = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
    folder = tempfile.mkdtemp(prefix='ta-postgres-', dir='/tmp')
    os.chmod(folder, 0o777)
    data, port = os.path.join(folder, 'data'), _free_port()
    user = 'postgres' if as_user else os.environ.get('USER', 'postgres')
    forked.run([*as_user, initdb, '-D', data, '-U', user, '--auth=trust', '-E', 'UTF8'], check=True,
                   capture_output=True)
    forked.run([*as_user, pg_ctl, '-D', data, '-l', os.path.join(folder, 'log'), '-w', '-t', '60', '-o',
                    f'-p {port} -k {folder} -c listen_addresses=127.0.0.1', 'start'], check=True, capture_output=True)
    try:
        import sqlalchemy
        engine = sqlalchemy.create_engine(f'postgresql://{user}@127.0.0.1:{port}/postgres',
                                          isolation_level='AUTOCOMMIT')
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text('CREATE DATABASE sweeps'))
        engine.dispose()
        yield f'postgresql://{user}@127.0.0.1:{port}/sweeps'
    finally:
        forked.run([*as_user, pg_ctl, '-D', data, '-m', 'fast', 'stop'], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_sweep_processes_share_one_study_on_postgresql(tmp_path, tiny_mnist, postgres):
    make_project(tmp_path, tiny_mnist, epochs=3)    # long enough that both ask at once
    write_json(tmp_path / 'sweep.json', {
        'sweep_dir': 'sweeps/pg', 'training_spec': 'my_examples/mnist/training.json', 'trials': 6,
        'objective': {'metric': 'val loss', 'direction': 'minimize'},
        'parameters': {'optimizer.spec.kwargs.lr': {'float': [1e-3, 3e-2], 'log': True}},
        'sampler': 'random', 'pruner': 'none', 'storage': postgres})
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    command = [sys.executable, '-m', 'torchassistant', 'sweep', 'sweep.json']
    machines = [forked.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [m.communicate(timeout=300) for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs
    lines = [line for out, _ in outputs for line in out.splitlines() if line.startswith('trial ')]
    numbers = sorted(int(line.split()[1]) for line in lines)
    assert numbers == [0, 1, 2, 3, 4, 5], outputs         # every trial run once, by one of the two processes

    import optuna
    study = optuna.load_study(study_name='pg', storage=postgres)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4, 5] and all(t.state.name == 'COMPLETE' for t in trials)
    workers = {t.user_attrs['worker']['pid'] for t in trials}
    assert len(workers) == 2, 'both processes ran trials'
    status = json.loads(forked.run([*command[:3], 'status', 'sweeps/pg', '--json'], cwd=tmp_path, env=env,
                                       capture_output=True, text=True, check=True).stdout)
    assert status['storage'].startswith('postgresql://') and status['counts'] == {'complete': 6}
