"""Bad input, table-driven: every broken spec or command line ends with a clear message on stderr
that names the culprit and where it is, the right exit code (2 bad spec or usage, 1 user code
failed, 130 interrupted), no Python traceback, and nothing written.

Broken specs are mutations of examples/mnist/training.json, written into a fresh working directory;
the commands run in-process through `torchassistant.cli.*_main` (a few also as real scripts, to show
they behave the same). Datasets read a prepared MNIST sample, so nothing is downloaded.
"""
import copy
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import forked
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from torchassistant import cli  # noqa: E402

pytestmark = pytest.mark.e2e


EXAMPLE = json.loads((REPO / 'examples' / 'mnist' / 'training.json').read_text())
SPEC = 'training.json'
TRACEBACK = 'Traceback (most recent call last)'
FRAMEWORK_FRAME = re.compile(r'File "[^"]*[/\\]torchassistant[/\\]')

USER_CODE = '''\
import torch


class ExplodingModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        raise ValueError("the model cannot be built: boom")  # MODEL RAISES


class InterruptedModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        raise KeyboardInterrupt


def exploding_transform(y_hat, labels):
    raise RuntimeError("transform exploded on purpose")  # TRANSFORM RAISES


class ExplodingConverter:
    def __call__(self, text):
        raise ValueError("cannot read " + text)  # CONVERTER RAISES
'''


def user_line(marker):
    """1-based line of USER_CODE that carries `marker`."""
    return next(i for i, line in enumerate(USER_CODE.splitlines(), 1) if marker in line)


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def data_root(tmp_path_factory):
    """A data root holding the shipped MNIST sample, so torchvision's MNIST never downloads."""
    from examples.mnist.prepare_data import prepare
    root = tmp_path_factory.mktemp('mnist-data')
    prepare(str(root))
    return root


def example_spec(data_root):
    """A fresh copy of the example training spec that reads `data_root` and writes "session"."""
    spec = copy.deepcopy(EXAMPLE)
    spec['session_dir'] = 'session'
    for definition in spec['initialize']['definitions']:
        if definition['group'] == 'datasets':
            definition['spec']['args'] = [str(data_root)]
            definition['spec']['kwargs']['download'] = False
        if definition['group'] == 'data_loaders':
            definition['spec']['kwargs']['num_workers'] = 0
    return spec


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty current directory; the repository importable (for examples.mnist); user_code fresh."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, 'dont_write_bytecode', True)
    sys.modules.pop('user_code', None)
    yield tmp_path
    sys.modules.pop('user_code', None)


@pytest.fixture(scope='module')
def session(tmp_path_factory, data_root):
    """A real session folder made by init (epoch-0 checkpoint, no training), shared by the module."""
    root = tmp_path_factory.mktemp('shared-session')
    spec = example_spec(data_root)
    spec['session_dir'] = str(root / 'session')
    (root / SPEC).write_text(json.dumps(spec, indent=4))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.syspath_prepend(str(REPO))
        assert cli.init_main([str(root / SPEC)]) == 0
    return root / 'session'


def snapshot(folder):
    """{relative path: sha256} of every file and folder under `folder`."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir'
            for p in sorted(folder.rglob('*'))}


# ---- helpers for building broken specs ------------------------------------------------------------

def definitions(spec):
    return spec['initialize']['definitions']


def D(spec, name):
    """The definition named `name`."""
    return next(d for d in definitions(spec) if d['name'] == name)


def S(spec, name):
    """The `spec` block of the definition named `name`."""
    return D(spec, name)['spec']


def P(spec, name):
    return spec['initialize']['pipelines'][name]


def stage(spec):
    return spec['train']['stages'][0]


def uses(spec):
    """Every loss and metric use of every pipeline."""
    return [u for p in spec['initialize']['pipelines'].values() for u in p.get('losses', []) + p.get('metrics', [])]


def insert_after(spec, name, definition):
    items = definitions(spec)
    items.insert(items.index(D(spec, name)) + 1, definition)


def add_split(spec, ratio=(0.8, 0.2)):
    """A split "my_split" of train_ds right after it (definitions[1])."""
    insert_after(spec, 'train_ds', {'group': 'splits', 'name': 'my_split',
                                    'spec': {'dataset_name': 'train_ds', 'ratio': list(ratio)}})


def use_graph(spec, processors=('a',), ports=('p',), edges=None, node_name=None):
    """Pipelines run through batch graph "graph" (the last definition); each batch processor of
    `processors` runs LeNet5 on input_1 giving y_hat. Processors are definitions[9...]."""
    for name in processors:
        definitions(spec).append({'group': 'batch_processors', 'name': name, 'spec': {'neural_graph': [
            {'model_name': 'LeNet5', 'inputs': ['input_1'], 'outputs': ['y_hat'], 'optimizer_name': 'optimizer'}]}})
    edges = edges if edges is not None else {processors[0]: list(ports)}
    definitions(spec).append({'group': 'batch_graphs', 'name': 'graph', 'spec': {
        'nodes': list(processors), 'input_ports': list(ports), 'ingoing_edges': edges}})
    for pipeline in spec['initialize']['pipelines'].values():
        pipeline['graph'] = 'graph'
    if node_name:
        for use in uses(spec):
            use['node_name'] = node_name


def move(spec, name, after):
    item = D(spec, name)
    definitions(spec).remove(item)
    insert_after(spec, after, item)


def drop(mapping, key):
    del mapping[key]


def rename(mapping, old, new):
    mapping[new] = mapping.pop(old)


def chain(*steps):
    def run(spec):
        for step in steps:
            step(spec)
    return run


# ---- the table of broken training specs -----------------------------------------------------------

@dataclass
class Bad:
    """A broken training spec: `mutate(spec)` breaks a copy of the example (or `text(json_text)` breaks
    its text); `where` is the JSON path the message must name, `says` what it must say, `line` text the
    reported line must contain, `problems` how many problems the whole report lists."""
    mutate: object = None
    where: str = ''
    says: tuple = ()
    line: str = None
    problems: int = 1
    text: object = None
    extra: list = field(default_factory=list)   # further (where, says) pairs expected in the report


def bad(id, mutate, where, *says, line=None, problems=1, extra=()):
    return pytest.param(Bad(mutate, where, says, line, problems, extra=list(extra)), id=id)


def bad_text(id, text, says, line=None):
    return pytest.param(Bad(text=text, says=(says,), line=line), id=id)


DEF = 'initialize.definitions'
TRAINING_PIPELINE = 'initialize.pipelines.training_pipeline'

BAD_TRAINING_SPECS = [
    # -- structure: required fields, types, unknown keys --
    bad('missing-session_dir', lambda s: drop(s, 'session_dir'), '', 'missing required field "session_dir"'),
    bad('missing-data_loader-collator', lambda s: drop(S(s, 'training_loader'), 'collator'),
        f'{DEF}[3] "training_loader" spec', 'missing required field "collator"', line='"spec": {'),
    bad('missing-definition-spec', lambda s: drop(D(s, 'my_collator'), 'spec'),
        f'{DEF}[2] "my_collator"', 'missing required field "spec"'),
    bad('missing-stop_condition', lambda s: drop(stage(s), 'stop_condition'),
        'train.stages[0]', 'missing required field "stop_condition"'),
    bad('session_dir-not-a-string', lambda s: s.update(session_dir=5),
        'session_dir', 'must be a string, not a number (5)', line='"session_dir": 5'),
    bad('loss-inputs-not-a-list', lambda s: S(s, 'cross_entropy').update(inputs='y_hat'),
        f'{DEF}[7] "cross_entropy" spec.inputs', 'must be a list, not a string', line='"inputs": "y_hat"'),
    bad('definitions-not-a-list', lambda s: s['initialize'].update(definitions=42),
        'initialize.definitions', 'must be a list or an object, not a number', line='"definitions": 42'),
    bad('definitions-object-without-parts', lambda s: s['initialize'].update(definitions={}),
        'initialize.definitions', 'missing required field "computation"', line='"definitions": {}', problems=2,
        extra=[('initialize.definitions', ('missing required field "data"',))]),
    bad('kwargs-typo-in-field-name', lambda s: rename(S(s, 'train_ds'), 'kwargs', 'kwarg'),
        f'{DEF}[0] "train_ds" spec.kwarg', 'unknown field "kwarg"', "did you mean 'kwargs'", line='"kwarg": {'),
    bad('unknown-top-level-key', lambda s: rename(s, 'train', 'trian'),
        'trian', 'unknown field "trian"', "did you mean 'train'", line='"trian": {'),
    bad('unknown-pipeline-field', lambda s: rename(P(s, 'training_pipeline'), 'losses', 'loss'),
        f'{TRAINING_PIPELINE}.loss', 'unknown field "loss"', "did you mean 'losses'", line='"loss": ['),
    bad('unknown-stage-field', lambda s: rename(stage(s), 'validation_pipelines', 'validation_pipeline'),
        'train.stages[0].validation_pipeline', "did you mean 'validation_pipelines'"),
    bad('empty-definition-name', lambda s: D(s, 'optimizer').update(name=''),
        f'{DEF}[6].name', 'must not be empty', line='"name": ""'),
    bad('stage-mode-unknown', lambda s: stage(s).update(mode='sequential'),
        'train.stages[0].mode', "must be one of 'interleave', not 'sequential'", line='"mode": "sequential"'),
    # -- groups and names --
    bad('unknown-group', lambda s: D(s, 'train_ds').update(group='dataset'),
        f'{DEF}[0] "train_ds" group', 'unknown group "dataset"', "did you mean 'datasets'", line='"group": "dataset"'),
    bad('duplicate-name', lambda s: insert_after(s, 'my_collator', copy.deepcopy(D(s, 'my_collator'))),
        f'{DEF}[3] "my_collator" name', 'duplicate name "my_collator" in group "collators"',
        '(first defined at initialize.definitions[2])', line='"name": "my_collator"'),
    bad('class-and-factory_fn', lambda s: S(s, 'LeNet5').update(factory_fn='examples.mnist.LeNet5'),
        f'{DEF}[5] "LeNet5" spec', 'needs exactly one of "class" or "factory_fn", not class and factory_fn'),
    bad('neither-class-nor-factory_fn', lambda s: drop(S(s, 'my_collator'), 'class'),
        f'{DEF}[2] "my_collator" spec', 'needs exactly one of "class" or "factory_fn"'),
    # -- references --
    bad('unknown-dataset', lambda s: S(s, 'training_loader').update(dataset='train_dss'),
        f'{DEF}[3] "training_loader" spec.dataset', 'there is no dataset named "train_dss"', "did you mean 'train_ds'",
        line='"dataset": "train_dss"'),
    bad('reference-to-wrong-group', lambda s: S(s, 'training_loader').update(collator='LeNet5'),
        f'{DEF}[3] "training_loader" spec.collator', 'there is no collator named "LeNet5"',
        '"LeNet5" is one of the models'),
    bad('reference-defined-later', lambda s: move(s, 'my_collator', after='test_loader'),
        f'{DEF}[2] "training_loader" spec.collator', '"my_collator" is defined later, at initialize.definitions[4]',
        problems=2),
    bad('optimizer-unknown-model', lambda s: S(s, 'optimizer').update(model='LeNet'),
        f'{DEF}[6] "optimizer" spec.model', 'there is no model named "LeNet"', "did you mean 'LeNet5'"),
    bad('pipeline-unknown-data_loader', lambda s: P(s, 'training_pipeline')['input_injector'][0].update(
        data_loader='train_loader'), f'{TRAINING_PIPELINE}.input_injector[0].data_loader',
        'there is no data loader named "train_loader"', "did you mean 'training_loader'"),
    bad('pipeline-unknown-loss', lambda s: P(s, 'training_pipeline')['losses'][0].update(loss_name='crossentropy'),
        f'{TRAINING_PIPELINE}.losses[0].loss_name', 'there is no loss named "crossentropy"',
        "did you mean 'cross_entropy'"),
    bad('stage-unknown-pipeline', lambda s: stage(s).update(training_pipelines=['training_pipelin']),
        'train.stages[0].training_pipelines[0]', 'there is no pipeline named "training_pipelin"',
        "did you mean 'training_pipeline'"),
    bad('training-pipeline-without-losses', lambda s: drop(P(s, 'training_pipeline'), 'losses'),
        'train.stages[0].training_pipelines[0]', 'pipeline "training_pipeline" has no losses'),
    bad('split-slice-unknown', chain(add_split, lambda s: S(s, 'test_loader').update(dataset='my_split.valid')),
        f'{DEF}[5] "test_loader" spec.dataset', 'split "my_split" has slices my_split.train, my_split.val',
        "did you mean 'val'"),
    bad('split-slice-test-of-two-way-split',
        chain(add_split, lambda s: S(s, 'test_loader').update(dataset='my_split.test')),
        f'{DEF}[5] "test_loader" spec.dataset', '"test" is not one of them'),
    bad('split-unknown', chain(add_split, lambda s: S(s, 'training_loader').update(dataset='my_splt.train')),
        f'{DEF}[4] "training_loader" spec.dataset', 'there is no split named "my_splt"', "did you mean 'my_split'"),
    # -- values --
    bad('split-ratio-sum', lambda s: add_split(s, (0.8, 0.3)),
        f'{DEF}[1] "my_split" spec.ratio', 'the ratios must sum to 1; these sum to 1.1'),
    bad('split-ratio-negative', lambda s: add_split(s, (1.2, -0.2)),
        f'{DEF}[1] "my_split" spec.ratio[1]', 'must be at least 0, not -0.2'),
    bad('split-ratio-four-parts', lambda s: add_split(s, (0.25, 0.25, 0.25, 0.25)),
        f'{DEF}[1] "my_split" spec.ratio', 'has 4 items; at most 3 are allowed'),
    bad('negative-epochs', lambda s: stage(s)['stop_condition']['kwargs'].update(num_epochs=-1),
        'train.stages[0].stop_condition.kwargs.num_epochs', 'positive integer', '-1', line='"num_epochs": -1'),
    bad('fractional-epochs', lambda s: stage(s)['stop_condition']['kwargs'].update(num_epochs=2.5),
        'train.stages[0].stop_condition.kwargs.num_epochs', 'positive integer', '2.5'),
    # -- monitors: names the epoch's row holds (the validation pipelines' display names) --
    bad('early-stopping-monitor-unknown', lambda s: stage(s).update(stop_condition={
        'class': 'torchassistant.stop_conditions.EarlyStopping', 'kwargs': {'monitor': 'val los', 'patience': 2}}),
        'train.stages[0].stop_condition.kwargs.monitor', 'EarlyStopping monitors "val los", which the rows of '
        'this stage do not hold', "did you mean 'val loss'", 'they hold: acc, loss, val acc, val loss',
        line='"monitor": "val los"'),
    bad('early-stopping-monitor-argument', lambda s: stage(s).update(stop_condition={
        'class': 'EarlyStopping', 'args': ['validation loss']}),
        'train.stages[0].stop_condition.args[0]', 'EarlyStopping monitors "validation loss"',
        line='"validation loss"'),
    bad('scheduler-monitor-unknown', lambda s: S(s, 'optimizer').update(lr_scheduler={
        'class': 'ReduceLROnPlateau', 'monitor': 'val accuracy'}),
        f'{DEF}[6] "optimizer" spec.lr_scheduler.monitor', 'optimizer "optimizer" is trained in stage 0, whose '
        'epoch rows have no "val accuracy" to step its scheduler with', "did you mean 'val acc'",
        line='"monitor": "val accuracy"'),
    bad('scheduler-monitor-of-training-only', chain(
        lambda s: stage(s).update(validation_pipelines=['evaluation_pipeline']),
        lambda s: S(s, 'optimizer').update(lr_scheduler={'class': 'ReduceLROnPlateau', 'monitor': 'loss'})),
        f'{DEF}[6] "optimizer" spec.lr_scheduler.monitor', 'no "loss" to step its scheduler with',
        'the rows hold: val acc, val loss'),
    bad('eval_steps-zero', lambda s: stage(s).update(eval_steps=0),
        'train.stages[0].eval_steps', 'a number of batches (integer >= 1) or a fraction in (0, 1], not 0'),
    bad('eval_steps-fraction-above-one', lambda s: stage(s).update(eval_steps=1.5),
        'train.stages[0].eval_steps', 'not 1.5'),
    bad('eval_steps-string', lambda s: stage(s).update(eval_steps='all'),
        'train.stages[0].eval_steps', "not 'all'"),
    # -- classes and functions --
    bad('loss-class-typo', lambda s: S(s, 'cross_entropy').update(**{'class': 'CrossEntropyLos'}),
        f'{DEF}[7] "cross_entropy" spec.class', '"CrossEntropyLos" was not found in torch.nn',
        "did you mean 'CrossEntropyLoss'", line='"class": "CrossEntropyLos"'),
    bad('optimizer-class-typo', lambda s: S(s, 'optimizer').update(**{'class': 'Adamm'}),
        f'{DEF}[6] "optimizer" spec.class', '"Adamm" was not found in torch.optim', "did you mean 'Adam'"),
    bad('model-attribute-missing', lambda s: S(s, 'LeNet5').update(**{'class': 'examples.mnist.LeNet6'}),
        f'{DEF}[5] "LeNet5" spec.class', 'module "examples.mnist" has no attribute "LeNet6"', "did you mean 'LeNet5'"),
    bad('model-module-missing', lambda s: S(s, 'LeNet5').update(**{'class': 'exampels.mnist.LeNet5'}),
        f'{DEF}[5] "LeNet5" spec.class', 'cannot import module "exampels.mnist"', 'no module named "exampels"'),
    bad('model-bare-name', lambda s: S(s, 'LeNet5').update(**{'class': 'LeNet5'}),
        f'{DEF}[5] "LeNet5" spec.class', '"LeNet5" is not a dotted path'),
    bad('module-raises-on-import',
        chain(lambda s: write_text('broken_import.py', 'import torch\n\nraise RuntimeError("broken at import")\n'),
              lambda s: S(s, 'LeNet5').update(**{'class': 'broken_import.Model'})),
        f'{DEF}[5] "LeNet5" spec.class', 'importing module "broken_import" failed: RuntimeError: broken at import',
        'In your code:', 'broken_import.py", line 3'),
    bad('module-with-syntax-error',
        chain(lambda s: write_text('syntax_error.py', 'def model(:\n    pass\n'),
              lambda s: S(s, 'LeNet5').update(**{'class': 'syntax_error.model'})),
        f'{DEF}[5] "LeNet5" spec.class', 'importing module "syntax_error" failed: SyntaxError', 'line 1'),
    bad('module-imports-missing-package',
        chain(lambda s: write_text('needs_package.py', 'import torch\nimport not_installed_package_xyz\n'),
              lambda s: S(s, 'LeNet5').update(**{'class': 'needs_package.Model'})),
        f'{DEF}[5] "LeNet5" spec.class',
        'importing module "needs_package" failed: it imports "not_installed_package_xyz", which is not installed',
        'needs_package.py", line 2'),
    bad('transform-typo', lambda s: S(s, 'cross_entropy').update(transform='examples.mnist.convert_label'),
        f'{DEF}[7] "cross_entropy" spec.transform', 'has no attribute "convert_label"', "did you mean 'convert_labels'"),
    bad('stop_condition-not-callable', lambda s: stage(s)['stop_condition'].update(**{'class': 'math.pi'}),
        'train.stages[0].stop_condition.class', '"math.pi" is a float, not a class or function'),
    bad('stop_condition-short-name-typo', lambda s: stage(s)['stop_condition'].update(**{'class': 'EpochsComplete'}),
        'train.stages[0].stop_condition.class', "did you mean 'EpochsCompleted'"),
    # -- arguments against signatures --
    bad('optimizer-unknown-kwarg', lambda s: S(s, 'optimizer')['kwargs'].update(learning_rate=0.01),
        f'{DEF}[6] "optimizer" spec.kwargs', 'unknown keyword argument "learning_rate"', 'accepted: lr'),
    bad('stop_condition-kwarg-typo', lambda s: rename(stage(s)['stop_condition']['kwargs'], 'num_epochs', 'num_epoch'),
        'train.stages[0].stop_condition.kwargs', 'unknown keyword argument "num_epoch"', "did you mean 'num_epochs'"),
    bad('stop_condition-missing-argument', lambda s: drop(stage(s)['stop_condition'], 'kwargs'),
        'train.stages[0].stop_condition', "missing a required argument: 'num_epochs'"),
    bad('model-takes-no-arguments', lambda s: S(s, 'LeNet5').update(args=[1, 2]),
        f'{DEF}[5] "LeNet5" spec', 'LeNet5', 'too many positional arguments'),
    bad('model-unknown-kwarg-takes-none', lambda s: S(s, 'LeNet5').update(kwargs={'dropout': 0.5}),
        f'{DEF}[5] "LeNet5" spec.kwargs', 'unknown keyword argument "dropout"', 'LeNet5 takes no keyword arguments'),
    bad('data_loader-kwarg-typo', lambda s: rename(S(s, 'training_loader')['kwargs'], 'batch_size', 'batchsize'),
        f'{DEF}[3] "training_loader" spec.kwargs', 'unknown keyword argument "batchsize"', "did you mean 'batch_size'"),
    bad('data_loader-collate_fn-in-kwargs', lambda s: S(s, 'training_loader')['kwargs'].update(collate_fn='x.y'),
        f'{DEF}[3] "training_loader" spec.kwargs.collate_fn', 'the collate_fn is the definition\'s "collator"'),
    # -- variable names flowing from loaders and models to losses and metrics --
    bad('loss-input-nobody-provides', lambda s: S(s, 'cross_entropy').update(inputs=['y_hat', 'labels']),
        f'{TRAINING_PIPELINE}.losses[0].loss_name', 'loss "cross_entropy" reads "labels"',
        'nothing in this pipeline provides it', problems=2),
    bad('metric-input-typo', lambda s: S(s, 'accuracy').update(inputs=['y_hatt', 'input_2']),
        f'{TRAINING_PIPELINE}.metrics[0].metric_name', 'metric "accuracy" reads "y_hatt"', "did you mean 'y_hat'",
        problems=2),
    bad('variable_names-hide-input_2',
        lambda s: P(s, 'training_pipeline')['input_injector'][0].update(variable_names=['input_1', 'label']),
        f'{TRAINING_PIPELINE}.losses[0].loss_name', 'reads "input_2"', 'available: input_1, label, y_hat',
        problems=2),
    bad('model-input-nobody-provides',
        lambda s: P(s, 'training_pipeline')['input_injector'][0].update(variable_names=['image', 'input_2']),
        f'{TRAINING_PIPELINE}.input_injector', 'model "LeNet5" reads "input_1"',
        'nothing in this pipeline provides it'),
    # -- graphs --
    bad('graph-cycle', lambda s: use_graph(s, ('a', 'b'), edges={'a': ['p', 'b'], 'b': ['a']}, node_name='b'),
        f'{DEF}[11] "graph" spec.ingoing_edges', 'the graph has a cycle'),
    bad('graph-unknown-vertex', lambda s: use_graph(s, ('a',), ('images',), edges={'a': ['image']}),
        f'{DEF}[10] "graph" spec.ingoing_edges.a[0]', '"image" is neither a node nor an input port',
        "did you mean 'images'", line='"image"'),
    bad('graph-unknown-edge-target', lambda s: use_graph(s, ('a',), edges={'a': ['p'], 'z': ['p']}),
        f'{DEF}[10] "graph" spec.ingoing_edges.z', '"z" is not one of the graph\'s nodes'),
    bad('graph-unreachable-node', lambda s: use_graph(s, ('a', 'b'), edges={'a': ['p']}, node_name='a'),
        f'{DEF}[11] "graph" spec.nodes[1]', 'node "b" is unreachable'),
    bad('graph-unknown-batch-processor',
        chain(lambda s: use_graph(s, ('a',), edges={'a': ['p'], 'c': ['p']}, node_name='a'),
              lambda s: S(s, 'graph')['nodes'].append('c')),
        f'{DEF}[10] "graph" spec.nodes[1]', 'there is no batch processor named "c"'),
    bad('graph-missing-input_port', lambda s: use_graph(s, ('a',), ('p', 'q')),
        f'{TRAINING_PIPELINE}.input_injector[0]', 'needs "input_port": the graph has several (p, q)', problems=2),
    bad('graph-unknown-input_port',
        chain(lambda s: use_graph(s, ('a',), ('images',)),
              lambda s: P(s, 'training_pipeline')['input_injector'][0].update(input_port='image')),
        f'{TRAINING_PIPELINE}.input_injector[0].input_port', 'the graph has no input port "image"',
        "did you mean 'images'"),
    bad('graph-missing-node_name', lambda s: use_graph(s, ('a', 'b'), edges={'a': ['p'], 'b': ['a']}),
        f'{TRAINING_PIPELINE}.losses[0]', 'needs "node_name": the graph has several nodes (a, b)', problems=4),
    bad('graph-unknown-node_name',
        chain(lambda s: use_graph(s, ('a', 'b'), edges={'a': ['p'], 'b': ['a']}, node_name='b'),
              lambda s: P(s, 'training_pipeline')['losses'][0].update(node_name='bb')),
        f'{TRAINING_PIPELINE}.losses[0].node_name', 'the graph has no node "bb"', "did you mean 'b'"),
    bad('pipeline-unknown-graph',
        chain(use_graph, lambda s: P(s, 'training_pipeline').update(graph='grap')),
        f'{TRAINING_PIPELINE}.graph', 'there is no batch graph named "grap"', "did you mean 'graph'"),
    bad('pipeline-needs-graph',
        lambda s: insert_after(s, 'LeNet5', {'group': 'models', 'name': 'other', 'spec': {'class': 'examples.mnist.LeNet5'}}),
        TRAINING_PIPELINE, 'needs "graph": the spec defines 2 models', problems=2),
    bad('node-optimizer-of-another-model',
        chain(lambda s: insert_after(s, 'LeNet5', {'group': 'models', 'name': 'other',
                                                   'spec': {'class': 'examples.mnist.LeNet5'}}),
              use_graph, lambda s: S(s, 'a')['neural_graph'][0].update(model_name='other')),
        f'{DEF}[10] "a" spec.neural_graph[0].optimizer_name',
        'optimizer "optimizer" optimizes model "LeNet5", not "other"'),
]

BAD_SYNTAX = [
    bad_text('syntax-trailing-comma', lambda t: t.replace('"model": "LeNet5"', '"model": "LeNet5",'),
             'trailing comma before "}"', line='"model": "LeNet5",'),
    bad_text('syntax-trailing-comma-in-list', lambda t: t.replace('"input_2"\n', '"input_2",\n', 1),
             'trailing comma before "]"', line='"input_2",'),
    bad_text('syntax-unclosed-brace', lambda t: t.rstrip()[:-1] + '\n', 'the file ends inside an object (unclosed "{")'),
    bad_text('syntax-missing-comma', lambda t: t.replace('"train": true,', '"train": true'),
             'expected "," or "}" after a value in an object', line='"download": false'),
    bad_text('syntax-empty-file', lambda t: '', 'the file is empty'),
    bad_text('syntax-blank-file', lambda t: '\n\n  \n', 'the file is empty'),
    bad_text('syntax-line-comment', lambda t: t.replace('"session_dir"', '// where to save\n    "session_dir"'),
             'comments are not allowed in JSON', line='// where to save'),
    bad_text('syntax-hash-comment', lambda t: t.replace('"session_dir"', '# where to save\n    "session_dir"'),
             'comments are not allowed in JSON', line='# where to save'),
    bad_text('syntax-single-quotes', lambda t: t.replace('"Adam"', "'Adam'"), 'strings must use double quotes'),
    bad_text('syntax-duplicate-key', lambda t: t.replace('"lr": 0.001', '"lr": 0.001, "lr": 0.01'),
             'duplicate key "lr"'),
    bad_text('syntax-python-literal', lambda t: t.replace('"train": true', '"train": True'), "found 'T'"),
]


def assert_clean(code, expected_code, out, err):
    """Exit code as expected, no traceback anywhere, one error message on stderr."""
    assert code == expected_code, err
    assert TRACEBACK not in out + err
    assert not FRAMEWORK_FRAME.search(out + err)
    assert err.startswith('error: '), err


def problem_entries(err):
    """The '  - ...' entries of a SpecError report, each with its continuation lines."""
    return [entry for entry in err.split('\n  - ')[1:]]


def assert_reports(err, text, source, where, says, line=None):
    """Some problem entry is 'source:LINE:COL where: ...says...'; LINE holds `line` and COL lies in it."""
    head = re.escape(source) + r':(\d+):(\d+)' + (' ' + re.escape(where) if where else '') + ': '
    for entry in problem_entries(err):
        match = re.match(head, entry)
        if match and all(s in entry for s in says):
            number, column = int(match.group(1)), int(match.group(2))
            lines = text.split('\n')
            assert 1 <= number <= len(lines), entry
            assert 1 <= column <= len(lines[number - 1]) + 1, entry
            if line:
                assert line in lines[number - 1], (entry, lines[number - 1])
            return
    raise AssertionError(f'no problem "{where}" saying {says} in:\n{err}')


@pytest.mark.parametrize('case', BAD_TRAINING_SPECS + BAD_SYNTAX)
def test_bad_training_spec(case, workdir, data_root, capsys):
    text = json.dumps(example_spec(data_root), indent=4) + '\n'
    if case.text:
        text = case.text(text)
    else:
        spec = example_spec(data_root)
        case.mutate(spec)
        text = json.dumps(spec, indent=4) + '\n'
    Path(SPEC).write_text(text)
    present = sorted(os.listdir('.'))
    code = cli.init_main([SPEC])
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    assert sorted(os.listdir('.')) == present, 'a failed init must leave no session folder'
    if case.text:
        match = re.search(r'training\.json:(\d+):(\d+): invalid JSON: (.*)\n {6}(.*)\n {6}( *)\^', err)
        assert match, err
        line, column = int(match.group(1)), int(match.group(2))
        assert case.says[0] in match.group(3)
        assert match.group(4) == text.split('\n')[line - 1], 'the message shows the offending line'
        assert len(match.group(5)) == column - 1, 'the caret points at the column'
        if case.line:
            assert case.line in match.group(4)
        return
    assert f'{case.problems} problem{"s" if case.problems != 1 else ""} found' in err, err
    assert_reports(err, text, SPEC, case.where, case.says, case.line)
    for where, says in case.extra:
        assert_reports(err, text, SPEC, where, says)


def test_every_problem_at_once_sorted_by_position(workdir, data_root, capsys):
    """Structural and semantic problems in one report, in the order they appear in the file."""
    spec = example_spec(data_root)
    stage(spec)['eval_steps'] = 0                                        # structure, last in the file
    S(spec, 'cross_entropy')['class'] = 'CrossEntropyLos'                # resolution, middle
    rename(S(spec, 'train_ds'), 'kwargs', 'kwarg')                       # structure, first
    S(spec, 'training_loader')['dataset'] = 'train_dss'                  # reference
    stage(spec)['stop_condition']['kwargs']['num_epochs'] = -3           # value
    Path(SPEC).write_text(json.dumps(spec, indent=4))
    code = cli.init_main([SPEC])
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    assert '5 problems found' in err
    positions = [tuple(map(int, re.match(r'training\.json:(\d+):(\d+)', e).groups())) for e in problem_entries(err)]
    assert len(positions) == 5 and positions == sorted(positions), err
    assert not os.path.exists('session')


def test_init_does_not_touch_an_existing_session(workdir, data_root, session, capsys):
    spec = example_spec(data_root)
    spec['session_dir'] = str(session)
    Path(SPEC).write_text(json.dumps(spec, indent=4))
    before = snapshot(session)
    code = cli.init_main([SPEC])
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    assert re.search(r'training\.json:2:\d+ session_dir: ".*" already exists', err), err
    assert '--force' in err
    assert snapshot(session) == before


# ---- command lines --------------------------------------------------------------------------------

def write_json(name, data):
    return write_text(name, json.dumps(data, indent=4) + '\n')


def write_text(name, text):
    Path(name).write_text(text)
    return name


def write_bytes(name, content):
    Path(name).write_bytes(content)
    return name


def evaluation(session, **changes):
    return write_json('evaluation.json', {'session_dir': str(session),
                                          'validation_pipelines': ['training_pipeline', 'evaluation_pipeline'],
                                          **changes})


def inference(session, **changes):
    return write_json('inference.json', {'session_dir': str(session), 'inference_pipeline': 'evaluation_pipeline',
                                         'inputs_meta': [{'input_converter': {'class': 'examples.mnist.InputConverter'}}],
                                         **changes})


def session_without_checkpoints(session):
    copy_ = Path('copied-session')
    shutil.copytree(session, copy_)
    for item in (copy_ / 'checkpoints').iterdir():
        item.unlink()
    return copy_


DIGIT = str(REPO / 'examples' / 'mnist' / 'digit_7.png')

# id, command, argv(session) run in workdir, expected texts on stderr. Every case exits 2; the shared
# session (and any copy made) must be byte-identical afterwards, and nothing new appear in workdir.
BAD_COMMAND_LINES = [
    ('init-spec-missing', 'init', lambda s: ['missing.json'], ['training spec "missing.json" does not exist']),
    ('init-given-session-folder', 'init', lambda s: [str(s)],
     ['is a folder; expected the training spec file (.json)', 'is what "python train.py" takes']),
    ('init-given-plain-folder', 'init', lambda s: ['.'], ['"." is a folder']),
    ('init-unknown-flag', 'init', lambda s: ['--fast', write_json(SPEC, {})],
     ['init.py: unrecognized arguments: --fast', 'usage: init.py']),
    ('init-no-arguments', 'init', lambda s: [], ['the following arguments are required: spec']),
    ('init-not-utf8', 'init', lambda s: [write_bytes(SPEC, b'{"a": "\xff"}')],
     ['training.json: not a UTF-8 text file']),
    ('init-top-level-list', 'init', lambda s: [write_json(SPEC, [EXAMPLE])],
     ['training.json:1:1: a spec must be a JSON object']),
    ('train-given-spec-file', 'train', lambda s: [write_json(SPEC, EXAMPLE)],
     ['"training.json" is a file, not a session folder']),
    ('train-session-missing', 'train', lambda s: ['no-such-session'], ['session folder "no-such-session" does not exist']),
    ('train-not-a-session', 'train', lambda s: [os.makedirs('empty') or 'empty'],
     ['"empty" is not a TorchAssistant session (it has no session.json)']),
    ('train-session-without-checkpoints', 'train', lambda s: [str(session_without_checkpoints(s))],
     ['session "copied-session" has no intact checkpoint', 'python init.py --force']),
    ('train-unknown-flag', 'train', lambda s: [str(s), '--epochs', '3'], ['unrecognized arguments: --epochs 3']),
    ('evaluate-given-session-folder', 'evaluate', lambda s: [str(s)],
     ['is a folder; expected the evaluation spec file', 'evaluation spec file (.json)', 'is what "python train.py" takes']),
    ('evaluate-spec-missing', 'evaluate', lambda s: ['evaluation.json'], ['"evaluation.json" does not exist']),
    ('evaluate-unknown-pipeline', 'evaluate',
     lambda s: [evaluation(s, validation_pipelines=['training_pipeline', 'evaluation_pipelin'])],
     ['evaluation.json:5:9 validation_pipelines[1]: session', 'has no pipeline "evaluation_pipelin"',
      "did you mean 'evaluation_pipeline'"]),
    ('evaluate-field-typo', 'evaluate',
     lambda s: [write_json('evaluation.json', {'session_dir': str(s), 'validation_pipeline': ['training_pipeline']})],
     ['2 problems found', 'evaluation.json:3:28 validation_pipeline: unknown field "validation_pipeline"',
      "did you mean 'validation_pipelines'", 'evaluation.json:1:1: missing required field "validation_pipelines"']),
    ('evaluate-eval_steps-zero', 'evaluate', lambda s: [evaluation(s, eval_steps=0)],
     ['evaluation.json:7:19 eval_steps: must be a number of batches']),
    ('evaluate-session-missing', 'evaluate', lambda s: [evaluation('no-such-session')],
     ['evaluation.json:2:20 session_dir: session folder "no-such-session" does not exist']),
    ('evaluate-session-is-a-file', 'evaluate', lambda s: [evaluation(str(s / 'spec.json'))],
     ['spec.json" is a file, not a session folder']),
    ('evaluate-session-without-checkpoints', 'evaluate', lambda s: [evaluation(session_without_checkpoints(s))],
     ['session "copied-session" has no intact checkpoint']),
    ('evaluate-bad-replace_strategy', 'evaluate',
     lambda s: [evaluation(s, initialize={'definitions': {'options': [], 'replace_strategy': 'merge'}})],
     ['evaluation.json:10:33 initialize.definitions.replace_strategy: unknown replace_strategy "merge"']),
    ('evaluate-override-bad-class', 'evaluate',
     lambda s: [evaluation(s, initialize={'definitions': {'replace_strategy': 'override', 'options': [
         {'name': 'cross_entropy', 'spec': {'class': 'CrossEntropyLos'}}]}})],
     ['\n  - evaluation.json:', 'initialize.definitions',
      '"cross_entropy" spec.class: "CrossEntropyLos" was not found in torch.nn',
      "did you mean 'CrossEntropyLoss'"]),
    ('infer-input-missing', 'infer', lambda s: [inference(s), 'no-such-digit.png'],
     ["input 'no-such-digit.png' does not exist", 'inference.json:6:32 inputs_meta[0].input_converter']),
    ('infer-no-inputs', 'infer', lambda s: [inference(s)], ['infer.py needs at least one input after the spec']),
    ('infer-unknown-pipeline', 'infer', lambda s: [inference(s, inference_pipeline='evaluation'), DIGIT],
     ['inference.json:3:27 inference_pipeline: session', 'has no pipeline "evaluation"',
      "did you mean 'evaluation_pipeline'"]),
    ('infer-missing-inputs_meta', 'infer',
     lambda s: [write_json('inference.json', {'session_dir': str(s), 'inference_pipeline': 'evaluation_pipeline'}),
                DIGIT], ['inference.json:1:1: missing required field "inputs_meta"']),
    ('infer-session-without-checkpoints', 'infer', lambda s: [inference(session_without_checkpoints(s)), DIGIT],
     ['has no intact checkpoint']),
    ('infer-input-is-a-folder', 'infer', lambda s: [inference(s), os.makedirs('digits') or 'digits'],
     ["input 'digits' is a folder", 'inference.json:6:32 inputs_meta[0].input_converter']),
    ('infer-converter-class-typo', 'infer',
     lambda s: [inference(s, inputs_meta=[{'input_converter': {'class': 'examples.mnist.InputConvertor'}}]), DIGIT],
     ['inference.json:7:26 inputs_meta[0].input_converter.class: module "examples.mnist" has no attribute '
      '"InputConvertor"', "did you mean 'InputConverter'"]),
    ('infer-unknown-input_port', 'infer',
     lambda s: [inference(s, inputs_meta=[{'input_converter': {'class': 'examples.mnist.InputConverter'},
                                           'input_port': 'images'}]), DIGIT],
     ['inference.json:9:27 inputs_meta[0].input_port', 'no input port "images"']),
    ('infer-unknown-result', 'infer', lambda s: [inference(s, results=['y_hatt']), DIGIT],
     ['inference.json:11:16 results', 'produces no y_hatt', 'it produces: input_1, input_2, y_hat']),
]

KNOWN_GAPS = {}   # cases that fail for a known reason, each with that reason (none now)


def gap(case_id, *values):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[case_id])] if case_id in KNOWN_GAPS else []
    return pytest.param(*values, id=case_id, marks=marks)


MAINS = {'init': cli.init_main, 'train': cli.train_main, 'evaluate': cli.evaluate_main, 'infer': cli.infer_main}


@pytest.mark.parametrize('command, argv, says', [gap(c[0], *c[1:]) for c in BAD_COMMAND_LINES])
def test_bad_command_line(command, argv, says, workdir, session, capsys):
    before = snapshot(session)
    args = argv(session)
    present = set(os.listdir('.'))
    copies = {p: snapshot(p) for p in present if os.path.isdir(p)}
    code = MAINS[command](args)
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    for text in says:
        assert text in err, err
    assert snapshot(session) == before, 'a failed command must not change the session'
    assert set(os.listdir('.')) == present, 'a failed command must write nothing'
    assert {p: snapshot(p) for p in copies} == copies


BAD_INFERENCE_SPECS = [
    pytest.param({'inputs_meta': [{'input_converter': {'class': 'examples.mnist.InputConvertor'}}]},
                 'inputs_meta[0].input_converter.class', ["did you mean 'InputConverter'"], id='converter-class-typo'),
    pytest.param({'inputs_meta': [{'input_converter': {'class': 'examples.mnist.InputConverter', 'args': ['x']}}]},
                 'inputs_meta[0].input_converter', ['too many positional arguments'], id='converter-arguments'),
    pytest.param({'post_processor': {'class': 'PostProcessor'}}, 'post_processor.class', ['is not a dotted path'],
                 id='post_processor-bare-name'),
    pytest.param({'output_device': {'class': 'examples.mnist.InputConverter', 'kwargs': {'file': 'x'}}},
                 'output_device.kwargs', ['unknown keyword argument "file"', 'takes no keyword arguments'],
                 id='output_device-kwargs'),
]


@pytest.mark.parametrize('changes, where, says', BAD_INFERENCE_SPECS)
def test_inference_spec_validation(changes, where, says, workdir):
    """validate.check finds what is wrong in an inference spec before a session is opened."""
    from torchassistant.spec import loader, validate
    text = Path(inference('session', **changes)).read_text()
    problems = validate.check(loader.load_file('inference.json'), 'inference')
    assert len(problems) == 1
    entry = '\n  - ' + str(problems[0])
    assert_reports(entry, text, 'inference.json', where, says)


def test_override_problems_point_into_the_override_file(workdir, session):
    """A problem inside an overridden value is located in the evaluation spec that holds it; one in
    the session's own spec stays located there."""
    from torchassistant.spec import loader, merge, validate
    text = Path(evaluation(session, initialize={
        'definitions': {'replace_strategy': 'override', 'options': [
            {'name': 'cross_entropy', 'spec': {'class': 'CrossEntropyLos'}},
            {'group': 'models', 'name': 'extra', 'spec': {'class': 'examples.mnist.LeNet5'}}]},
        'pipelines': {'evaluation_pipeline': {'metrics': [{'metric_name': 'acc'}]}}})).read_text()
    base = loader.load_file(str(session / 'spec.json'))
    document = merge.merged_document(base, loader.load_file('evaluation.json'))
    problems = sorted(validate.check_training(document), key=lambda p: p.sort_key())
    report = ''.join('\n  - ' + str(p) for p in problems)
    assert_reports(report, text, 'evaluation.json', 'initialize.definitions[7] "cross_entropy" spec.class',
                   ['"CrossEntropyLos" was not found'], line='"class": "CrossEntropyLos"')
    assert_reports(report, text, 'evaluation.json', 'initialize.pipelines.evaluation_pipeline.metrics[0].metric_name',
                   ['there is no metric named "acc"'], line='"metric_name": "acc"')
    assert_reports(report, base.text, str(session / 'spec.json'), 'initialize.pipelines.training_pipeline',
                   ['needs "graph": the spec defines 2 models'], line='"training_pipeline": {')
    with pytest.raises(merge.MergeError) as caught:
        merge.merged_document(base, loader.parse('{"initialize": {"definitions": {"replace_strategy": "merge", '
                                                 '"options": []}}}', 'evaluation.json'))
    assert caught.value.path == ('initialize', 'definitions', 'replace_strategy')


# ---- errors in the user's own code ----------------------------------------------------------------

def write_user_code():
    Path('user_code.py').write_text(USER_CODE)


def assert_user_error(err, marker):
    """The user's own file and line are shown, no framework frame, no traceback."""
    assert TRACEBACK not in err
    assert not FRAMEWORK_FRAME.search(err), err
    assert re.search(r'In your code:\n\s+File "[^"]*user_code\.py", line %d' % user_line(marker), err), err


@pytest.mark.parametrize('debug', [False, True], ids=['plain', 'debug'])
def test_model_that_raises_while_built(debug, workdir, data_root, capsys):
    write_user_code()
    spec = example_spec(data_root)
    S(spec, 'LeNet5')['class'] = 'user_code.ExplodingModel'
    write_json(SPEC, spec)
    code = cli.init_main([SPEC] + (['--debug'] if debug else []))
    out, err = capsys.readouterr()
    assert code == 1, err
    assert re.search(r'error: training\.json:\d+:\d+ initialize\.definitions\[5\] "LeNet5": building it failed: '
                     r'ValueError: the model cannot be built: boom', err), err
    assert sorted(os.listdir('.')) == [SPEC, 'user_code.py'], 'no session folder, no half-written staging folder'
    if debug:
        assert TRACEBACK in err, '--debug shows the full traceback'
    else:
        assert_user_error(err, 'MODEL RAISES')


def test_interrupt_while_building(workdir, data_root, capsys):
    write_user_code()
    spec = example_spec(data_root)
    S(spec, 'LeNet5')['class'] = 'user_code.InterruptedModel'
    write_json(SPEC, spec)
    code = cli.init_main([SPEC])
    out, err = capsys.readouterr()
    assert code == 130
    assert 'interrupted' in err and TRACEBACK not in err
    assert sorted(os.listdir('.')) == [SPEC, 'user_code.py']


def test_transform_that_raises_during_evaluation(workdir, session, capsys):
    write_user_code()
    before = snapshot(session)
    evaluation(session, eval_steps=1, initialize={'definitions': {'replace_strategy': 'override', 'options': [
        {'name': 'cross_entropy', 'spec': {'transform': 'user_code.exploding_transform'}}]}})
    code = cli.evaluate_main(['evaluation.json'])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert re.search(r'error: pipeline "training_pipeline" \(.*\) failed in evaluation', err), err
    assert 'loss "cross_entropy"' in err and 'initialize.definitions[7]' in err
    assert 'RuntimeError: transform exploded on purpose' in err
    assert_user_error(err, 'TRANSFORM RAISES')
    assert snapshot(session) == before


def test_input_converter_that_raises(workdir, session, capsys):
    write_user_code()
    before = snapshot(session)
    inference(session, inputs_meta=[{'input_converter': {'class': 'user_code.ExplodingConverter'}}])
    code = cli.infer_main(['inference.json', DIGIT])
    out, err = capsys.readouterr()
    assert code == 1, err
    assert re.search(r'inference\.json:\d+:\d+ inputs_meta\[0\]\.input_converter', err), err
    assert 'ValueError: cannot read ' in err
    assert_user_error(err, 'CONVERTER RAISES')
    assert snapshot(session) == before


# ---- the real scripts behave as the in-process calls ----------------------------------------------

def run_script(script, args):
    result = forked.run([sys.executable, str(REPO / script)] + args, capture_output=True, text=True,
                            timeout=120, env={**os.environ, 'PYTHONDONTWRITEBYTECODE': '1'})
    return result.returncode, result.stdout, result.stderr


SCRIPT_CASES = [
    pytest.param('init.py', 'init', lambda s, d: [write_json(SPEC, d)],
                 lambda spec: S(spec, 'cross_entropy').update(**{'class': 'CrossEntropyLos'}), 2, id='script-init-class-typo'),
    pytest.param('init.py', 'init', lambda s, d: [write_text(SPEC, json.dumps(d, indent=4)[:-2])],
                 None, 2, id='script-init-unclosed-brace'),
    pytest.param('init.py', 'init', lambda s, d: ['--nope', write_json(SPEC, d)], None, 2, id='script-init-unknown-flag'),
    pytest.param('evaluate.py', 'evaluate', lambda s, d: [evaluation(s, validation_pipelines=['validation'])],
                 None, 2, id='script-evaluate-unknown-pipeline'),
    pytest.param('infer.py', 'infer', lambda s, d: [inference(s), 'no-such-digit.png'], None, 2,
                 id='script-infer-input-missing'),
    pytest.param('init.py', 'init', lambda s, d: [write_user_code() or write_json(SPEC, d)],
                 lambda spec: S(spec, 'LeNet5').update(**{'class': 'user_code.ExplodingModel'}), 1,
                 id='script-init-model-raises'),
]


@pytest.mark.parametrize('script, command, argv, mutate, expected', SCRIPT_CASES)
def test_script_matches_in_process(script, command, argv, mutate, expected, workdir, data_root, session, capsys):
    spec = example_spec(data_root)
    if mutate:
        mutate(spec)
    args = argv(session, spec)
    before = snapshot(session)
    present = set(os.listdir('.'))
    code, out, err = run_script(script, args)
    assert code == expected, err
    assert TRACEBACK not in out + err and err.startswith('error: ')
    assert set(os.listdir('.')) == present and snapshot(session) == before
    sys.modules.pop('user_code', None)
    in_process = MAINS[command](args)
    _, in_process_err = capsys.readouterr()
    assert (in_process, in_process_err) == (code, err), 'the script and the in-process call report the same'


def test_script_debug_shows_traceback(workdir, data_root):
    write_user_code()
    spec = example_spec(data_root)
    S(spec, 'LeNet5')['class'] = 'user_code.ExplodingModel'
    code, out, err = run_script('init.py', ['--debug', write_json(SPEC, spec)])
    assert code == 1
    assert TRACEBACK in err and 'ValueError: the model cannot be built: boom' in err
    assert not os.path.exists('session')


@pytest.mark.parametrize('mutate, name, says', [
    (lambda s: S(s, 'optimizer')['kwargs'].update(lr='fast'), 'optimizer', "'<=' not supported"),
    (lambda s: S(s, 'training_loader')['kwargs'].update(num_workers=-1), 'training_loader',
     'num_workers option should be non-negative'),
    (lambda s: S(s, 'training_loader')['kwargs'].update(batch_size=0), 'training_loader',
     'batch_size should be a positive integer'),
], ids=['optimizer-lr-not-a-number', 'data_loader-negative-workers', 'data_loader-zero-batch-size'])
def test_value_a_library_rejects_is_a_spec_error(mutate, name, says, workdir, data_root, capsys):
    """A constructor of torch rejects a value the spec passes, with no user code involved: exit 2."""
    spec = example_spec(data_root)
    mutate(spec)
    write_json(SPEC, spec)
    code = cli.init_main([SPEC])
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    assert re.search(rf'error: training\.json:\d+:\d+ initialize\.definitions\[\d\] "{name}": building it failed', err)
    assert says in err and 'No code of yours ran: check the values' in err
    assert sorted(os.listdir('.')) == [SPEC]


def test_session_folder_that_cannot_be_created(workdir, data_root, capsys):
    spec = example_spec(data_root)
    spec['session_dir'] = '/proc/no-such-folder/session'
    write_json(SPEC, spec)
    code = cli.init_main([SPEC])
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    assert 'cannot create the session folder "/proc/no-such-folder/session"' in err


@pytest.mark.parametrize('folder', ['.', 'my_project'])
def test_force_never_replaces_a_folder_that_is_not_a_session(folder, workdir, data_root, capsys):
    os.makedirs('my_project', exist_ok=True)
    Path('my_project', 'notes.txt').write_text('mine')
    spec = example_spec(data_root)
    spec['session_dir'] = folder
    write_json(SPEC, spec)
    before = snapshot('.')
    code = cli.init_main(['--force', SPEC])
    out, err = capsys.readouterr()
    assert_clean(code, 2, out, err)
    assert 'is not a TorchAssistant session' in err and 'nothing was changed' in err
    assert snapshot('.') == before
