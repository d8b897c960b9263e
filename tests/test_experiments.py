"""Experiments end to end: --set through init/train/status, more epochs on a finished session, YAML
specs, sweeps on Optuna (SQLite; kill -9 and rerun; pruning; a failing trial), sweep spec errors."""
import json
import os
import signal
import subprocess
import sys
import time

import forked
import pytest
import torch
from conftest import REPO, make_project, write_json

pytestmark = pytest.mark.e2e

SPEC = 'my_examples/mnist/training.json'


def cli(*args, cwd, timeout=300, check=True, env=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1',
               **(env or {}))
    done = forked.run([sys.executable, '-m', 'torchassistant', *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def weights(session, epoch):
    return torch.load(os.path.join(session, 'checkpoints', f'epoch_{epoch}.pt'), weights_only=True)['models']


def same_weights(a, b):
    return all(torch.equal(a[m][k], b[m][k]) for m in a for k in a[m]) and a.keys() == b.keys()


@pytest.fixture
def workdir(tmp_path, tiny_mnist):
    make_project(tmp_path, tiny_mnist, epochs=1)
    return tmp_path


# ---- overrides and more epochs ----------------------------------------------------------------------

def test_overrides_through_init_train_status_and_more_epochs_equal_a_longer_run(workdir):
    cli('init', SPEC, '--set', 'optimizer.spec.kwargs.lr=0.01', '--set', 'session_dir=runs/a', '--set', 'seed=3',
        cwd=workdir)
    assert json.load(open(workdir / 'runs/a/overrides.json'))['init'][0] == 'optimizer.spec.kwargs.lr=0.01'
    cli('train', 'runs/a', '--quiet', cwd=workdir)
    assert 'Nothing to do' in cli('train', 'runs/a', cwd=workdir).stdout
    more = cli('train', 'runs/a', '--quiet', '--set', 'train.stages.0.stop_condition.kwargs.num_epochs=3', cwd=workdir)
    assert 'Training finished: 2 epoch(s)' in more.stdout, more.stdout
    status = json.loads(cli('status', 'runs/a', '--json', cwd=workdir).stdout)
    assert status['overrides'][-1] == 'train.stages.0.stop_condition.kwargs.num_epochs=3' and status['complete']
    assert '--set optimizer.spec.kwargs.lr=0.01' in cli('status', 'runs/a', cwd=workdir).stdout

    cli('init', SPEC, '--set', 'optimizer.spec.kwargs.lr=0.01', '--set', 'session_dir=runs/b', '--set', 'seed=3',
        '--set', 'train.stages.0.stop_condition.kwargs.num_epochs=3', cwd=workdir)
    cli('train', 'runs/b', '--quiet', cwd=workdir)
    assert same_weights(weights(workdir / 'runs/a', 3), weights(workdir / 'runs/b', 3))


def test_train_set_refuses_what_changes_the_build_and_bad_paths(workdir):
    cli('init', SPEC, '--set', 'session_dir=runs/a', cwd=workdir)
    built = cli('train', 'runs/a', '--set', 'LeNet5.spec.class=torch.nn.Linear', cwd=workdir, check=False)
    assert built.returncode == 2 and 'changes what init built' in built.stderr and 'init --set' in built.stderr
    assert 'Traceback' not in built.stderr
    typo = cli('init', SPEC, '--set', 'optimizr.spec.kwargs.lr=1', cwd=workdir, check=False)
    assert typo.returncode == 2 and "did you mean 'optimizer'" in typo.stderr
    invalid = cli('check', SPEC, '--set', 'train.keep_checkpoints="three"', cwd=workdir, check=False)
    assert invalid.returncode == 2 and '--set train.keep_checkpoints="three"' in invalid.stderr, invalid.stderr
    assert not os.path.exists(workdir / 'runs/b')


def test_a_yaml_spec_through_init_and_train(workdir):
    import yaml
    spec = json.load(open(workdir / SPEC))
    spec['session_dir'] = 'runs/yaml'
    with open(workdir / 'my_examples/mnist/training.yaml', 'w') as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    cli('init', 'my_examples/mnist/training.yaml', cwd=workdir)
    assert os.path.isfile(workdir / 'runs/yaml/spec.yaml') and not os.path.exists(workdir / 'runs/yaml/spec.json')
    assert 'Training finished' in cli('train', 'runs/yaml', cwd=workdir).stdout
    text = (workdir / 'my_examples/mnist/training.yaml').read_text().replace('lr: 0.001', 'lr: fast')
    (workdir / 'bad.yaml').write_text(text.replace('session_dir: runs/yaml', 'session_dir: runs/bad'))
    bad = cli('init', 'bad.yaml', cwd=workdir, check=False)
    assert bad.returncode == 2 and 'bad.yaml:' in bad.stderr, bad.stderr


# ---- sweeps -------------------------------------------------------------------------------------------

def sweep_spec(workdir, name='sweep.json', **changes):
    spec = {'sweep_dir': 'sweeps/s', 'training_spec': SPEC, 'trials': 4,
            'objective': {'metric': 'val acc', 'direction': 'maximize'},
            'parameters': {'optimizer.spec.kwargs.lr': {'float': [1e-3, 3e-2], 'log': True},
                           'training_loader.spec.kwargs.batch_size': {'choices': [16, 32]}},
            'sampler': 'random', 'pruner': 'none', 'seed': 7}
    spec.update(changes)
    write_json(workdir / name, spec)
    return name


def study_trials(workdir, sweep_dir='sweeps/s'):
    import optuna
    study = optuna.load_study(study_name=os.path.basename(sweep_dir),
                              storage=f'sqlite:///{workdir / sweep_dir / "study.db"}')
    return study.get_trials()


def test_a_four_trial_sweep_its_status_plot_and_compare(workdir):
    out = cli('sweep', sweep_spec(workdir), cwd=workdir).stdout
    lines = [line for line in out.splitlines() if line.startswith('trial ')]
    assert len(lines) == 4 and all('  complete  ' in line for line in lines) and 'Best: trial' in out, out
    trials = study_trials(workdir)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and all(t.state.name == 'COMPLETE' for t in trials)
    for t in trials:         # each trial is an ordinary session with the trial's values
        overrides = json.load(open(workdir / f'sweeps/s/trials/{t.number:04d}/overrides.json'))['init']
        assert f'optimizer.spec.kwargs.lr={t.params["optimizer.spec.kwargs.lr"]!r}' in overrides
    again = cli('sweep', sweep_spec(workdir), cwd=workdir).stdout       # a finished study runs nothing
    assert not [line for line in again.splitlines() if line.startswith('trial ')] and len(study_trials(workdir)) == 4
    status = json.loads(cli('status', 'sweeps/s', '--json', cwd=workdir).stdout)
    best = max(trials, key=lambda t: t.value)
    assert status['best'] == best.number and status['rows'][0]['number'] == best.number
    assert status['rows'][0]['session'] == f'sweeps/s/trials/{best.number:04d}'
    cli('plot', 'sweeps/s', cwd=workdir)
    assert os.path.getsize(workdir / 'sweeps/s/plots/objective.png') > 1000
    compared = cli('compare', 'sweeps/s', '--out', 'curves.png', cwd=workdir).stdout
    assert compared.count('sweeps/s/trials/') == 4 and os.path.isfile(workdir / 'curves.png')
    cli('evaluate', write_json_file(workdir, best.number), cwd=workdir)


def write_json_file(workdir, number):
    spec = json.load(open(workdir / 'my_examples/mnist/evaluation.json'))
    spec['session_dir'] = f'sweeps/s/trials/{number:04d}'
    write_json(workdir / 'eval_trial.json', spec)
    return 'eval_trial.json'


def test_pruning_and_a_failing_trial_are_recorded_and_the_sweep_goes_on(workdir):
    spec = json.load(open(workdir / SPEC))
    spec['train']['stages'][0]['stop_condition']['kwargs']['num_epochs'] = 2
    write_json(workdir / SPEC, spec)
    # the grid's order is drawn from its seed; with 5: two good learning rates, a hopeless one, a diverging one
    name = sweep_spec(workdir, parameters={'optimizer.spec.kwargs.lr': {'choices': [0.02, 0.01, 1e-7, 1e38]}},
                      sampler='grid', pruner='median', seed=5)
    out = cli('sweep', name, cwd=workdir).stdout
    trials = sorted(study_trials(workdir), key=lambda t: t.number)
    assert [t.params['optimizer.spec.kwargs.lr'] for t in trials] == [0.02, 0.01, 1e-7, 1e38], out
    assert [t.state.name for t in trials] == ['COMPLETE', 'COMPLETE', 'PRUNED', 'FAIL'], out
    assert 'failed in training' in trials[3].user_attrs['error'], trials[3].user_attrs
    record = json.load(open(workdir / 'sweeps/s/trials/0002/trial.json'))
    assert record['state'] == 'pruned' and record['epoch'] == 1 and 'MedianPruner' in record['reason'], record
    assert 'pruned after epoch 1' in cli('status', 'sweeps/s/trials/0002', cwd=workdir).stdout
    failed = json.load(open(workdir / 'sweeps/s/trials/0003/trial.json'))
    assert failed['state'] == 'failed' and failed['reason'] == trials[3].user_attrs['error']


def test_sweep_spec_problems_all_at_once_and_nothing_created(workdir):
    name = sweep_spec(workdir, objective={'metric': 'val accc'}, storage='sqlite:////nonexistent/dir/x.db',
                      parameters={'optimizr.spec.kwargs.lr': {'float': [1e-1, 1e-4]},
                                  'train.stages.0.stop_condition.kwargs.num_epochs': {'choices': [2, 'three']}}, trials=0)
    done = cli('sweep', name, cwd=workdir, check=False)
    assert done.returncode == 2 and 'trials: must be' in done.stderr, done.stderr
    name = sweep_spec(workdir, objective={'metric': 'val accc'}, storage='sqlite:////nonexistent/dir/x.db',
                      parameters={'optimizr.spec.kwargs.lr': {'float': [1e-1, 1e-4]},
                                  'train.stages.0.stop_condition.kwargs.num_epochs': {'choices': [2, 'three']}})
    done = cli('sweep', name, cwd=workdir, check=False)
    err = done.stderr
    assert done.returncode == 2 and 'Traceback' not in err, err
    assert "did you mean 'val acc'" in err and "did you mean 'optimizer'" in err, err
    assert 'low 0.1 is above high 0.0001' in err and 'with three the training spec is invalid' in err, err
    assert 'cannot reach the storage' in err, err
    assert not os.path.exists(workdir / 'sweeps')


def test_kill_9_during_a_trial_then_the_same_command_resumes_it(workdir):
    spec = json.load(open(workdir / SPEC))
    spec['train']['stages'][0]['stop_condition']['kwargs']['num_epochs'] = 6
    write_json(workdir / SPEC, spec)
    name = sweep_spec(workdir, trials=2)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    process = forked.Popen([sys.executable, '-m', 'torchassistant', 'sweep', name], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = workdir / 'sweeps/s/trials/0000/checkpoints/epoch_1.pt'
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert checkpoint.exists()
    done_before = max(int(n.split('_')[1].split('.')[0]) for n in os.listdir(checkpoint.parent)
                      if n.startswith('epoch_') and n.endswith('.pt') and '_batch_' not in n)
    assert done_before < 6, 'the kill came after the trial finished; give it more epochs'
    assert [t.state.name for t in study_trials(workdir)] == ['RUNNING']

    out = cli('sweep', name, cwd=workdir).stdout
    trials = study_trials(workdir)
    assert sorted(t.number for t in trials) == [0, 1] and all(t.state.name == 'COMPLETE' for t in trials), out
    log = (workdir / 'sweeps/s/logs/0000.log').read_text()
    assert 'Resuming "sweeps/s/trials/0000" after epoch' in log or 'taking over' in log, log   # resumed, not redone

    # the resumed trial ends where an uninterrupted session with the same values ends
    overrides = json.load(open(workdir / 'sweeps/s/trials/0000/overrides.json'))['init']
    overrides = [o for o in overrides if not o.startswith('session_dir=')] + ['session_dir=runs/same']
    cli('init', SPEC, *[x for o in overrides for x in ('--set', o)], cwd=workdir)
    cli('train', 'runs/same', '--quiet', cwd=workdir)
    assert same_weights(weights(workdir / 'sweeps/s/trials/0000', 6), weights(workdir / 'runs/same', 6))


# ---- tracking -------------------------------------------------------------------------------------------

def test_mlflow_logger_records_sessions_and_a_sweeps_trials_as_runs(workdir):
    pytest.importorskip('mlflow', reason='the "mlflow" extra: pip install "torchassistant[mlflow]"')
    from mlflow.tracking import MlflowClient
    spec = json.load(open(workdir / SPEC))
    spec['train']['loggers'] = ['csv', 'plots', 'mlflow']
    write_json(workdir / SPEC, spec)
    uri = f'sqlite:///{workdir / "tracking.db"}'
    env = {'MLFLOW_TRACKING_URI': uri}
    cli('init', SPEC, '--set', 'optimizer.spec.kwargs.lr=0.01', '--set', 'session_dir=runs/m', cwd=workdir)
    cli('train', 'runs/m', env=env, cwd=workdir)
    cli('train', 'runs/m', '--set', 'train.stages.0.stop_condition.kwargs.num_epochs=2', env=env, cwd=workdir)
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name('torchassistant').experiment_id])
    assert len(runs) == 1, 'a resumed session goes on in its run'
    run = runs[0]
    assert run.info.status == 'FINISHED' and run.data.params['set optimizer.spec.kwargs.lr'] == '0.01'
    assert run.data.params['optimizer.lr'] == '0.01' and run.data.params['LeNet5.class'] == 'my_examples.mnist.LeNet5'
    history = client.get_metric_history(run.info.run_id, 'val acc')
    csv = (workdir / 'runs/m/metrics/0.csv').read_text().splitlines()
    assert [m.step for m in history] == [1, 2] and len(csv) == 3
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {'spec.json', 'plots'}

    cli('sweep', sweep_spec(workdir, trials=2), env=env, cwd=workdir)
    trials = client.search_runs([client.get_experiment_by_name('sweep s').experiment_id])
    assert len(trials) == 2 and all(r.info.status == 'FINISHED' for r in trials)


def test_jobs_run_trials_in_several_processes_with_no_trial_lost_or_doubled(workdir):
    out = cli('sweep', sweep_spec(workdir, trials=4), '--jobs', '2', cwd=workdir).stdout
    trials = study_trials(workdir)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and all(t.state.name == 'COMPLETE' for t in trials), out
    assert len({t.user_attrs['worker']['pid'] for t in trials}) == 2, 'both worker processes ran trials'
    values = [t.params['optimizer.spec.kwargs.lr'] for t in trials]
    assert len(set(values)) == 4, 'with a seed, the workers still draw different values'
    assert len([line for line in out.splitlines() if line.startswith('trial ')]) == 4
