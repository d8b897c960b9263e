"""The MNIST tutorial, step by step, through the real scripts in subprocesses, on real digits."""
import csv
import os
import re
import signal
import subprocess
import sys
import time

import forked
import pytest
import torch
from conftest import REPO, folder_snapshot, run_script, tutorial_spec, write_json

pytestmark = pytest.mark.e2e


METRIC_ROW = r'\[acc \d\.\d{4}, loss \d+\.\d{4}, val acc \d\.\d{4}, val loss \d+\.\d{4}\]'


def test_tutorial_end_to_end(project):
    spec = 'my_examples/mnist/training.json'
    result = run_script('init.py', spec, cwd=project)
    assert result.returncode == 0, result.stderr
    session = project / 'pretrained'
    assert (session / 'spec.json').read_text() == (project / spec).read_text()
    assert (session / 'checkpoints' / 'epoch_0.pt').is_file()

    result = run_script('train.py', 'pretrained', cwd=project)
    assert result.returncode == 0, result.stderr
    output = result.stdout.splitlines()
    assert output[:2] == ['Training on cpu, precision 32', 'Training stage 0 in progress']
    # in a log: a progress line each tenth of an epoch (with rate and ETA), then the epoch's row
    periodic = [line for line in output if re.fullmatch(r'Epoch +\d \[.*\] \d+ / 10 \[.*it/s\]', line)]
    assert len(periodic) == 20, output
    lines = [line for line in output[1:] if line not in periodic]
    assert re.fullmatch(r'Epoch     1 ' + METRIC_ROW, lines[1]), lines
    assert re.fullmatch(r'Epoch     2 ' + METRIC_ROW, lines[2]), lines
    assert lines[3].startswith('Training finished: 2 epoch(s) in ')
    assert '\r' not in result.stdout, 'no live line when the output is not a terminal'
    assert sorted(os.listdir(session / 'checkpoints')) == [
        'epoch_0.pt', 'epoch_0.sha256', 'epoch_1.pt', 'epoch_1.sha256', 'epoch_2.pt', 'epoch_2.sha256']
    with open(session / 'metrics' / '0.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['epoch', 'acc', 'loss', 'val acc', 'val loss']
    assert [r[0] for r in rows[1:]] == ['1', '2']
    printed = [float(v) for v in re.findall(r'\d+\.\d{4}', lines[2])]
    assert [round(float(v), 4) for v in rows[2][1:]] == printed

    result = run_script('evaluate.py', 'my_examples/mnist/evaluation.json', cwd=project)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(METRIC_ROW, result.stdout.strip())
    # evaluation of the last checkpoint reproduces the last validation row
    assert result.stdout.strip() == lines[2][len('Epoch     2 '):]

    result = run_script('infer.py', 'my_examples/mnist/inference.json', 'my_examples/mnist/digit_2.png', cwd=project)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0] == "Running inference on:  ['my_examples/mnist/digit_2.png']"
    assert out[1].startswith('y_hat:tensor([[')
    scores = [float(v) for v in re.findall(r'-?\d+\.\d+', result.stdout)]
    assert len(scores) == 10

    before = folder_snapshot(session)
    result = run_script('train.py', 'pretrained', cwd=project)
    assert result.returncode == 0
    assert 'Training is complete' in result.stdout
    assert folder_snapshot(session) == before


def test_init_never_overwrites_a_session(project):
    spec = 'my_examples/mnist/training.json'
    assert run_script('init.py', spec, cwd=project).returncode == 0
    marker = project / 'pretrained' / 'notes.txt'
    marker.write_text('mine')
    result = run_script('init.py', spec, cwd=project)
    assert result.returncode == 2
    assert 'already exists' in result.stderr and '--force' in result.stderr
    assert 'Traceback' not in result.stderr
    assert marker.read_text() == 'mine'
    result = run_script('init.py', '--force', spec, cwd=project)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert not [p for p in os.listdir(project) if p.startswith('.pretrained')], 'no staging folders left'


def test_interrupted_training_resumes_bit_identical(project, tiny_mnist):
    """kill -9 after the first epoch's checkpoint, resume: the final weights equal an uninterrupted run's."""
    spec = tutorial_spec(tiny_mnist, epochs=3)
    write_json(project / 'my_examples' / 'mnist' / 'training.json', {**spec, 'session_dir': 'a'})
    assert run_script('init.py', 'my_examples/mnist/training.json', cwd=project).returncode == 0
    forked.run(['cp', '-r', str(project / 'a'), str(project / 'b')], check=True)

    assert run_script('train.py', 'a', cwd=project).returncode == 0

    env = dict(os.environ, PYTHONPATH=REPO)
    process = forked.Popen([sys.executable, os.path.join(REPO, 'train.py'), 'b'], cwd=project, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (project / 'b' / 'checkpoints' / 'epoch_1.sha256').exists():
        assert process.poll() is None and time.time() < deadline, 'training ended before it could be killed'
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = run_script('train.py', 'b', cwd=project)
    assert result.returncode == 0, result.stderr
    assert 'Resuming' in result.stdout

    final = [torch.load(project / s / 'checkpoints' / 'epoch_3.pt', weights_only=False) for s in 'ab']
    for name, tensor in final[0]['models']['LeNet5'].items():
        assert torch.equal(tensor, final[1]['models']['LeNet5'][name]), name
    assert (project / 'a' / 'metrics' / '0.csv').read_text() == (project / 'b' / 'metrics' / '0.csv').read_text()


def test_literal_tutorial_collator_gets_a_clear_error(project, tiny_mnist):
    """The tutorial's training.json names BatchDivide, which hands the model a list of PIL images."""
    spec = tutorial_spec(tiny_mnist, collator='torchassistant.collators.BatchDivide')
    write_json(project / 'my_examples' / 'mnist' / 'training.json', spec)
    assert run_script('init.py', 'my_examples/mnist/training.json', cwd=project).returncode == 0
    result = run_script('train.py', 'pretrained', cwd=project)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    message = result.stderr
    assert 'pipeline "training_pipeline"' in message
    assert 'model "LeNet5"' in message
    assert 'input_1 = list of 32 PIL.Image.Image' in message
    assert 'collator that returns tensors' in message
    assert 'torchassistant.collators.BatchDivide' in message


def test_check_dry_run_writes_nothing(project):
    before = folder_snapshot(project)
    result = run_script('init.py', '--check', 'my_examples/mnist/training.json', cwd=project)
    assert result.returncode == 0, result.stderr
    assert 'pipeline "training_pipeline": OK [acc' in result.stdout
    assert 'pipeline "evaluation_pipeline": OK [val acc' in result.stdout
    assert not (project / 'pretrained').exists()
    assert {k for k in folder_snapshot(project) if '__pycache__' not in k} == \
        {k for k in before if '__pycache__' not in k}


def test_check_dry_run_reports_failing_pipeline(project, tiny_mnist):
    spec = tutorial_spec(tiny_mnist, collator='torchassistant.collators.BatchDivide')
    write_json(project / 'my_examples' / 'mnist' / 'training.json', spec)
    result = run_script('init.py', '--check', 'my_examples/mnist/training.json', cwd=project)
    assert result.returncode == 1
    assert 'pipeline "training_pipeline": FAILED' in result.stdout
    assert 'list of 32 PIL.Image.Image' in result.stdout
    assert not (project / 'pretrained').exists()
