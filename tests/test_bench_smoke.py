"""The benchmarks (bench/run.py) run end to end in --quick mode on the shipped MNIST sample.

Only that every comparison runs, the two sides agree on their results and each ratio and verdict
is printed: timings are never asserted (on a few dozen batches they mean nothing).
"""
import os
import re
import sys

import forked
import pytest

pytestmark = pytest.mark.e2e


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUMMARY = r'^  {name} +{measure} +ratio +\d+\.\d+ +target <= [\d.]+ +(PASS|FAIL)'


def run_bench(tmp_path, only, *options):
    env = {k: v for k, v in os.environ.items() if k not in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    result = forked.run([sys.executable, os.path.join(REPO, 'bench', 'run.py'), '--quick', '--only', only,
                             '--threads', '1', '--data-root', str(tmp_path / 'data'), *options],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    # 0: every target met, 1: one missed (either means nothing on a few batches); 2 data missing,
    # 3 the sides disagree, 4 a run failed.
    assert result.returncode in (0, 1), output
    assert 'MISMATCH' not in result.stdout and result.stdout.count('sanity (hand / framework') >= 1, output
    return result.stdout


def test_tutorial_preloaded_infer_and_bf16_benchmarks_print_their_ratios(tmp_path):
    out = run_bench(tmp_path, '1,2,3,5')
    for name, measure in (('1 tutorial', 'time'), ('1 tutorial', 'peak RSS, all processes'),
                          ('1 tutorial', 'peak RSS, largest process'), ('2 preloaded', 'epoch time'),
                          ('3 infer', 'time'), ('5 preloaded bf16-mixed', 'epoch time')):
        assert re.search(SUMMARY.format(name=re.escape(name), measure=re.escape(measure)), out, re.M), out
    assert out.count('sanity (hand / framework, same seed and batches)') == 3 and 'OK' in out, out


def test_the_gpu_benchmarks_run_their_amp_code_on_the_cpu_and_skip_cleanly_without_cuda(tmp_path):
    """--device cuda runs 1, 2 and 5 with AMP (1 and 2 "16-mixed": autocast and a GradScaler on both sides);
    here that code runs on the CPU, and --device cuda on a machine without CUDA says so and exits 5."""
    out = run_bench(tmp_path, '1,2,5', '--precision', '16-mixed')
    for name, measure in (('1 tutorial', 'time'), ('2 preloaded 16-mixed', 'epoch time'),
                          ('5 preloaded bf16-mixed', 'epoch time')):
        assert re.search(SUMMARY.format(name=re.escape(name), measure=re.escape(measure)), out, re.M), out
    assert 'precision 16-mixed) vs python bench/hand_tutorial.py' in out, out
    assert out.count('sanity (hand / framework, same seed and batches)') == 3 and 'OK' in out, out
    import torch
    if torch.cuda.is_available():
        return
    result = forked.run([sys.executable, os.path.join(REPO, 'bench', 'run.py'), '--device', 'cuda'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 5 and not result.stdout, result
    assert result.stderr.startswith('skipped: --device cuda: this machine has no CUDA device'), result.stderr


@pytest.mark.slow
def test_ddp_benchmark_runs_two_processes_on_each_side_and_prints_its_ratio(tmp_path):
    out = run_bench(tmp_path, '4')
    assert re.search(SUMMARY.format(name='4 ddp', measure='time'), out, re.M), out
    assert re.search(r'sanity .*val acc (\d\.\d+) / \1.*: OK', out), out


def test_serve_benchmark_runs_the_servers_the_null_server_and_the_bare_model_and_prints_its_ratios(tmp_path):
    out = run_bench(tmp_path, '6')
    assert re.search(SUMMARY.format(name='6 serve', measure='time per example, 16 clients'), out, re.M), out
    for side in ('batched', 'max-batch 1', 'bare', 'pipeline', 'batched, 16 per request', 'null server'):
        assert re.search(rf'^  median {re.escape(side)} +\d+ examples/s', out, re.M), out
    for side in ('batched', 'max-batch 1', 'null server'):
        assert re.search(rf'^  median {re.escape(side)} +\d+ examples/s, .*server CPU \d+\.\d+ ms per example', out, re.M), out
    assert re.search(r'ratio null server / bare \d\.\d+: the most any server reaches', out), out
    assert re.search(r'ratio batched serve / bare model \(examples per second\) \d\.\d+ +target >= 0\.7', out), out
    assert re.search(r'sanity \(hand / framework, same digits\): .*: OK', out), out


def test_sweep_benchmark_runs_the_sweep_and_both_baselines_and_prints_its_ratios(tmp_path):
    out = run_bench(tmp_path, '7')
    assert re.search(SUMMARY.format(name=re.escape('7 sweep / processes'), measure='time'), out, re.M), out
    assert re.search(r'^  time \(start to exit; not judged\): median hand .*\n +ratio framework/hand \d\.\d+', out, re.M), out
    for side in ('processes', 'in-process', 'sweep'):
        assert re.search(rf'^  pair 1 {side} +seconds \d+\.\d+ s', out, re.M), out
    assert out.count('sanity (hand / framework, same seed and batches)') == 2 and ': OK' in out, out
    assert re.search(r"^  per trial .* the sweep's own cost [+-]\d+\.\d+ s per trial", out, re.M), out
