"""Build the objects a validated training spec describes.

Definitions are built in the order they are written; each sees the ones before it through
`Entities`, which is also the `session` argument of factory functions. Learned state (split indices,
fitted preprocessors) is drawn once, at init, into `LearnedState`; later builds restore it.
"""
import inspect
import random
import zlib

import torch
from torch.utils.data import DataLoader

from torchassistant import errors, graph, resolve
from torchassistant.data import PreprocessedDataset, Split, draw_split
from torchassistant.pipeline import Criterion, Feed, Pipeline, Use
from torchassistant.schema import GROUPS


class Entities:
    """Everything built so far, by group: `session.datasets["train_ds"]`, `session.models[...]`."""

    def __init__(self):
        for group in GROUPS:
            setattr(self, group, {})
        self.where = {}          # (group, name) -> spec location, for messages
        self.pipelines = {}

    def dataset(self, reference):
        """A dataset by name, or a split slice such as "my_split.train"."""
        if reference in self.datasets:
            return self.datasets[reference]
        split, _, part = reference.rpartition('.')
        return self.splits[split].slices[part]


class LearnedState:
    """State drawn or fitted once at init and stored in the session."""

    def __init__(self, seed=None, splits=None, preprocessors=None):
        self.seed = random.SystemRandom().randrange(2 ** 62) if seed is None else seed
        self.splits = dict(splits or {})
        self.preprocessors = dict(preprocessors or {})

    def state_dict(self):
        return {'seed': self.seed, 'splits': self.splits, 'preprocessors': self.preprocessors}

    @classmethod
    def from_state_dict(cls, state):
        return cls(state['seed'], state['splits'], state['preprocessors'])

    def generator(self, salt):
        """A torch.Generator seeded from the session seed and a name, the same on every run."""
        return torch.Generator().manual_seed((self.seed + _stable_hash(salt)) % 2 ** 63)


def _stable_hash(text):
    return zlib.crc32(text.encode())


def build(document, learned, device):
    """Entities (definitions and pipelines) of a validated training spec `document`."""
    entities = Entities()
    data = document.data['initialize']
    for index, definition in enumerate(data['definitions']):
        path = ('initialize', 'definitions', index)
        group, name, spec = definition['group'], definition['name'], definition['spec']
        where = document.describe(path)
        entities.where[group, name] = where
        builder = _BUILDERS[group]
        getattr(entities, group)[name] = errors.call_user_code(f'{where}: building it failed', builder,
                                                               spec, name, entities, learned, device,
                                                               spec_arguments=True)
    for name, spec in data['pipelines'].items():
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
    if 'link' in spec:
        dataset = entities.dataset(spec['link'])
        preprocessors = [entities.preprocessors[p] for p in spec.get('preprocessors', [])]
        return PreprocessedDataset(dataset, preprocessors) if preprocessors else dataset
    return instantiate(spec, entities)


def _split(spec, name, entities, learned, device):
    dataset = entities.dataset(spec['dataset_name'])
    if name not in learned.splits:
        learned.splits[name] = draw_split(len(dataset), spec['ratio'], learned.generator('split:' + name))
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
    return DataLoader(entities.dataset(spec['dataset']), *spec.get('args', []),
                      collate_fn=entities.collators[spec['collator']], **kwargs)


def _model(spec, name, entities, learned, device):
    model = instantiate(spec, entities)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f'a model must be a torch.nn.Module, got {type(model).__name__}')
    return model.to(device)


def _optimizer(spec, name, entities, learned, device):
    optimizer = instantiate(spec, entities, 'optimizers', (entities.models[spec['model']].parameters(),))
    optimizer.model_name = spec['model']
    if 'lr_scheduler' in spec:
        optimizer.lr_scheduler = instantiate(spec['lr_scheduler'], entities, 'lr_scheduler', (optimizer,))
    return optimizer


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
                        list(n['outputs']), n.get('optimizer_name'), optimizers.get(n.get('optimizer_name')),
                        entities.where['models', n['model_name']])
             for n in spec['neural_graph']]
    adapters = {key: instantiate(spec[key], entities, key) for key in ('input_adapter', 'output_adapter')
                if key in spec}
    if spec.get('device'):
        for node in nodes:
            node.model.to(spec['device'])
    return graph.BatchProcessor(name, nodes, adapters.get('input_adapter'), adapters.get('output_adapter'),
                                spec.get('device'))


def _batch_graph(spec, name, entities, learned, device):
    processors = {node: entities.batch_processors[node] for node in spec['nodes']}
    return graph.BatchGraph(name, processors, spec['input_ports'], spec['ingoing_edges'])


_BUILDERS = {
    'datasets': _dataset, 'splits': _split, 'preprocessors': _preprocessor, 'collators': _collator,
    'data_loaders': _data_loader, 'models': _model, 'optimizers': _optimizer,
    'losses': _criterion('loss', 'losses'), 'metrics': _criterion('metric', 'metrics'),
    'batch_processors': _batch_processor, 'batch_graphs': _batch_graph,
}


def default_graph(entities):
    """The graph a pipeline without "graph" gets, or None when the spec leaves it ambiguous."""
    if len(entities.batch_graphs) == 1:
        return next(iter(entities.batch_graphs.values()))
    if entities.batch_graphs:
        return None
    if len(entities.batch_processors) == 1:
        name, processor = next(iter(entities.batch_processors.items()))
        return graph.single_processor_graph(name, processor)
    if not entities.batch_processors and len(entities.models) == 1:
        name, model = next(iter(entities.models.items()))
        optimizer_name, optimizer = next(((n, o) for n, o in entities.optimizers.items()
                                          if o.model_name == name), (None, None))
        return graph.single_model_graph(name, model, optimizer_name, optimizer, entities.where['models', name])
    return None


def _build_pipeline(name, spec, entities, device):
    batch_graph = entities.batch_graphs[spec['graph']] if 'graph' in spec else default_graph(entities)
    default_port = batch_graph.input_ports[0]
    feeds = [Feed(entry['data_loader'], entities.data_loaders[entry['data_loader']],
                  entry.get('variable_names'), entry.get('input_port', default_port))
             for entry in spec['input_injector']]
    default_node = batch_graph.node_names()[-1]
    losses = [Use(entry.get('loss_display_name', entry['loss_name']), entities.losses[entry['loss_name']],
                  entry.get('node_name', default_node)) for entry in spec.get('losses', [])]
    metrics = [Use(entry.get('display_name', entry['metric_name']), entities.metrics[entry['metric_name']],
                   entry.get('node_name', default_node)) for entry in spec.get('metrics', [])]
    return Pipeline(name, batch_graph, feeds, losses, metrics, device, entities.where['pipelines', name])
