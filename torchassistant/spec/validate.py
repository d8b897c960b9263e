"""Check a loaded spec before anything is built: every problem, with its location, at once.

First the structure, against the JSON Schemas in `torchassistant.schema`; then what a schema cannot
say: names and references, importable classes, arguments against signatures, variable flow from
data loaders and models to losses and metrics, graphs. An item with a structural problem is skipped
by the later checks (its name still counts as defined), so one mistake is reported once.
"""
import inspect
import math

import jsonschema
from torch.utils.data import DataLoader

from torchassistant.core import resolve
from torchassistant.core.errors import SpecError
from torchassistant.spec import rules
from torchassistant.spec.rules import display_names
from torchassistant.spec.schema import GROUPS, SCHEMAS, singular

_JSON_TYPES = {dict: 'an object', list: 'a list', str: 'a string', bool: 'true/false', int: 'a number',
               float: 'a number', type(None): 'null'}


def raise_for_problems(problems, source):
    if problems:
        problems = sorted(problems, key=lambda p: p.sort_key())
        raise SpecError(source, problems)


def check(document, kind):
    """All problems of a spec of `kind` that can be found before its session is opened. An evaluation
    spec's overrides are checked later, merged into the session's training spec."""
    checks = {'training': check_training, 'evaluation': lambda d: structure(d, 'evaluation'),
              'inference': check_inference}
    return checks[kind](document)


def structure(document, kind):
    """Problems of `document` against the schema of `kind` ("training", "evaluation", "inference")."""
    validator = jsonschema.Draft202012Validator(SCHEMAS[kind])
    problems = []
    for error in validator.iter_errors(document.data):
        problems.extend(_translate(document, error))
    return _dedupe(problems)


def _dedupe(problems):
    seen, out = set(), []
    for p in problems:
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def _translate(document, error):
    path = tuple(error.absolute_path)
    value = error.instance
    if error.validator == 'additionalProperties':
        allowed = list(error.schema.get('properties', {}))
        return [document.problem(path + (key,), f'unknown field "{key}"' + resolve.suggest(key, allowed)
                                 + (f' (allowed here: {", ".join(allowed)})' if allowed else ''))
                for key in value if key not in allowed]
    if error.validator == 'required':
        missing = error.message.split("'")[1]
        return [document.problem(path, f'missing required field "{missing}"')]
    if error.validator == 'type':
        names = {'object': 'an object', 'array': 'a list', 'string': 'a string', 'number': 'a number',
                 'integer': 'an integer', 'boolean': 'true/false'}
        kinds = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        expected = ' or '.join(names.get(k, k) for k in kinds)
        return [document.problem(path, f'must be {expected}, not {_JSON_TYPES.get(type(value), type(value).__name__)}'
                                 + (f' ({value!r})' if not isinstance(value, (dict, list)) else ''))]
    if error.validator in ('enum', 'const') and path[-1:] == ('group',):
        return [document.problem(path, f'unknown group "{value}"' + resolve.suggest(str(value), GROUPS)
                                 + f' (groups: {", ".join(GROUPS)})')]
    if error.validator == 'enum':
        return [document.problem(path, f'must be one of {", ".join(map(repr, error.validator_value))}, not {value!r}')]
    if error.validator == 'minLength':
        return [document.problem(path, 'must not be empty')]
    if error.validator == 'minItems':
        return [document.problem(path, f'needs at least {error.validator_value} item(s)')]
    if error.validator == 'maxItems':
        return [document.problem(path, f'has {len(value)} items; at most {error.validator_value} are allowed')]
    if error.validator == 'minimum':
        return [document.problem(path, f'must be at least {error.validator_value}, not {value!r}')]
    if error.validator == 'exclusiveMinimum':
        return [document.problem(path, f'must be greater than {error.validator_value}, not {value!r}')]
    if error.validator == 'anyOf' and path[-1:] == ('eval_steps',):
        return [document.problem(path, f'must be a number of batches (integer >= 1) or a fraction in (0, 1], not {value!r}')]
    return [document.problem(path, error.message)]


# ---- training specs ------------------------------------------------------------------------------

def check_training(document):
    """All problems of a training spec (structure, then semantics)."""
    problems = structure(document, 'training')
    bad = {p.path[:3] for p in problems}
    _Semantics(document, problems, bad).run()
    return _dedupe(problems)


def check_inference(document):
    """Problems of an inference spec: structure, then its input converters, post-processor and
    output device resolve and take the arguments given (the post-processor gets the session first)."""
    problems = structure(document, 'inference')
    checker = _Semantics(document, problems, set())
    metas = _section(document.data, ('inputs_meta',), list)
    for i, meta in enumerate(metas if metas is not None and checker.sound(('inputs_meta',)) else []):
        if checker.sound(('inputs_meta', i)):
            checker.buildable(('inputs_meta', i, 'input_converter'), meta['input_converter'])
    for key, leading in (('post_processor', 1), ('output_device', 0)):
        if key in document.data and checker.sound((key,)):
            checker.buildable((key,), document.data[key], leading=leading)
    return _dedupe(problems)


def _section(data, path, kind):
    """The value at `path` when each step leads through an object and it is a `kind`, else None."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data if isinstance(data, kind) else None


class _Semantics:
    def __init__(self, document, problems, bad):
        self.doc = document
        self.problems = problems
        self.bad = bad
        self.structural = [p.path for p in problems]
        self.defined = {group: {} for group in GROUPS}      # group -> name -> definition index
        self.definitions = _section(document.data, ('initialize', 'definitions'), list)
        self.misfiled = set()  # names of definitions with an unknown group (already reported)
        self.outputs = {}      # batch processor (or lone model) -> output names; absent when unknown
        self.needs = {}        # batch processor (or lone model) -> [(where, model, variable)] read from outside
        self.ports = {}        # batch graph -> list of ports
        self.graph_nodes = {}  # batch graph -> list of node names
        self.steps = {}        # batch processor (or lone model) -> optimizer names of its nodes
        self.pipeline_nodes = {}   # pipeline -> its graph's node names, when known
        self.monitors = {}     # optimizer -> (path, name) of its LR scheduler's "monitor"

    def add(self, path, message):
        self.problems.append(self.doc.problem(path, message))

    def run(self):
        """Definitions in order, then pipelines, then stages. A section whose container is malformed
        is skipped, and so is what refers into it: its structural problem is already reported."""
        pipelines = _section(self.doc.data, ('initialize', 'pipelines'), dict)
        if self.definitions is not None:
            for index, definition in enumerate(self.definitions):
                self.check_definition(index, definition)
            for name, pipeline in (pipelines or {}).items():
                if ('initialize', 'pipelines', name) not in self.bad and isinstance(pipeline, dict):
                    self.check_pipeline(('initialize', 'pipelines', name), pipeline)
        stages = _section(self.doc.data, ('train', 'stages'), list)
        for index, stage in enumerate(stages or []):
            if isinstance(stage, dict):
                self.check_stage(('train', 'stages', index), stage, pipelines)
        if stages and pipelines is not None:
            self.check_best_metric(stages, pipelines)
            self.check_scheduler_monitors(stages, pipelines)

    def row_names(self, stage, pipelines):
        """The display names of a stage's epoch rows (rules.row_pipelines), or None when they are not
        known (a malformed or unknown pipeline: reported elsewhere)."""
        names = rules.row_pipelines(stage) if isinstance(stage, dict) else None
        if not isinstance(names, list) or pipelines is None:
            return None
        shown = []
        for name in names:
            if not isinstance(name, str) or name not in pipelines or not self.well_formed(name, pipelines):
                return None
            shown += display_names(pipelines[name])
        return list(dict.fromkeys(shown))

    def check_best_metric(self, stages, pipelines):
        """train.best_metric names a metric some stage records in its rows."""
        best = _section(self.doc.data, ('train', 'best_metric'), dict)
        if not best or not isinstance(best.get('name'), str) or not self.sound(('train', 'stages')):
            return
        shown = []
        for stage in (s for s in stages if isinstance(s, dict)):
            names = self.row_names(stage, pipelines)
            if names is None:
                return          # reported elsewhere; what the rows hold is not known
            shown += names
        shown = list(dict.fromkeys(shown))
        if best['name'] not in shown:
            self.add(('train', 'best_metric', 'name'), f'no stage records "{best["name"]}"'
                     + resolve.suggest(best['name'], shown) + f'; the rows hold: {", ".join(shown)}')

    def check_scheduler_monitors(self, stages, pipelines):
        """An LR scheduler's "monitor" is in the row of every stage that trains its optimizer (the
        trainer steps it with that value after each epoch's validation)."""
        if not self.sound(('train', 'stages')):
            return
        for optimizer, (path, monitor) in self.monitors.items():
            for index, stage in enumerate(stages):
                if not isinstance(stage, dict) or not self.steps_optimizer(stage, optimizer):
                    continue
                names = self.row_names(stage, pipelines)
                if names is not None and monitor not in names:
                    self.add(path, f'optimizer "{optimizer}" is trained in stage {index}, whose epoch rows have no '
                                   f'"{monitor}" to step its scheduler with' + resolve.suggest(monitor, names)
                             + f'; the rows hold: {", ".join(names)}')
                    break

    def steps_optimizer(self, stage, optimizer):
        """Whether a training pipeline of `stage` is known to step `optimizer` (some node of its graph)."""
        trained = stage.get('training_pipelines')
        return isinstance(trained, list) and any(
            optimizer in self.steps.get(node, ()) for name in trained if isinstance(name, str)
            for node in self.pipeline_nodes.get(name, ()))

    def check_monitor(self, path, spec, stage, pipelines):
        """EarlyStopping's monitor (kwargs.monitor, or its first argument) is in the stage's rows."""
        kwargs, args = spec.get('kwargs', {}), spec.get('args', [])
        where, monitor = (('kwargs', 'monitor'), kwargs['monitor']) if 'monitor' in kwargs else \
            (('args', 0), args[0]) if args else (None, None)
        names = self.row_names(stage, pipelines)
        if isinstance(monitor, str) and names is not None and monitor not in names:
            self.add(path + where, f'EarlyStopping monitors "{monitor}", which the rows of this stage do not hold'
                     + resolve.suggest(monitor, names) + f'; they hold: {", ".join(names)}')

    def check_definition(self, index, definition):
        """Record the definition's name in its group and check its spec (unless already malformed)."""
        path = ('initialize', 'definitions', index)
        if not isinstance(definition, dict) or not isinstance(definition.get('name'), str):
            return
        group, name = definition.get('group'), definition['name']
        if group not in GROUPS:
            self.misfiled.add(name)
            return
        if name in self.defined[group]:
            first = self.defined[group][name]
            self.add(path + ('name',), f'duplicate name "{name}" in group "{group}" (first defined '
                                       f'at initialize.definitions[{first}])')
            return
        if path not in self.bad and isinstance(definition.get('spec'), dict):
            getattr(self, 'check_' + group)(path + ('spec',), definition['spec'], index, name)
        self.defined[group][name] = index

    def sound(self, path):
        """No structural problem lies at `path` or inside it."""
        return not any(p[:len(path)] == path for p in self.structural)

    def spec_of(self, group, name):
        """The spec of the defined entity `name`, or None when its definition is malformed."""
        index = self.defined[group][name]
        if ('initialize', 'definitions', index) in self.bad:
            return None
        return self.definitions[index]['spec']

    # -- references --
    def ref(self, path, name, group, before):
        """Check that `name` names a `group` entity defined before definition `before`."""
        names = self.defined[group]
        if name in names:
            return True
        later = [i for i, d in enumerate(self.definitions) if isinstance(d, dict) and d.get('group') == group
                 and d.get('name') == name and i >= before]
        if later:
            self.add(path, f'"{name}" is defined later, at initialize.definitions[{later[0]}]; a definition '
                           f'may refer only to definitions above it')
            return False
        if name in self.misfiled:
            return False   # its definition's unknown group is the problem, reported there
        other = [d['group'] for d in self.definitions if isinstance(d, dict) and d.get('name') == name
                 and d.get('group') in GROUPS and d.get('group') != group]
        hint = f' ("{name}" is one of the {other[0]})' if other else resolve.suggest(name, names)
        self.add(path, f'there is no {singular(group)} named "{name}"{hint}'
                       + (f'; defined {group}: {", ".join(names)}' if names else f'; no {group} are defined'
                          + (' above' if before < len(self.definitions) else '')))
        return False

    def dataset_ref(self, path, name, before):
        """A dataset name, or a split's slice: "SPLIT.train" or "SPLIT[0]" (train, val, test)."""
        split_slice = rules.slice_reference(name)
        if name in self.defined['datasets'] or split_slice is None:
            return self.ref(path, name, 'datasets', before)
        split, part = split_slice
        if split not in self.defined['splits']:
            return self.ref(path, split, 'splits', before)
        spec = self.spec_of('splits', split)
        if spec is None:
            return True    # the split itself is malformed; its slices are unknown
        slices = rules.SLICES[:len(spec['ratio'])]
        if part not in slices:
            if name.endswith(']'):
                self.add(path, f'split "{split}" has slices {", ".join(f"{split}[{i}]" for i in range(len(slices)))} '
                               f'({", ".join(slices)}); "{name}" is not one of them')
            else:
                self.add(path, f'split "{split}" has slices {", ".join(split + "." + s for s in slices)}; '
                               f'"{part}" is not one of them' + resolve.suggest(part, slices))
            return False
        return True

    # -- building --
    def buildable(self, path, spec, home=None, leading=0, alternatives=()):
        """Check class|factory_fn (exactly one), resolve it and check args/kwargs against it."""
        given = [key for key in ('class', 'factory_fn') + alternatives if key in spec]
        if len(given) != 1:
            options = ' or '.join(f'"{k}"' for k in ('class', 'factory_fn') + alternatives)
            self.add(path, f'needs exactly one of {options}' + (f', not {" and ".join(given)}' if given else ''))
            return None
        key = given[0]
        if key in alternatives:
            return None
        target = self.resolved(path + (key,), spec[key], home if key == 'class' else None)
        if target is None:
            return None
        extra = 1 if key == 'factory_fn' else 0
        for message in resolve.check_call(target, spec.get('args', []), spec.get('kwargs', {}), leading + extra):
            self.add(path + (('kwargs',) if 'keyword' in message else ()), message)
        return target

    def resolved(self, path, name, home=None):
        try:
            target = resolve.resolve(name, home)
        except resolve.ResolveError as e:
            self.add(path, str(e))
            return None
        if not callable(target):
            self.add(path, f'"{name}" is a {type(target).__name__}, not a class or function')
            return None
        return target

    def check_datasets(self, path, spec, index, name):
        self.buildable(path, spec, alternatives=('link', 'merge'))
        if 'link' in spec:
            self.dataset_ref(path + ('link',), spec['link'], index)
        for i, part in enumerate(spec.get('merge', [])):
            self.dataset_ref(path + ('merge', i), part, index)
        if 'preprocessors' in spec and 'link' not in spec and 'merge' not in spec:
            self.add(path + ('preprocessors',),
                     '"preprocessors" applies only to a dataset defined by "link" or "merge"')
        for i, pre in enumerate(spec.get('preprocessors', [])):
            self.ref(path + ('preprocessors', i), pre, 'preprocessors', index)

    def check_splits(self, path, spec, index, name):
        self.dataset_ref(path + ('dataset_name',), spec['dataset_name'], index)
        if not math.isclose(sum(spec['ratio']), 1.0, abs_tol=1e-6):
            self.add(path + ('ratio',), f'the ratios must sum to 1; these sum to {sum(spec["ratio"]):g}')

    def check_preprocessors(self, path, spec, index, name):
        target = self.buildable(path, spec, 'preprocessors')
        if 'fit' in spec:
            self.dataset_ref(path + ('fit',), spec['fit'], index)
            if target is not None and inspect.isclass(target) and not hasattr(target, 'fit'):
                self.add(path + ('fit',), f'"fit" is given but {target.__name__} has no fit(dataset) method')

    def check_collators(self, path, spec, index, name):
        self.buildable(path, spec, 'collators')

    def check_data_loaders(self, path, spec, index, name):
        self.dataset_ref(path + ('dataset',), spec['dataset'], index)
        self.ref(path + ('collator',), spec['collator'], 'collators', index)
        if 'collate_fn' in spec.get('kwargs', {}):
            self.add(path + ('kwargs', 'collate_fn'), 'the collate_fn is the definition\'s "collator"; remove it from kwargs')
            return
        for message in resolve.check_call(DataLoader, spec.get('args', []), spec.get('kwargs', {}), 1):
            self.add(path + ('kwargs',), message)

    def check_models(self, path, spec, index, name):
        self.buildable(path, spec)

    def check_optimizers(self, path, spec, index, name):
        self.ref(path + ('model',), spec['model'], 'models', index)
        self.buildable(path, spec, 'optimizers', leading=1)
        if 'lr_scheduler' in spec:
            scheduler = dict(spec['lr_scheduler'])
            monitor = scheduler.pop('monitor', None)
            if isinstance(monitor, str):
                self.monitors[name] = (path + ('lr_scheduler', 'monitor'), monitor)
            target = self.buildable(path + ('lr_scheduler',), scheduler, 'lr_scheduler', leading=1)
            if target is not None and monitor is None and _needs_metric(target):
                self.add(path + ('lr_scheduler',), f'{target.__name__} steps with a metric: add "monitor": the '
                                                   f'displayed metric to step with, e.g. "monitor": "val loss"')

    def check_losses(self, path, spec, index, name, home='losses'):
        self.buildable(path, spec, home)
        if 'transform' in spec:
            self.resolved(path + ('transform',), spec['transform'])

    def check_metrics(self, path, spec, index, name):
        self.check_losses(path, spec, index, name, 'metrics')

    def check_gradient_clippers(self, path, spec, index, name):
        self.ref(path + ('model',), spec['model'], 'models', index)
        if 'clip_value' not in spec and 'clip_norm' not in spec:
            self.add(path, 'a gradient clipper needs "clip_value" (each gradient element into [-v, v]), "clip_norm" '
                           '(the total norm) or both; this one would clip nothing')

    def check_backward_hooks(self, path, spec, index, name):
        self.ref(path + ('model',), spec['model'], 'models', index)
        factory = self.resolved(path + ('factory_fn',), spec['factory_fn'])
        if factory is not None:
            for message in resolve.check_call(factory, [], {}, 1):
                self.add(path + ('factory_fn',), f'{message} (it is called with one argument: the name of each of the '
                                                 f'model\'s parameters)')

    def check_batch_processors(self, path, spec, index, name):
        produced, needs = [], []
        self.steps[name] = []
        for i, node in enumerate(spec['neural_graph']):
            node_path = path + ('neural_graph', i)
            if self.ref(node_path + ('model_name',), node['model_name'], 'models', index) \
                    and 'optimizer_name' in node:
                self.check_node_optimizer(node_path, node, index)
            if 'optimizer_name' in node:
                self.steps[name].append(node['optimizer_name'])
            needs += [(f'initialize.definitions[{index}] spec.neural_graph[{i}].inputs[{j}]', node['model_name'], v)
                      for j, v in enumerate(node['inputs']) if v not in produced]
            produced += node['outputs']
        for key in ('input_adapter', 'output_adapter'):
            if key in spec:
                self.buildable(path + (key,), spec[key], key)
        # adapters rename variables freely: what goes in or comes out is then unknown
        if 'input_adapter' not in spec:
            self.needs[name] = needs
        if 'output_adapter' not in spec:
            self.outputs[name] = produced

    def check_node_optimizer(self, node_path, node, index):
        """The node's optimizer exists and optimizes the node's model."""
        if not self.ref(node_path + ('optimizer_name',), node['optimizer_name'], 'optimizers', index):
            return
        optimizer = self.spec_of('optimizers', node['optimizer_name'])
        if optimizer is not None and optimizer['model'] != node['model_name']:
            self.add(node_path + ('optimizer_name',), f'optimizer "{node["optimizer_name"]}" optimizes '
                                                      f'model "{optimizer["model"]}", not "{node["model_name"]}"')

    def check_batch_graphs(self, path, spec, index, name):
        nodes, ports, edges = spec['nodes'], spec['input_ports'], spec['ingoing_edges']
        for i, node in enumerate(nodes):
            self.ref(path + ('nodes', i), node, 'batch_processors', index)
        for target, sources in edges.items():
            if target not in nodes:
                self.add(path + ('ingoing_edges', target), f'"{target}" is not one of the graph\'s nodes'
                         + resolve.suggest(target, nodes))
            for j, source in enumerate(sources):
                if source not in nodes and source not in ports:
                    self.add(path + ('ingoing_edges', target, j), f'"{source}" is neither a node nor an input port'
                             + resolve.suggest(source, nodes + ports))
        try:
            rules.topological_order(nodes, edges)
        except ValueError as e:
            self.add(path + ('ingoing_edges',), f'the graph has a {e}')
            return
        self.check_reachable(path, nodes, ports, edges)
        self.ports[name], self.graph_nodes[name] = ports, nodes

    def check_reachable(self, path, nodes, ports, edges):
        """Every node is fed, directly or through other nodes, from an input port. An unknown source
        (reported above) counts as reaching, so one typo is reported once."""
        reached = set(ports) | {s for sources in edges.values() for s in sources if s not in nodes}
        changed = True
        while changed:
            changed = False
            for node in nodes:
                if node not in reached and any(s in reached for s in edges.get(node, [])):
                    reached.add(node)
                    changed = True
        for i, node in enumerate(nodes):
            if node not in reached:
                self.add(path + ('nodes', i), f'node "{node}" is unreachable: no path leads to it from an input port')

    # -- pipelines --
    def pipeline_graph(self, path, pipeline):
        """(ports, node names) of the pipeline's graph, or None when it is not known."""
        if 'graph' in pipeline:
            if not self.ref(path + ('graph',), pipeline['graph'], 'batch_graphs', len(self.definitions)):
                return None
            name = pipeline['graph']
            if name not in self.graph_nodes:
                return None
            return self.ports[name], self.graph_nodes[name]
        choice = rules.default_graph(*(self.defined[g] for g in ('batch_graphs', 'batch_processors', 'models')))
        if choice.kind == 'graph':
            return (self.ports[choice.name], self.graph_nodes[choice.name]) if choice.name in self.ports else None
        if choice.kind == 'processor':
            return [rules.DEFAULT_PORT], [choice.name]
        if choice.kind == 'model':
            model = choice.name
            self.outputs.setdefault(model, [rules.LONE_MODEL_OUTPUT])
            lone = (f'a spec without a graph feeds its only model {rules.LONE_MODEL_INPUT}', model, rules.LONE_MODEL_INPUT)
            self.needs.setdefault(model, [lone])
            optimizers = {n: self.spec_of('optimizers', n) for n in self.defined['optimizers']}
            written = [d for d in self.definitions if isinstance(d, dict) and d.get('group') == 'optimizers']
            if len(written) == len(optimizers) and all(o and o['model'] in self.defined['models']
                                                       for o in optimizers.values()):   # else reported there
                optimizer = rules.lone_model_optimizer({n: s['model'] for n, s in optimizers.items()}, model)
                self.steps.setdefault(model, [optimizer] if optimizer else [])
            return [rules.DEFAULT_PORT], [model]
        if 'nothing to run' not in choice.problem or not self.misfiled:   # else the model may be misfiled
            self.add(path, choice.problem)
        return None

    def check_pipeline(self, path, pipeline):
        known = self.pipeline_graph(path, pipeline)
        if known:
            self.pipeline_nodes[path[-1]] = known[1]
        variables = self.check_feeds(path, pipeline['input_injector'], known)
        if known and all(n in self.outputs for n in known[1]):
            variables.names += [o for n in known[1] for o in self.outputs[n]]
        else:
            variables = None     # what the graph produces is not known: no flow check
        if variables and all(n in self.needs for n in known[1]):
            for where, model, variable in [need for n in known[1] for need in self.needs[n]]:
                if not variables.provide(variable):
                    self.add(path + ('input_injector',), f'model "{model}" reads "{variable}" ({where}), but nothing '
                                                         f'in this pipeline provides it' + variables.hint(variable))
        shown = {}
        for key, name_key, group in (('losses', 'loss_name', 'losses'), ('metrics', 'metric_name', 'metrics')):
            for i, use in enumerate(pipeline.get(key, [])):
                use_path = path + (key, i)
                if not self.ref(use_path + (name_key,), use[name_key], group, len(self.definitions)):
                    continue
                display = rules.display_name(use)
                if display in shown:
                    self.add(use_path, f'display name "{display}" is already used by {shown[display]} in this pipeline')
                shown[display] = f'{key}[{i}]'
                if known and self.check_node_name(use_path, use, known[1]) and variables:
                    self.check_criterion_inputs(use_path + (name_key,), group, use[name_key], variables)

    def check_feeds(self, path, feeds, known):
        """Check the input injector's loaders and ports; the Variables its loaders provide."""
        variables = _Variables()
        for i, feed in enumerate(feeds):
            self.ref(path + ('input_injector', i, 'data_loader'), feed['data_loader'], 'data_loaders', len(self.definitions))
            variables.names += feed.get('variable_names', [])
            variables.open = variables.open or 'variable_names' not in feed
            if known and 'input_port' in feed and feed['input_port'] not in known[0]:
                self.add(path + ('input_injector', i, 'input_port'), f'the graph has no input port "{feed["input_port"]}"'
                         + resolve.suggest(feed['input_port'], known[0]) + f'; ports: {", ".join(known[0])}')
            elif known and 'input_port' not in feed and rules.default_port(known[0]) is None:
                self.add(path + ('input_injector', i), f'needs "input_port": the graph has several ({", ".join(known[0])})')
        return variables

    def check_node_name(self, use_path, use, nodes):
        """The node whose outputs a loss or metric reads is given where needed and exists."""
        node = use.get('node_name')
        if node is None and rules.default_node(nodes) is None:
            self.add(use_path, f'needs "node_name": the graph has several nodes ({", ".join(nodes)})')
            return False
        if node is not None and node not in nodes:
            self.add(use_path + ('node_name',), f'the graph has no node "{node}"' + resolve.suggest(node, nodes))
            return False
        return True

    def check_criterion_inputs(self, path, group, name, variables):
        """Every variable a loss or metric reads is provided by a loader or a model of the pipeline."""
        spec = self.spec_of(group, name)
        if spec is None:
            return
        index = self.defined[group][name]
        for j, variable in enumerate(spec['inputs']):
            if not variables.provide(variable):
                self.add(path, f'{singular(group)} "{name}" reads "{variable}" '
                               f'(initialize.definitions[{index}] spec.inputs[{j}]), but nothing in this pipeline '
                               f'provides it' + variables.hint(variable))

    def check_stage(self, path, stage, pipelines):
        """A stage is checked field by field: its fields do not depend on each other."""
        if pipelines is not None:
            self.check_stage_pipelines(path, stage, pipelines)
        condition_path = path + ('stop_condition',)
        if 'stop_condition' in stage and self.sound(condition_path):
            target = self.buildable(condition_path, stage['stop_condition'], 'stop_condition')
            if resolve.qualified_name(target) == rules.EPOCHS_COMPLETED:
                self.check_epochs(condition_path, stage['stop_condition'])
            elif resolve.qualified_name(target) == rules.EARLY_STOPPING:
                self.check_monitor(condition_path, stage['stop_condition'], stage, pipelines)

    def check_stage_pipelines(self, path, stage, pipelines):
        """Stage pipelines exist, training ones have losses, validation ones show distinct names."""
        for key in ('training_pipelines', 'validation_pipelines', 'debug_pipelines'):
            for i, name in enumerate(stage.get(key, []) if self.sound(path + (key,)) else []):
                if name not in pipelines:
                    self.add(path + (key, i), f'there is no pipeline named "{name}"' + resolve.suggest(name, pipelines)
                             + f'; pipelines: {", ".join(pipelines)}')
                elif key == 'training_pipelines' and self.well_formed(name, pipelines):
                    if not pipelines[name].get('losses'):
                        self.add(path + (key, i), f'pipeline "{name}" has no losses, so it cannot be trained')
                    elif not self.trainable(name):
                        self.add(path + (key, i), rules.untrainable(name))
        shown = {}
        validation = stage.get('validation_pipelines', []) if self.sound(path + ('validation_pipelines',)) else []
        for i, name in enumerate(validation):
            for display in display_names(pipelines[name]) if self.well_formed(name, pipelines) else []:
                if display in shown and shown[display] != name:
                    self.add(path + ('validation_pipelines', i), f'pipelines "{shown[display]}" and "{name}" both show '
                             f'"{display}"; give one of them another display name so the row keeps both')
                shown.setdefault(display, name)

    def trainable(self, pipeline):
        """Some node of the pipeline's graph has an optimizer (True when the graph is not known)."""
        nodes = self.pipeline_nodes.get(pipeline)
        if nodes is None or not all(n in self.steps for n in nodes):
            return True
        return any(self.steps.get(n) for n in nodes)

    def well_formed(self, name, pipelines):
        return isinstance(pipelines.get(name), dict) and ('initialize', 'pipelines', name) not in self.bad

    def check_epochs(self, path, spec):
        """EpochsCompleted counts whole epochs (the rule is rules.num_epochs_problem)."""
        kwargs, args = spec.get('kwargs', {}), spec.get('args', [])
        if 'num_epochs' in kwargs:
            where, value = ('kwargs', 'num_epochs'), kwargs['num_epochs']
        elif args:
            where, value = ('args', 0), args[0]
        else:
            return
        problem = rules.num_epochs_problem(value)
        if problem:
            self.add(path + where, problem)


class _Variables:
    """The variable names a pipeline provides: loader variables, model outputs, and rules.DEFAULT_VARIABLES
    when some loader has no variable_names (`open`)."""

    def __init__(self):
        self.names = []
        self.open = False

    def provide(self, variable):
        return variable in self.names or (self.open and rules.is_default_variable(variable))

    def hint(self, variable):
        return resolve.suggest(variable, self.names) + '; available: ' + \
            ', '.join(list(dict.fromkeys(self.names)) + ([rules.DEFAULT_VARIABLES] if self.open else []))


def _needs_metric(scheduler_class):
    """A scheduler whose step() needs a value (ReduceLROnPlateau): its step has a required argument."""
    try:
        parameters = list(inspect.signature(scheduler_class.step).parameters.values())[1:]
    except (TypeError, ValueError, AttributeError):
        return False
    return any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
