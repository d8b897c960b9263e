"""Rules of the format that both validation and building need, each written once.

Validation calls them with names (nothing is built yet), building with the built entities' names;
both then act on the same answer.
"""
import re
from dataclasses import dataclass
from typing import Optional

DEFAULT_PORT = 'input'           # the one port of a graph the spec did not write
LONE_MODEL_INPUT = 'input_1'     # what a lone model reads ...
LONE_MODEL_OUTPUT = 'y_hat'      # ... and what its first output is called


@dataclass
class GraphChoice:
    """The graph a pipeline without "graph" gets: `kind` is "graph", "processor" or "model" and
    `name` the definition; or `kind` None and `problem` says why none can be chosen."""
    kind: Optional[str] = None
    name: Optional[str] = None
    problem: Optional[str] = None


def default_graph(graphs, processors, models):
    """Choose the graph of a pipeline that names none, from the defined names of each group (in order).

    One batch graph; else one batch processor (fed by DEFAULT_PORT); else one model (reading
    LONE_MODEL_INPUT, first output LONE_MODEL_OUTPUT). Anything else is ambiguous or empty."""
    graphs, processors, models = list(graphs), list(processors), list(models)
    if len(graphs) == 1:
        return GraphChoice('graph', graphs[0])
    if not graphs and len(processors) == 1:
        return GraphChoice('processor', processors[0])
    if not graphs and not processors and len(models) == 1:
        return GraphChoice('model', models[0])
    if not (graphs or processors or models):
        return GraphChoice(problem='there is nothing to run: the spec defines no model, batch processor or batch graph')
    counted = f'{len(graphs)} batch graphs' if graphs else \
        f'{len(processors)} batch processors' if processors else f'{len(models)} models'
    return GraphChoice(problem=f'needs "graph": the spec defines {counted}, so the pipeline\'s graph cannot be '
                               f'chosen automatically')


def lone_model_optimizer(optimizer_models, model):
    """The optimizer a lone model's default graph steps: the first whose "model" is `model`, or None.
    `optimizer_models` maps optimizer names (in definition order) to the model each optimizes."""
    return next((name for name, target in optimizer_models.items() if target == model), None)


def untrainable(pipeline_name):
    """The message for a training pipeline whose graph has no node with an optimizer."""
    return (f'pipeline "{pipeline_name}" is used for training but can never update anything: no node of its '
            f'graph has an "optimizer_name" (a lone model needs an optimizer whose "model" is it)')


# ---- splits ----

SLICES = ('train', 'val', 'test')


def slice_reference(name):
    """(split, slice) of a reference to a split's slice, "s.train" or "s[0]" (0, 1, 2: train, val, test);
    None when `name` has neither form. An index past the slices stays a number: "s[5]" -> ("s", "5").
    A dataset whose name has that form is read first (callers try the exact name before this)."""
    indexed = re.fullmatch(r'(.+)\[(\d+)\]', name)
    if indexed:
        index = int(indexed[2])
        return indexed[1], SLICES[index] if index < len(SLICES) else str(index)
    split, dot, part = name.rpartition('.')
    return (split, part) if dot and split else None


# ---- graphs ----

def topological_order(nodes, ingoing_edges):
    """Nodes ordered so each comes after the nodes feeding it. Raises ValueError on a cycle."""
    ordered, state = [], {}

    def visit(node, trail):
        if state.get(node) == 'done':
            return
        if state.get(node) == 'visiting':
            raise ValueError('cycle: ' + ' -> '.join(trail + [node]))
        state[node] = 'visiting'
        for source in ingoing_edges.get(node, ()):
            if source in nodes:
                visit(source, trail + [node])
        state[node] = 'done'
        ordered.append(node)

    for node in nodes:
        visit(node, [])
    return ordered


# ---- stop conditions ----

EPOCHS_COMPLETED = 'torchassistant.stop_conditions.EpochsCompleted'


def num_epochs_problem(value):
    """Why `value` is not a valid EpochsCompleted(num_epochs), or None. Validation and the class share it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return (f'num_epochs must be a positive integer (a number of epochs; the stop condition is asked after '
                f'each epoch, so a stage runs at least one), not {value!r}')
    return None


# ---- examples ----

def example_elements(example):
    """An example as a list of elements: a tuple or list as it is, any other value as one element."""
    return list(example) if isinstance(example, (tuple, list)) else [example]
