"""The spec format beyond the tutorial, through the commands in-process on a synthetic problem."""
import csv
import json

import pytest
import torch

from torchassistant.cli import commands
from torchassistant.core.errors import SpecError, UsageError

pytestmark = pytest.mark.e2e


def definition(group, name, **spec):
    return {'group': group, 'name': name, 'spec': spec}


def base_definitions(log):
    return [
        definition('datasets', 'points', **{'class': 'toy.Points', 'kwargs': {'size': 200}}),
        definition('splits', 'parts', dataset_name='points', ratio=[0.7, 0.2, 0.1]),
        definition('preprocessors', 'scale', fit='parts.train', **{'class': 'toy.Scale', 'args': [log]}),
        definition('datasets', 'train', link='parts.train', preprocessors=['scale']),
        definition('datasets', 'val', link='parts.val', preprocessors=['scale']),
        definition('collators', 'stack', factory_fn='toy_factories.collator'),
        definition('data_loaders', 'train_loader', dataset='train', collator='stack',
                   kwargs={'batch_size': 16, 'shuffle': True}),
        definition('data_loaders', 'val_loader', dataset='val', collator='stack', kwargs={'batch_size': 16}),
        definition('data_loaders', 'test_loader', dataset='parts.test', collator='stack', kwargs={'batch_size': 8}),
        definition('losses', 'ce', inputs=['y_hat', 'input_2'], **{'class': 'CrossEntropyLoss'}),
        definition('metrics', 'acc', inputs=['y_hat', 'input_2'], transform='toy.argmax', **{'class': 'Accuracy'}),
    ]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    import os
    import shutil
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copy(os.path.join(here, 'toy.py'), tmp_path / 'toy.py')
    (tmp_path / 'toy_factories.py').write_text('import toy\n\ndef collator(session):\n    return toy.stack\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path, data):
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def single_model_spec(workdir, epochs=2):
    definitions = base_definitions(str(workdir / 'fits.log')) + [
        definition('models', 'net', factory_fn='toy.make_classifier', kwargs={'hidden': 16}),
        definition('optimizers', 'sgd', model='net', kwargs={'lr': 0.4},
                   lr_scheduler={'class': 'StepLR', 'kwargs': {'step_size': 1, 'gamma': 0.5}}, **{'class': 'SGD'}),
    ]
    return {
        'session_dir': 'session',
        'initialize': {'definitions': definitions, 'pipelines': {
            'fit': {'input_injector': [{'data_loader': 'train_loader'}], 'losses': [{'loss_name': 'ce'}],
                    'metrics': [{'metric_name': 'acc', 'display_name': 'acc'}]},
            'check': {'input_injector': [{'data_loader': 'val_loader', 'variable_names': ['input_1', 'input_2']}],
                      'losses': [{'loss_name': 'ce', 'loss_display_name': 'val ce'}],
                      'metrics': [{'metric_name': 'acc', 'display_name': 'val acc'}]},
            'test': {'input_injector': [{'data_loader': 'test_loader'}],
                     'metrics': [{'metric_name': 'acc', 'display_name': 'test acc'}]},
        }},
        'train': {'stages': [{'training_pipelines': ['fit'], 'validation_pipelines': ['fit', 'check'],
                              'stop_condition': {'class': 'EpochsCompleted', 'kwargs': {'num_epochs': epochs}}}]},
    }


def test_splits_preprocessors_factories_and_schedulers(workdir, capsys):
    spec = write(workdir / 'train.json', single_model_spec(workdir))
    commands.init(spec)
    learned = torch.load(workdir / 'session' / 'learned.pt', weights_only=False)
    parts = learned['splits']['parts']
    assert [len(parts[k]) for k in ('train', 'val', 'test')] == [140, 40, 20]
    assert sorted(parts['train'] + parts['val'] + parts['test']) == list(range(200))
    assert learned['preprocessors']['scale']['scale'] > 9

    commands.train('session')
    out = capsys.readouterr().out
    assert 'Epoch     2 [acc ' in out and ', ce ' in out, 'a loss without display name shows under its name'
    with open(workdir / 'session' / 'metrics' / '0.csv') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['epoch', 'acc', 'ce', 'val acc', 'val ce']
    state = torch.load(workdir / 'session' / 'checkpoints' / 'epoch_2.pt', weights_only=False)
    # the scheduler stepped once per epoch, not per batch: 0.4 * 0.5 ** 2
    assert state['optimizers']['sgd']['param_groups'][0]['lr'] == pytest.approx(0.1)

    evaluation = write(workdir / 'eval.json', {'session_dir': 'session', 'validation_pipelines': ['check', 'test']})
    row = commands.evaluate(evaluation)
    assert set(row) == {'val acc', 'val ce', 'test acc'}
    assert row['val acc'] == pytest.approx(float(rows[-1][3]), abs=1e-5)
    # split drawn and preprocessor fitted once, at init; train and evaluate restored them
    assert (workdir / 'fits.log').read_text() == 'fit\n'


def test_overrides_in_evaluation_and_inference(workdir, capsys):
    commands.init(write(workdir / 'train.json', single_model_spec(workdir, epochs=1)))
    commands.train('session')
    before = (workdir / 'session' / 'spec.json').read_text()
    override = {'definitions': {'options': [definition('data_loaders', 'val_loader', kwargs={'batch_size': 40})],
                                'replace_strategy': 'override', 'override_key': ['group', 'name']}}
    spec = {'session_dir': 'session', 'validation_pipelines': ['check'], 'eval_steps': 1, 'initialize': override}
    capsys.readouterr()
    row = commands.evaluate(write(workdir / 'eval.json', spec))
    # one batch of 40 = the whole validation slice, so eval_steps=1 still sees every example
    spec_all = {'session_dir': 'session', 'validation_pipelines': ['check']}
    assert row == pytest.approx(commands.evaluate(write(workdir / 'eval2.json', spec_all)))
    assert (workdir / 'session' / 'spec.json').read_text() == before

    inference = {'session_dir': 'session', 'inference_pipeline': 'check',
                 'inputs_meta': [{'input_converter': {'class': 'toy.Label'}}],
                 'post_processor': {'class': 'toy.Argmax'}}
    capsys.readouterr()
    commands.infer(write(workdir / 'infer.json', inference), ['9,1', '1,9'])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Running inference on:  ['9,1', '1,9']"
    assert out[1] in ('y_hat:[1, 0]', 'y_hat:[0, 0]', 'y_hat:[1, 1]', 'y_hat:[0, 1]')


def graph_spec(workdir):
    definitions = base_definitions(str(workdir / 'fits.log')) + [
        definition('models', 'encoder', **{'class': 'toy.Encoder'}),
        definition('models', 'head', **{'class': 'toy.Head'}),
        definition('optimizers', 'enc_opt', model='encoder', **{'class': 'Adam', 'kwargs': {'lr': 0.01}}),
        definition('optimizers', 'head_opt', model='head', **{'class': 'Adam', 'kwargs': {'lr': 0.01}}),
        definition('batch_processors', 'classifier', neural_graph=[
            {'model_name': 'encoder', 'inputs': ['points'], 'outputs': ['h'], 'optimizer_name': 'enc_opt'},
            {'model_name': 'head', 'inputs': ['h'], 'outputs': ['scores'], 'optimizer_name': 'head_opt'}]),
        definition('batch_processors', 'frozen_head', neural_graph=[
            {'model_name': 'head', 'inputs': ['h'], 'outputs': ['scores']}]),
        definition('batch_graphs', 'graph', nodes=['classifier', 'frozen_head'], input_ports=['data'],
                   ingoing_edges={'classifier': ['data'], 'frozen_head': ['classifier']}),
        definition('losses', 'ce2', inputs=['scores', 'label'], **{'class': 'CrossEntropyLoss'}),
        definition('metrics', 'acc2', inputs=['scores', 'label'], transform='toy.argmax', **{'class': 'Accuracy'}),
    ]
    feed = lambda loader: [{'data_loader': loader, 'variable_names': ['points', 'label'], 'input_port': 'data'}]  # noqa
    return {
        'session_dir': 'session',
        'initialize': {'definitions': definitions, 'pipelines': {
            'a': {'graph': 'graph', 'input_injector': feed('train_loader'),
                  'losses': [{'loss_name': 'ce2', 'loss_display_name': 'loss a', 'node_name': 'classifier'}]},
            'b': {'graph': 'graph', 'input_injector': feed('test_loader'),
                  'losses': [{'loss_name': 'ce2', 'loss_display_name': 'loss b', 'node_name': 'frozen_head'}]},
            'val': {'graph': 'graph', 'input_injector': feed('val_loader'),
                    'metrics': [{'metric_name': 'acc2', 'display_name': 'acc', 'node_name': 'classifier'}]},
        }},
        'train': {'stages': [
            {'training_pipelines': ['a', 'b'], 'validation_pipelines': ['val'], 'eval_steps': 0.5,
             'stop_condition': {'class': 'toy.StopAfter', 'args': [2]}},
            {'training_pipelines': ['a'], 'validation_pipelines': ['val'], 'debug_pipelines': ['val'],
             'stop_condition': {'class': 'EpochsCompleted', 'kwargs': {'num_epochs': 1}}}]},
    }


def test_graphs_interleaving_stages_and_stop_condition_history(workdir, capsys):
    import toy
    toy.StopAfter.seen.clear()
    commands.init(write(workdir / 'train.json', graph_spec(workdir)))
    start = torch.load(workdir / 'session' / 'checkpoints' / 'epoch_0.pt', weights_only=False)['models']
    commands.train('session')
    out = capsys.readouterr().out
    assert 'Training stage 0 in progress' in out and 'Training stage 1 in progress' in out
    assert 'Debug output of pipeline "val":\nh:tensor([[' in out and '\nscores:tensor([[' in out
    # the stop condition saw the stage's epoch count and its per-epoch rows
    assert toy.StopAfter.seen[-1][0] == 2 and len(toy.StopAfter.seen[-1][1]) == 2
    assert set(toy.StopAfter.seen[-1][1][0]) == {'acc'}
    end = torch.load(workdir / 'session' / 'checkpoints' / 'epoch_3.pt', weights_only=False)
    assert end['progress']['stage'] == 2
    assert not torch.equal(start['encoder']['linear.weight'], end['models']['encoder']['linear.weight'])
    assert [p.name for p in (workdir / 'session' / 'metrics').iterdir()] != []
    assert sorted(p.name for p in (workdir / 'session' / 'metrics').iterdir()) == ['0.csv', '1.csv']


def test_interleave_runs_every_pipeline_until_exhausted(workdir):
    """a has 9 batches of train_loader, b 3 of test_loader: an epoch is 12 iterations."""
    from torchassistant.assembly.build import LearnedState, build, build_stages
    from torchassistant.run.events import Events
    from torchassistant.run.step import Precision, TrainStep
    from torchassistant.run.trainer import Trainer
    from torchassistant.session.checkpoint import Progress
    from torchassistant.spec.loader import load_file
    document = load_file(write(workdir / 'train.json', graph_spec(workdir)))
    entities = build(document, LearnedState(seed=1), torch.device('cpu'))
    stage = build_stages(document, entities)[0]
    calls = []
    for pipeline in stage.training:
        original = pipeline.train_step
        pipeline.train_step = lambda frames, meters, step, p=pipeline, f=original: (calls.append(p.name),
                                                                                    f(frames, meters, step))
    step = TrainStep(Precision('32', 'cpu'))
    Trainer(entities, [stage], None, step, Events()).epoch(stage, Progress())
    assert calls == ['a', 'b'] * 3 + ['a'] * 6


def test_missing_graph_choice_is_a_spec_error(workdir):
    spec = graph_spec(workdir)
    del spec['initialize']['pipelines']['a']['graph']
    spec['initialize']['definitions'].append(definition('batch_graphs', 'other', nodes=['classifier'],
                                                        input_ports=['data'], ingoing_edges={'classifier': ['data']}))
    with pytest.raises(SpecError) as error:
        commands.init(write(workdir / 'train.json', spec))
    assert 'initialize.pipelines.a: needs "graph"' in str(error.value)
    assert not (workdir / 'session').exists()


def test_session_without_intact_checkpoint(workdir):
    commands.init(write(workdir / 'train.json', single_model_spec(workdir, epochs=1)))
    (workdir / 'session' / 'checkpoints' / 'epoch_0.pt').write_bytes(b'torn')
    with pytest.raises(UsageError, match='no intact checkpoint'):
        commands.train('session')


def test_inference_builds_only_its_pipeline_and_what_it_reaches(workdir):
    from torchassistant.assembly.build import LearnedState, build
    from torchassistant.spec.loader import parse
    spec = single_model_spec(workdir)
    spec['initialize']['definitions'].append(definition('datasets', 'unused', **{'class': 'toy.NoSuchThing'}))
    document = parse(json.dumps(spec), 'train.json')
    entities = build(document, LearnedState(seed=0), torch.device('cpu'), only=['test'])
    assert list(entities.pipelines) == ['test']
    assert sorted(entities.data_loaders) == ['test_loader'] and 'train' not in entities.datasets
    assert 'unused' not in entities.datasets and 'ce' not in entities.losses      # never asked for: never built
    assert len(entities.datasets['val']) == 40                                     # asked for: built then
    with pytest.raises(Exception, match='"unused": building it failed'):
        entities.datasets['unused']
    with pytest.raises(KeyError):
        entities.models['nothing']


def test_built_entities_are_freed_without_waiting_for_the_garbage_collector(workdir):
    """No reference cycle: `train.py` frees models and datasets when it is done, not at exit."""
    import gc
    import weakref

    from torchassistant.assembly.build import LearnedState, build
    from torchassistant.spec.loader import parse
    document = parse(json.dumps(single_model_spec(workdir)), 'train.json')
    build(document, LearnedState(seed=0), torch.device('cpu'))    # first imports (torch's keep frames a while)
    gc.collect()
    gc.disable()
    try:
        for only in (None, ['test']):
            entities = build(document, LearnedState(seed=0), torch.device('cpu'), only=only)
            model, loader = weakref.ref(entities.models['net']), weakref.ref(entities.data_loaders['test_loader'])
            del entities
            assert model() is None and loader() is None, only
    finally:
        gc.enable()
