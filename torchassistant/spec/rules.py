"""Rules of the format that both validation and building need, each written once.

Validation calls them with names (nothing is built yet), building with the built entities' names;
both then act on the same answer.
"""
from dataclasses import dataclass

DEFAULT_PORT = 'input'           # the one port of a graph the spec did not write
LONE_MODEL_INPUT = 'input_1'     # what a lone model reads ...
LONE_MODEL_OUTPUT = 'y_hat'      # ... and what its first output is called


@dataclass
class GraphChoice:
    """The graph a pipeline without "graph" gets: `kind` is "graph", "processor" or "model" and
    `name` the definition; or `kind` None and `problem` says why none can be chosen."""
    kind: str = None
    name: str = None
    problem: str = None


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
