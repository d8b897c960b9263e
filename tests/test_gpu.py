"""The tutorial on a CUDA device: skipped where there is none (CI has none)."""
import re

import pytest
import torch
from conftest import run_script

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')]


def test_tutorial_trains_evaluates_and_infers_on_cuda(project):
    """Labels made on the CPU by the tutorial's transforms meet outputs on the GPU; resume loads
    GPU state from checkpoints mapped to the CPU."""
    spec = 'my_examples/mnist/training.json'
    assert run_script('init.py', spec, cwd=project).returncode == 0
    result = run_script('train.py', 'pretrained', cwd=project)
    assert result.returncode == 0, result.stderr
    assert re.search(r'Epoch     2 \[acc', result.stdout)
    state = torch.load(project / 'pretrained' / 'checkpoints' / 'epoch_2.pt', weights_only=False)
    assert state['rng']['cuda'] is not None
    assert run_script('evaluate.py', 'my_examples/mnist/evaluation.json', cwd=project).returncode == 0
    result = run_script('infer.py', 'my_examples/mnist/inference.json', 'my_examples/mnist/digit_2.png', cwd=project)
    assert result.returncode == 0, result.stderr
    assert "y_hat:tensor([[" in result.stdout and 'device=' not in result.stdout, 'printed as the tutorial shows'
