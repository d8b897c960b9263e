"""Build the objects a validated training spec describes.

Definitions are built in the order they are written; each sees the ones before it through
`Entities`, which is also the `session` argument of factory functions. Inference builds only its
pipeline and what that reaches: a definition is then built the first time something asks for it.
Learned state (split indices, fitted preprocessors) is drawn once, at init, into `LearnedState`;
later builds restore it.
"""
import inspect
import random
import weakref
import zlib
from dataclasses import dataclass
from typing import Optional

import torch

from torchassistant.core import errors, resolve
from torchassistant.run import distributed, graph, step
from torchassistant.run.data import PreprocessedDataset, ResumableLoader, Split, draw_split
from torchassistant.run.pipeline import Criterion, Feed, Pipeline, Use
from torchassistant.spec import rules
from torchassistant.spec.rules import slice_reference
from torchassistant.spec.schema import GROUPS


@dataclass
class Optimizer:
    """An optimizers definition as built: the torch optimizer, the model it optimizes and its LR
    scheduler (stepped once per epoch), or None."""
    name: str
    model_name: str
    optimizer: torch.optim.Optimizer
    scheduler: object = None
    monitor: Optional[str] = None          # the displayed metric a scheduler like ReduceLROnPlateau steps with


@dataclass
class Stage:
    """A training stage as built: pipelines by role, eval_steps and its stop condition."""
    index: int
    training: list
    validation: list
    debug: list
    eval_steps: object
    stop_condition: object
    where: str = ''           # spec location of the stop condition, for messages


class Entities:
    """Everything built so far, by group: `session.datasets["train_ds"]`, `session.models[...]`.
    `optimizers` holds `Optimizer` records (`.optimizer` is the torch optimizer). A definition of the
    spec not built yet is built when it is first asked for (see `build(..., only=...)`)."""

    def __init__(self):
        for group in GROUPS:
            setattr(self, group, _Group(self, group))
        self.where = {}          # (group, name) -> spec location, for messages
        self.pipelines = {}
        self.defined = {group: [] for group in GROUPS}     # names in the order written
        self._unbuilt = {}       # (group, name) -> (spec, learned state, device) to build it with
        self._building = set()

    def dataset(self, reference):
        """A dataset by name, or a split slice such as "my_split.train" or "my_split[0]"."""
        split_slice = slice_reference(reference)
        if split_slice is None or reference in self.defined['datasets']:
            return self.datasets[reference]
        split, part = split_slice
        return self.splits[split].slices[part]

    def add(self, group, name, built):
        """Put an object built elsewhere in as the definition `name` of `group` (tests, tools)."""
        self.defined[group].append(name)
        dict.__setitem__(getattr(self, group), name, built)

    def every(self, group):
        """All definitions of `group` in the order written, built."""
        return [getattr(self, group)[name] for name in self.defined[group]]

    def _build(self, group, name):
        key = (group, name)
        if key not in self._unbuilt:
            raise KeyError(name)
        if key in self._building:
            raise errors.TorchAssistantError(f'{self.where[key]}: building it needs itself (through the '
                                             f'definitions its factory asks for)')
        self._building.add(key)
        spec, learned, device = self._unbuilt[key]
        try:
            built = errors.call_user_code(f'{self.where[key]}: building it failed', _BUILDERS[group], spec, name,
                                          self, learned, device, spec_arguments=True)
        finally:
            self._building.discard(key)
        del self._unbuilt[key]
        dict.__setitem__(getattr(self, group), name, built)
        return built


class _Group(dict):
    """One group's built definitions; asking for one not built yet builds it. It refers to its
    Entities weakly: a reference cycle would keep every model and dataset alive until a garbage
    collection (in `train.py`, until the interpreter exits, whose teardown then peaked 50 MiB higher).
    For the same reason `Entities._unbuilt` holds specs, not builders bound to the Entities."""

    def __init__(self, entities, group):
        super().__init__()
        self.entities, self.group = weakref.ref(entities), group

    def __missing__(self, name):
        return self.entities()._build(self.group, name)


class LearnedState:
    """State drawn or fitted once at init and stored in the session."""

    def __init__(self, seed=None, splits=None, preprocessors=None):
        self.seed = random.SystemRandom().randrange(2 ** 62) if seed is None else seed
        self.splits = dict(splits or {})
        self.preprocessors = dict(preprocessors or {})

    def state_dict(self):
        """The state as plain data (what session files hold); a preprocessor whose fitted state is not
        plain data is an error naming it, at init, rather than a file that cannot be loaded later."""
        from torchassistant.session.checkpoint import plain_data_problem
        for name, state in self.preprocessors.items():
            problem = plain_data_problem(state)
            if problem:
                raise errors.TorchAssistantError(
                    f'preprocessor "{name}": its fitted state (what its state_dict() returns) holds {problem}. '
                    f'The session stores fitted state as plain data (tensors, numbers, strings, lists, tuples, '
                    f'dicts), loaded without running code: make state_dict() return such data (e.g. '
                    f'torch.from_numpy(array), array.tolist(), float(x)) and load_state_dict() accept it')
        return {'seed': self.seed, 'splits': self.splits, 'preprocessors': self.preprocessors}

    @classmethod
    def from_state_dict(cls, state):
        return cls(state['seed'], state['splits'], state['preprocessors'])

    def generator(self, salt):
        """A torch.Generator seeded from the session seed and a name, the same on every run."""
        return torch.Generator().manual_seed((self.seed + _stable_hash(salt)) % 2 ** 63)


def _stable_hash(text):
    return zlib.crc32(text.encode())


def build(document, learned, device, only=None):
    """Entities (definitions and pipelines) of a validated training spec `document`: all of them in
    the order written, or with `only` (pipeline names) those pipelines and what they reach."""
    entities = Entities()
    data = document.data['initialize']
    for index, definition in enumerate(data['definitions']):
        group, name, spec = definition['group'], definition['name'], definition['spec']
        entities.where[group, name] = document.describe(('initialize', 'definitions', index))
        entities.defined[group].append(name)
        entities._unbuilt[group, name] = (spec, learned, device)
    if only is None:
        for group, name in list(entities._unbuilt):
            getattr(entities, group)[name]
    for name, spec in data['pipelines'].items():
        if only is not None and name not in only:
            continue
        where = entities.where['pipelines', name] = document.describe(('initialize', 'pipelines', name))
        entities.pipelines[name] = errors.call_user_code(f'{where}: building it failed', _build_pipeline,
                                                         name, spec, entities, device)
    return entities


def instantiate(spec, entities, home=None, leading=()):
    """cls(*leading, *args, **kwargs) or factory_fn(session, *leading, *args, **kwargs)."""
    args, kwargs = spec.get('args', []), spec.get('kwargs', {})
    if 'factory_fn' in spec:
        return resolve.resolve(spec['factory_fn'])(entities, *leading, *args, **kwargs)
    return resolve.resolve(spec['class'], home)(*leading, *args, **kwargs)


def _dataset(spec, name, entities, learned, device):
    if 'link' in spec or 'merge' in spec:
        dataset = entities.dataset(spec['link']) if 'link' in spec else \
            torch.utils.data.ConcatDataset([entities.dataset(part) for part in spec['merge']])
        preprocessors = [entities.preprocessors[p] for p in spec.get('preprocessors', [])]
        return PreprocessedDataset(dataset, preprocessors) if preprocessors else dataset
    return instantiate(spec, entities)


def _split(spec, name, entities, learned, device):
    dataset = entities.dataset(spec['dataset_name'])
    if name not in learned.splits:
        learned.splits[name] = draw_split(len(dataset), spec['ratio'], learned.generator('split:' + name))
    stored = sum(len(indices) for indices in learned.splits[name].values())
    if stored != len(dataset):
        raise errors.UsageError(f'{entities.where["splits", name]}: split "{name}" was drawn at init over '
                                f'{stored:,} examples of {spec["dataset_name"]}, which now has {len(dataset):,}: the '
                                f'data changed since init, so the session\'s splits and fitted preprocessors no longer '
                                f'fit it. Restore the data, or start a new session with init.py --force')
    return Split(dataset, learned.splits[name])


def _preprocessor(spec, name, entities, learned, device):
    preprocessor = instantiate(spec, entities, 'preprocessors')
    if 'fit' in spec:
        if name in learned.preprocessors:
            preprocessor.load_state_dict(learned.preprocessors[name])
        else:
            preprocessor.fit(entities.dataset(spec['fit']))
            learned.preprocessors[name] = preprocessor.state_dict()
    return preprocessor


def _collator(spec, name, entities, learned, device):
    return instantiate(spec, entities, 'collators')


def _data_loader(spec, name, entities, learned, device):
    kwargs = dict(spec.get('kwargs', {}))
    # Each loader draws its order from its own generator, whose state goes into checkpoints: a
    # resumed run sees the same batches as an uninterrupted one.
    kwargs.setdefault('generator', learned.generator('loader:' + name))
    kwargs.setdefault('pin_memory', torch.device(device).type == 'cuda')    # then copies overlap compute
    dataset = entities.dataset(spec['dataset'])
    kwargs = distributed.shard_loader_arguments(dataset, kwargs)     # several processes: each its share
    return ResumableLoader(dataset, *spec.get('args', []), collate_fn=entities.collators[spec['collator']], **kwargs)


def _model(spec, name, entities, learned, device):
    model = instantiate(spec, entities)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f'a model must be a torch.nn.Module, got {type(model).__name__}')
    return model.to(device)


def _optimizer(spec, name, entities, learned, device):
    optimizer = instantiate(spec, entities, 'optimizers', (entities.models[spec['model']].parameters(),))
    scheduler = instantiate(spec['lr_scheduler'], entities, 'lr_scheduler', (optimizer,)) \
        if 'lr_scheduler' in spec else None
    return Optimizer(name, spec['model'], optimizer, scheduler, spec.get('lr_scheduler', {}).get('monitor'))


def _criterion(kind, group):
    def build_criterion(spec, name, entities, learned, device):
        function = instantiate(spec, entities, group)
        if isinstance(function, torch.nn.Module):
            function = function.to(device)
        transform = None
        if 'transform' in spec:
            transform = resolve.resolve(spec['transform'])
            if inspect.isclass(transform):
                transform = transform(entities)
        return Criterion(kind, name, function, list(spec['inputs']), transform, entities.where[group, name])
    return build_criterion


def _batch_processor(spec, name, entities, learned, device):
    optimizers = entities.optimizers
    nodes = [graph.Node(n['model_name'], entities.models[n['model_name']], list(n['inputs']),
                        list(n['outputs']), n.get('optimizer_name'),
                        optimizers[n['optimizer_name']].optimizer if 'optimizer_name' in n else None,
                        entities.where['models', n['model_name']])
             for n in spec['neural_graph']]
    adapters = {key: instantiate(spec[key], entities, key) for key in ('input_adapter', 'output_adapter')
                if key in spec}
    if spec.get('device'):
        for node in nodes:
            node.model.to(spec['device'])
    return graph.BatchProcessor(name, nodes, adapters.get('input_adapter'), adapters.get('output_adapter'),
                                spec.get('device'), device)


def _gradient_clipper(spec, name, entities, learned, device):
    return step.GradientClipper(name, entities.models[spec['model']], spec.get('clip_value'), spec.get('clip_norm'))


def _backward_hooks(spec, name, entities, learned, device):
    """Installed now, at every build (init, and every command that restores the session)."""
    return step.BackwardHooks(entities.models[spec['model']], resolve.resolve(spec['factory_fn']),
                              entities.where['backward_hooks', name])


def _batch_graph(spec, name, entities, learned, device):
    processors = {node: entities.batch_processors[node] for node in spec['nodes']}
    return graph.BatchGraph(name, processors, spec['input_ports'], spec['ingoing_edges'])


_BUILDERS = {
    'datasets': _dataset, 'splits': _split, 'preprocessors': _preprocessor, 'collators': _collator,
    'data_loaders': _data_loader, 'models': _model, 'optimizers': _optimizer,
    'losses': _criterion('loss', 'losses'), 'metrics': _criterion('metric', 'metrics'),
    'batch_processors': _batch_processor, 'batch_graphs': _batch_graph,
    'gradient_clippers': _gradient_clipper, 'backward_hooks': _backward_hooks,
}


def default_graph(entities):
    """The graph a pipeline without "graph" gets (rules.default_graph decides), or None."""
    defined = entities.defined
    choice = rules.default_graph(defined['batch_graphs'], defined['batch_processors'], defined['models'])
    if choice.kind == 'graph':
        return entities.batch_graphs[choice.name]
    if choice.kind == 'processor':
        return graph.single_processor_graph(choice.name, entities.batch_processors[choice.name])
    if choice.kind == 'model':
        optimizer_name = rules.lone_model_optimizer(
            {n: o.model_name for n, o in zip(defined['optimizers'], entities.every('optimizers'))}, choice.name)
        optimizer = entities.optimizers[optimizer_name].optimizer if optimizer_name else None
        return graph.single_model_graph(choice.name, entities.models[choice.name], optimizer_name, optimizer,
                                        entities.where['models', choice.name])
    return None


def _build_pipeline(name, spec, entities, device):
    batch_graph = entities.batch_graphs[spec['graph']] if 'graph' in spec else default_graph(entities)
    default_port = rules.default_port(batch_graph.input_ports)       # validation: given where this is None
    feeds = [Feed(entry['data_loader'], entities.data_loaders[entry['data_loader']],
                  entry.get('variable_names'), entry.get('input_port', default_port))
             for entry in spec['input_injector']]
    default_node = rules.default_node(batch_graph.node_names())
    losses = [Use(rules.display_name(entry), entities.losses[entry['loss_name']],
                  entry.get('node_name', default_node)) for entry in spec.get('losses', [])]
    metrics = [Use(rules.display_name(entry), entities.metrics[entry['metric_name']],
                   entry.get('node_name', default_node)) for entry in spec.get('metrics', [])]
    pipeline = Pipeline(name, batch_graph, feeds, losses, metrics, device, entities.where['pipelines', name])
    pipeline.clippers = step.clippers_of(entities.every('gradient_clippers'), pipeline.optimizers)  # needs its optimizers
    return pipeline


def build_stages(document, entities):
    """The training stages of a validated spec, each with its stop condition built."""
    stages = []
    for index, spec in enumerate(document.data['train']['stages']):
        where = document.describe(('train', 'stages', index, 'stop_condition'))
        condition_spec = spec['stop_condition']
        condition = errors.call_user_code(f'{where}: building the stop condition failed', instantiate,
                                          condition_spec, entities, 'stop_condition', spec_arguments=True)
        def pick(key, spec=spec):
            return [entities.pipelines[name] for name in spec.get(key, [])]
        stages.append(Stage(index, pick('training_pipelines'), pick('validation_pipelines'),
                            pick('debug_pipelines'), spec.get('eval_steps', 1.0), condition, where))
    return stages
