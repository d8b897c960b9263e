"""Rules of the format that more than one module needs, each written once.

Validation calls them with names (nothing is built yet), building with the built entities' names,
training, reporting and the session with what they hold; all then act on the same answer. The list of
definition groups is the schema's (`torchassistant.spec.schema.GROUPS`).
"""
import math
import re
from dataclasses import dataclass
from typing import Optional

DEFAULT_PORT = 'input'           # the one port of a graph the spec did not write
DEFAULT_VARIABLES = 'input_1..input_n'   # a loader without "variable_names": element i of a batch is input_i


def default_variable(index):
    """The name of element `index` (1-based) of a batch from a loader without "variable_names"."""
    return f'input_{index}'


def is_default_variable(name):
    """Whether `name` is one of DEFAULT_VARIABLES (input_1, input_2, ...)."""
    return name.startswith('input_') and name[6:].isdigit() and int(name[6:]) >= 1


LONE_MODEL_INPUT = default_variable(1)     # what a lone model reads ...
LONE_MODEL_OUTPUT = 'y_hat'                # ... and what its first output is called; what infer shows by default


# ---- pipelines: what a feed, loss or metric gets when the spec leaves it out ----

def default_port(ports):
    """The port of a feed without "input_port": the graph's only port; None when it has several (the
    feed must then name one)."""
    return ports[0] if len(ports) == 1 else None


def default_node(nodes):
    """The node whose outputs a loss or metric without "node_name" reads: the graph's only node; None
    when it has several (the loss or metric must then name one)."""
    return nodes[0] if len(nodes) == 1 else None


def display_name(use):
    """The name a pipeline's loss or metric entry shows in rows, the CSV and progress, and what monitors
    and best_metric name: its "loss_display_name" / "display_name", else the definition's name."""
    if 'loss_name' in use:
        return use.get('loss_display_name', use['loss_name'])
    return use.get('display_name', use.get('metric_name'))


def display_names(pipeline):
    """The names a pipeline's rows hold: its metrics', then its losses'."""
    return [display_name(u) for u in pipeline.get('metrics', [])] + \
        [display_name(u) for u in pipeline.get('losses', [])]


# ---- training: defaults of "train" ----

KEEP_CHECKPOINTS = 3                  # train.keep_checkpoints: epoch-end checkpoints kept
CHECKPOINT_EVERY = {'minutes': 10}    # train.checkpoint_every: mid-epoch checkpoints


# ---- which epoch is best ----

def lower_is_better(name):
    """Losses and error rates go down, everything else (accuracy, F1...) up."""
    words = name.lower().replace('_', ' ').split()
    return any(w in ('loss', 'cer', 'wer', 'error', 'err', 'mse', 'mae', 'perplexity') or w.endswith('loss')
               for w in words)


def best_metric_mode(best_metric):
    """train.best_metric's "mode": "min" unless it says "max"."""
    return best_metric.get('mode', 'min')


def comparable(value):
    """Whether a row's value takes part in choosing the best: a number, not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def better(value, than, mode):
    """Whether `value` beats `than` under `mode` ("min" or "max"); a tie does not (the earlier epoch
    stays the best), and neither does a value that is not comparable."""
    return comparable(value) and (value < than if mode == 'min' else value > than)


def best_epoch(rows, name=None, mode=None, pipelines=1):
    """(epoch number, metric, value) of the best row by `name` (`mode` "min" or "max"), by default the
    first validation metric ("val ...") else the first metric, lower-is-better for losses and error
    rates; the earliest of equal bests; None when there is nothing to compare. Without a `name`, a
    stage that trains several `pipelines` has no default: its metrics measure different players (a
    GAN's discriminator accuracy is highest when the generator is worst), so None."""
    names = list(dict.fromkeys(k for row in rows for k in row))
    if not names or (name is None and pipelines > 1):
        return None
    name = name or next((n for n in names if n.startswith('val')), names[0])
    mode = mode or ('min' if lower_is_better(name) else 'max')
    best = None
    for number, row in enumerate(rows, start=1):
        if comparable(row.get(name)) and (best is None or better(row[name], best[2], mode)):
            best = (number, name, row[name])
    return best


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
EARLY_STOPPING = 'torchassistant.stop_conditions.EarlyStopping'


def row_pipelines(stage):
    """The pipelines whose display names an epoch's row holds (what EarlyStopping, a scheduler's
    "monitor" and best_metric can name): the stage's validation pipelines, or without any, the running
    values of its training pipelines. The trainer records the row so."""
    return stage.get('validation_pipelines') or stage.get('training_pipelines', [])


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
