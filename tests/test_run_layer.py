"""The run layer through the commands, in-process, on the synthetic toy problem: stop conditions,
the step object (accumulation, clipping, precision, non-finite losses, errors in backward/step),
device choice, compile, and exact mid-epoch resume."""
import collections
import contextlib
import os
import re
import shutil
import sys

import pytest
import torch
import toy
from test_spec_features import definition, single_model_spec, workdir, write  # noqa: F401  (fixture)

from torchassistant.cli import commands
from torchassistant.core.errors import SpecError, UsageError, UserCodeError
from torchassistant.run import device as device_module
from torchassistant.run.device import choose_device
from torchassistant.session.store import SessionStore

pytestmark = pytest.mark.e2e


def final_state(path='session'):
    return SessionStore.open(path).latest_checkpoint()[1]


def init_and_train(workdir, spec, **options):
    commands.init(write(workdir / 'train.json', spec))
    return commands.train('session', options=commands.RunOptions(**options) if options else None)


def replace_definition(spec, name, **fields):
    for d in spec['initialize']['definitions']:
        if d['name'] == name:
            d['spec'].update(fields)


# ---- stop conditions -----------------------------------------------------------------------------

def test_stop_condition_is_asked_once_after_each_epoch_and_never_again_after_its_stage(workdir):
    spec = single_model_spec(workdir)
    first = spec['train']['stages'][0]
    spec['train']['stages'] = [dict(first, stop_condition={'class': 'toy.StopAfter', 'args': [3]}),
                               dict(first, stop_condition={'class': 'EpochsCompleted', 'kwargs': {'num_epochs': 1}})]
    toy.StopAfter.seen.clear()
    init_and_train(workdir, spec)
    assert [epoch for epoch, _ in toy.StopAfter.seen] == [1, 2, 3]
    assert [len(history) for _, history in toy.StopAfter.seen] == [1, 2, 3]
    commands.train('session')          # complete: nothing asks the condition again
    assert len(toy.StopAfter.seen) == 3
    assert final_state()['progress']['epoch'] == 4


def test_stop_condition_history_survives_a_resume(workdir):
    spec = single_model_spec(workdir)
    spec['train']['stages'][0]['stop_condition'] = {'class': 'toy.StopAfter', 'args': [2]}
    commands.init(write(workdir / 'train.json', spec))
    store = SessionStore.open('session')
    toy.StopAfter.seen.clear()
    # stop after the first epoch's checkpoint, as a crash would
    original = store.save_checkpoint

    def crash_after_epoch_1(epoch, state, **kwargs):
        original(epoch, state, **kwargs)
        if epoch == 1 and not kwargs.get('batch'):
            raise KeyboardInterrupt
    SessionStore.save_checkpoint, saved = (lambda self, *a, **k: crash_after_epoch_1(*a, **k)), SessionStore.save_checkpoint
    try:
        with pytest.raises(KeyboardInterrupt):
            commands.train('session')
    finally:
        SessionStore.save_checkpoint = saved
    commands.train('session')
    assert [(epoch, len(history)) for epoch, history in toy.StopAfter.seen] == [(1, 1), (2, 2)]


def test_num_epochs_must_be_positive(workdir):
    spec = single_model_spec(workdir, epochs=0)
    with pytest.raises(SpecError, match='num_epochs must be a positive integer'):
        commands.init(write(workdir / 'train.json', spec))


# ---- what a training pipeline needs ---------------------------------------------------------------

def test_a_training_pipeline_that_updates_nothing_is_a_spec_error(workdir):
    spec = single_model_spec(workdir)
    spec['initialize']['definitions'] = [d for d in spec['initialize']['definitions'] if d['group'] != 'optimizers']
    with pytest.raises(SpecError) as error:
        commands.init(write(workdir / 'train.json', spec))
    assert 'train.stages[0].training_pipelines[0]: pipeline "fit" is used for training but can never update ' \
           'anything' in error.value.message
    assert not (workdir / 'session').exists()


def test_an_error_in_backward_is_reported_as_the_backward_pass(workdir):
    spec = single_model_spec(workdir, epochs=1)
    spec['initialize']['definitions'].append(definition('losses', 'bad', inputs=['y_hat', 'input_2'],
                                                        **{'class': 'toy.BackwardFails'}))
    spec['initialize']['pipelines']['fit']['losses'] = [{'loss_name': 'bad'}]
    with pytest.raises(UserCodeError) as error:
        init_and_train(workdir, spec)
    message = error.value.message
    assert 'pipeline "fit"' in message and 'epoch 1, batch 1' in message
    assert 'the backward pass of the summed losses: RuntimeError: deliberate failure in backward' in message
    assert 'loading a batch' not in message


def test_an_error_in_optimizer_step_names_the_optimizer(workdir):
    spec = single_model_spec(workdir, epochs=1)
    replace_definition(spec, 'sgd', **{'class': 'toy.StepFails'})
    with pytest.raises(UserCodeError) as error:
        init_and_train(workdir, spec)
    assert 'optimizer "sgd" step(): RuntimeError: deliberate failure in step' in error.value.message


# ---- the step object ------------------------------------------------------------------------------

def test_accumulate_steps_once_per_window_and_flushes_at_epoch_end(workdir):
    spec = single_model_spec(workdir, epochs=1)
    replace_definition(spec, 'sgd', **{'class': 'Adam', 'kwargs': {'lr': 0.01}})
    spec['train']['accumulate'] = 2
    init_and_train(workdir, spec)
    # 140 training examples in batches of 16: 9 iterations, 4 windows of 2 and one flushed at the end
    assert final_state()['optimizers']['sgd']['state'][0]['step'] == 5


def test_accumulate_2_equals_a_hand_written_loop_with_half_losses(workdir):
    spec = single_model_spec(workdir, epochs=1)
    replace_definition(spec, 'train_loader', kwargs={'batch_size': 16, 'shuffle': False})
    del [d for d in spec['initialize']['definitions'] if d['name'] == 'sgd'][0]['spec']['lr_scheduler']
    spec['train']['accumulate'] = 2
    commands.init(write(workdir / 'train.json', spec))
    start = final_state()['models']['net']
    commands.train('session')
    trained = final_state()['models']['net']

    from torchassistant.assembly.build import LearnedState, build
    from torchassistant.spec.loader import load_file
    session = SessionStore.open('session')
    entities = build(load_file(session.spec_file()), LearnedState.from_state_dict(session.learned_state()), 'cpu')
    model = entities.models['net']
    model.load_state_dict(start)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.4)
    batches = list(entities.data_loaders['train_loader'])
    for window in range(0, len(batches), 2):
        optimizer.zero_grad()
        for x, y in batches[window:window + 2]:
            (torch.nn.functional.cross_entropy(model(x)[0], y) / 2).backward()
        optimizer.step()
    for name, value in model.state_dict().items():
        assert torch.allclose(value, trained[name], atol=1e-6), name


def test_clip_grad_norm_bounds_every_update(workdir):
    spec = single_model_spec(workdir, epochs=1)
    spec['train']['clip_grad_norm'] = 1e-3
    commands.init(write(workdir / 'train.json', spec))
    start = final_state()['models']['net']
    commands.train('session')
    end = final_state()['models']['net']
    change = torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in start))
    assert 0 < change <= 9 * 0.4 * 1e-3 * 1.0001      # 9 steps of SGD lr 0.4 on gradients of norm <= 1e-3


@pytest.mark.parametrize('precision, dtype', [('bf16-mixed', torch.bfloat16), ('32', torch.float32)])
def test_precision_autocasts_training_and_evaluation(workdir, precision, dtype):
    spec = single_model_spec(workdir, epochs=1)
    replace_definition(spec, 'net', **{'class': 'toy.Probe'})
    del [d for d in spec['initialize']['definitions'] if d['name'] == 'net'][0]['spec']['factory_fn']
    [d for d in spec['initialize']['definitions'] if d['name'] == 'net'][0]['spec'].pop('kwargs')
    spec['precision'] = precision
    toy.Probe.dtypes.clear()
    init_and_train(workdir, spec)
    assert set(toy.Probe.dtypes) == {dtype}
    history = final_state()['progress']['history'][0]
    assert all(v == v for v in history[0].values())          # finite numbers, not NaN
    toy.Probe.dtypes.clear()
    evaluation = write(workdir / 'eval.json', {'session_dir': 'session', 'validation_pipelines': ['check'],
                                               'precision': '32'})
    commands.evaluate(evaluation)
    assert set(toy.Probe.dtypes) == {torch.float32}          # the evaluation spec overrides the precision


def test_fp16_mixed_keeps_its_grad_scaler_in_checkpoints(workdir):
    spec = single_model_spec(workdir, epochs=1)
    spec['precision'] = '16-mixed'
    init_and_train(workdir, spec)
    scaler = final_state()['step']['scaler']
    assert scaler is not None and scaler['scale'] > 0


def test_non_finite_loss_stops_naming_loss_epoch_and_batch_and_keeps_the_last_checkpoint(workdir):
    spec = single_model_spec(workdir, epochs=2)
    replace_definition(spec, 'points', **{'class': 'toy.NanAt', 'kwargs': {'size': 200, 'every': 10}})
    commands.init(write(workdir / 'train.json', spec))
    with pytest.raises(UserCodeError) as error:
        commands.train('session')
    message = error.value.message
    assert 'pipeline "fit"' in message and 'loss "ce"' in message and 'its value is nan' in message
    assert '(stage 0, epoch 1, batch ' in message and '"non_finite": "skip"' in message
    state = final_state()
    assert state['progress']['epoch'] == 0 and all(torch.isfinite(v).all() for v in state['models']['net'].values())


def test_non_finite_skip_drops_such_batches(workdir, capsys):
    spec = single_model_spec(workdir, epochs=1)
    replace_definition(spec, 'points', **{'class': 'toy.NanAt', 'kwargs': {'size': 200, 'every': 40}})
    spec['train']['non_finite'] = 'skip'
    spec['seed'] = 3          # a fixed split and order: some batches hold a NaN example, some do not
    commands.init(write(workdir / 'train.json', spec))
    start = final_state()['models']['net']
    commands.train('session')
    trained = final_state()['models']['net']
    assert all(torch.isfinite(v).all() for v in trained.values())
    assert any(not torch.equal(start[k], trained[k]) for k in start)     # the finite batches were applied
    assert re.search(r'\d+ batch\(es\) with a non-finite loss were skipped', capsys.readouterr().out)


# ---- host synchronisation ------------------------------------------------------------------------

DEVICE_READS = ('item', 'tolist', 'numpy', 'cpu', '__bool__', '__float__', '__int__', '__index__', '__format__')
FRAMEWORK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'torchassistant') + os.sep


@contextlib.contextmanager
def framework_device_reads():
    """{'file:line method': count} of the framework's own calls of the Tensor methods that read a value on
    the host, which on a GPU wait for everything queued before them (on the CPU they cost nothing, but
    they count the same). Calls from user code and from inside torch are not the framework's."""
    found = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in DEVICE_READS}

    def counted(name, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(FRAMEWORK):
                found[f'{caller[len(FRAMEWORK):]}:{sys._getframe(1).f_lineno} {name}'] += 1
            return original(self, *args, **kwargs)
        return read

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counted(name, original))
        yield found
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def test_an_epoch_reads_the_device_a_few_times_not_after_every_batch(workdir):
    spec = single_model_spec(workdir, epochs=1)
    replace_definition(spec, 'points', kwargs={'size': 2000})
    replace_definition(spec, 'train_loader', kwargs={'batch_size': 8, 'shuffle': True})     # 175 batches
    commands.init(write(workdir / 'train.json', spec))
    with framework_device_reads() as reads:
        commands.train('session', options=commands.RunOptions(quiet=True))
    assert final_state()['progress']['epoch'] == 1
    # the epoch's row (validation included), the checkpoint's running sums, the non-finite checks:
    # before, every batch's loss was read for the non-finite check (175 + 6)
    assert sum(reads.values()) <= 10, reads


# ---- device and compile ---------------------------------------------------------------------------

def test_device_choice_and_its_errors(monkeypatch):
    monkeypatch.delenv('TORCHASSISTANT_DEVICE', raising=False)
    here = 'cuda' if torch.cuda.is_available() else 'mps' if device_module._mps_available() else 'cpu'
    assert choose_device() == torch.device(here)                            # "auto" on this machine
    with monkeypatch.context() as m:                                        # and its order on other machines
        for cuda, mps, expected in [(True, True, 'cuda'), (False, True, 'mps'), (False, False, 'cpu')]:
            m.setattr(torch.cuda, 'is_available', lambda cuda=cuda: cuda)
            m.setattr(device_module, '_mps_available', lambda mps=mps: mps)
            assert choose_device() == torch.device(expected), (cuda, mps)
    assert choose_device('cpu', 'cuda') == torch.device('cpu')              # the option wins over the spec
    monkeypatch.setenv('TORCHASSISTANT_DEVICE', 'cpu')
    assert choose_device(None, None) == torch.device('cpu')                 # the variable is the fallback
    with pytest.raises(UsageError, match='"tpu" is not a device'):
        choose_device('tpu')
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match='asks for "cuda:1", but this machine has no CUDA device'):
            choose_device(None, 'cuda:1', where='spec.json:2:15 device')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_asking_for_cuda_without_cuda_is_a_usage_error_not_a_spec_of_args(workdir):
    spec = single_model_spec(workdir, epochs=1)
    spec['device'] = 'cuda'
    with pytest.raises(UsageError) as error:
        commands.init(write(workdir / 'train.json', spec))
    assert 'device' in error.value.message and 'no CUDA device' in error.value.message
    assert 'args and kwargs' not in error.value.message


def test_compile_falls_back_cleanly_where_the_platform_cannot_compile(workdir, monkeypatch, capsys):
    def cannot(self, *args, **kwargs):
        raise RuntimeError('this platform cannot compile')
    monkeypatch.setattr(torch.nn.Module, 'compile', cannot)
    spec = single_model_spec(workdir, epochs=1)
    spec['compile'] = True
    init_and_train(workdir, spec)
    assert 'torch.compile is not available here; running eagerly: net (RuntimeError: this platform cannot ' \
           'compile)' in capsys.readouterr().out
    assert final_state()['progress']['epoch'] == 1


# ---- mid-epoch checkpoints ------------------------------------------------------------------------

class _Crash(BaseException):
    pass


@pytest.mark.parametrize('workers', [0, 2])
def test_mid_epoch_resume_is_bit_identical(workdir, workers):
    spec = single_model_spec(workdir, epochs=2)
    for loader in ('train_loader', 'val_loader', 'test_loader'):
        [d for d in spec['initialize']['definitions'] if d['name'] == loader][0]['spec']['kwargs']['num_workers'] = workers
    spec['train']['checkpoint_every'] = {'iterations': 2}
    commands.init(write(workdir / 'train.json', spec))
    shutil.copytree('session', 'copy')
    commands.train('session')
    uninterrupted = final_state()

    shutil.move('session', 'full')
    shutil.move('copy', 'session')
    saves = []
    original = SessionStore.save_checkpoint

    def crash_on_third_mid_epoch_save(self, epoch, state, **kwargs):
        path = original(self, epoch, state, **kwargs)
        saves.append(kwargs.get('batch', 0))
        if sum(1 for b in saves if b) == 3:
            raise _Crash()
        return path
    SessionStore.save_checkpoint = crash_on_third_mid_epoch_save
    try:
        with pytest.raises(_Crash):
            commands.train('session')
    finally:
        SessionStore.save_checkpoint = original
    assert final_state()['progress']['batch'] == 6          # epoch 1 of 9 batches, 6 done
    commands.train('session')
    resumed = final_state()
    for group in ('models', 'optimizers'):
        for name in uninterrupted[group]:
            assert_equal(uninterrupted[group][name], resumed[group][name])
    assert resumed['progress']['history'] == uninterrupted['progress']['history']
    assert (workdir / 'session' / 'metrics' / '0.csv').read_text() == (workdir / 'full' / 'metrics' / '0.csv').read_text()


def assert_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal(x, y)
    else:
        assert a == b


def test_frozen_nodes_collect_no_gradients_but_pass_them_on(workdir):
    """A node without an optimizer keeps its .grad untouched (another pipeline may be accumulating
    there) while the gradient still reaches the trainable node before it."""
    from test_spec_features import graph_spec

    from torchassistant.assembly.build import LearnedState, build
    from torchassistant.run.meters import Meters
    from torchassistant.run.step import Precision, TrainStep
    from torchassistant.spec.loader import load_file
    spec = graph_spec(workdir)
    processor = [d for d in spec['initialize']['definitions'] if d['name'] == 'classifier'][0]['spec']
    del processor['neural_graph'][1]['optimizer_name']            # the head is frozen in "a" ...
    spec['initialize']['pipelines']['a']['losses'][0]['node_name'] = 'frozen_head'   # ... and reads its output
    entities = build(load_file(write(workdir / 'train.json', spec)), LearnedState(seed=1), torch.device('cpu'))
    pipeline = entities.pipelines['a']
    head, encoder = entities.models['head'], entities.models['encoder']
    assert {id(p) for p in pipeline.frozen} == {id(p) for p in head.parameters()}
    frames = next(pipeline.batches())
    before = {k: v.clone() for k, v in head.state_dict().items()}
    pipeline.train_step(frames, Meters(pipeline), TrainStep(Precision('32', 'cpu')))
    assert all(p.grad is None for p in head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in head.state_dict().items())
    assert all(p.requires_grad for p in head.parameters())         # restored after the step


def test_best_metric_must_be_a_recorded_metric(workdir):
    spec = single_model_spec(workdir)
    spec['train']['best_metric'] = {'name': 'val ac', 'mode': 'max'}
    with pytest.raises(SpecError) as error:
        commands.init(write(workdir / 'train.json', spec))
    assert 'train.best_metric.name: no stage records "val ac"; did you mean \'val acc\'' in error.value.message


def test_tensorboard_and_plot_loggers_record_training(workdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    spec = single_model_spec(workdir, epochs=2)
    spec['train']['loggers'] = ['tensorboard', 'plots']
    init_and_train(workdir, spec)
    history = final_state()['progress']['history'][0]
    events = EventAccumulator(str(workdir / 'session' / 'tensorboard'))
    events.Reload()
    tags = events.Tags()['scalars']
    assert {'stage 0/acc', 'stage 0/ce', 'stage 0/val acc', 'stage 0/val ce', 'lr/sgd', 'batch/fit/ce'} <= set(tags)
    for name in ('val acc', 'ce'):
        logged = [(e.step, e.value) for e in events.Scalars(f'stage 0/{name}')]
        assert logged == [(epoch, pytest.approx(row[name], rel=1e-6)) for epoch, row in enumerate(history, 1)]
    assert [e.value for e in events.Scalars('lr/sgd')] == pytest.approx([0.2, 0.1])     # StepLR halves it each epoch
    batches = events.Scalars('batch/fit/ce')
    assert [e.step for e in batches] == list(range(1, 19))                              # 9 iterations an epoch
    assert all(0 < e.value < 5 for e in batches)
    assert (workdir / 'session' / 'metrics' / '0.csv').is_file()                         # plots imply the CSV
    png = workdir / 'session' / 'plots' / 'stage_0.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_evaluate_chooses_the_best_latest_or_an_epochs_checkpoint(workdir):
    spec = single_model_spec(workdir, epochs=3)
    spec['train']['best_metric'] = {'name': 'val ce', 'mode': 'min'}
    spec['train']['keep_checkpoints'] = 5
    init_and_train(workdir, spec)
    history = final_state()['progress']['history'][0]
    best = min(range(3), key=lambda i: (history[i]['val ce'], i))

    def evaluated(which):
        evaluation = {'session_dir': 'session', 'validation_pipelines': ['check']}
        if which is not None:
            evaluation['checkpoint'] = which
        return commands.evaluate(write(workdir / 'eval.json', evaluation))
    assert evaluated(None)['val ce'] == pytest.approx(history[2]['val ce'])
    assert evaluated('latest')['val ce'] == pytest.approx(history[2]['val ce'])
    assert evaluated('best')['val ce'] == pytest.approx(history[best]['val ce'])
    assert evaluated(1)['val ce'] == pytest.approx(history[0]['val ce'])
    with pytest.raises(UsageError) as error:
        evaluated(7)
    assert 'eval.json:' in error.value.message and 'checkpoint' in error.value.message


def test_the_same_spec_and_seed_give_the_same_weights(workdir, capsys):
    spec = single_model_spec(workdir, epochs=1)
    spec['seed'] = 1234
    results = []
    for session in ('one', 'two'):
        spec['session_dir'] = session
        commands.init(write(workdir / f'{session}.json', spec))
        commands.train(session)
        results.append(final_state(session))
    assert 'Seed 1234 (given in the spec)' in capsys.readouterr().out
    assert_equal(results[0]['models'], results[1]['models'])
    assert results[0]['progress']['history'] == results[1]['progress']['history']
    spec.pop('seed')
    spec['session_dir'] = 'three'
    commands.init(write(workdir / 'three.json', spec))
    drawn = re.search(r'Seed (\d+) \(drawn; add "seed": (\d+) to the spec to repeat it\)', capsys.readouterr().out)
    assert drawn and drawn.group(1) == drawn.group(2)
    assert SessionStore.open('three').learned_state()['seed'] == int(drawn.group(1))


def test_reduce_lr_on_plateau_steps_with_its_monitored_metric(workdir):
    spec = single_model_spec(workdir, epochs=4)
    plateau = {'class': 'ReduceLROnPlateau', 'kwargs': {'patience': 0, 'factor': 0.5, 'threshold': 0.5}}
    replace_definition(spec, 'sgd', lr_scheduler=plateau)
    with pytest.raises(SpecError, match='ReduceLROnPlateau steps with a metric: add "monitor"'):
        commands.init(write(workdir / 'train.json', spec))
    plateau['monitor'] = 'val ce'
    init_and_train(workdir, spec)
    state = final_state()
    expected = torch.optim.lr_scheduler.ReduceLROnPlateau(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.4), patience=0, factor=0.5, threshold=0.5)
    for row in state['progress']['history'][0]:
        expected.step(row['val ce'])
    assert state['optimizers']['sgd']['param_groups'][0]['lr'] == pytest.approx(expected.get_last_lr()[0])
    assert expected.get_last_lr()[0] < 0.4          # (threshold 0.5: it must have reduced)
