"""JSON Schemas of the three spec formats: the one description of their structure.

`torchassistant.spec.validate` checks specs against these; `python -m torchassistant.schema KIND`
prints one so an editor can complete and underline specs. Semantics that a schema cannot express
(references, importable classes, signatures, graphs) are checked in `torchassistant.spec.validate`.
"""

from torchassistant.spec.rules import CHECKPOINT_EVERY, KEEP_CHECKPOINTS

# the definition groups, in the order they are built: the one list (validation, building, concise
# specs' two parts and the messages derive from it)
GROUPS = ('datasets', 'splits', 'preprocessors', 'collators', 'data_loaders', 'models', 'optimizers',
          'losses', 'metrics', 'batch_processors', 'batch_graphs', 'gradient_clippers', 'backward_hooks')
DATA_GROUPS = GROUPS[:GROUPS.index('data_loaders') + 1]   # what data loaders are made of (a concise spec's "data")
COMPUTATION_GROUPS = GROUPS[len(DATA_GROUPS):]              # the rest (a concise spec's "computation")


def singular(group):
    """A group's member in words: 'losses' -> 'loss', 'data_loaders' -> 'data loader'."""
    return (group[:-2] if group.endswith('sses') else group[:-1]).replace('_', ' ')


_STRING = {'type': 'string', 'minLength': 1}
_NAMES = {'type': 'array', 'items': _STRING}
_ARGS = {'type': 'array', 'description': 'positional arguments'}
_KWARGS = {'type': 'object', 'description': 'keyword arguments'}
_BUILD = {'class': {**_STRING, 'description': 'dotted path or short name of a class'},
          'factory_fn': {**_STRING, 'description': 'dotted path of a function called as fn(session, *args, **kwargs)'},
          'args': _ARGS, 'kwargs': _KWARGS}


def _object(properties, required=()):
    return {'type': 'object', 'properties': properties, 'required': list(required),
            'additionalProperties': False}


_CALLABLE = _object(_BUILD)
_CLASS_ONLY = _object({'class': _BUILD['class'], 'args': _ARGS, 'kwargs': _KWARGS}, ['class'])
_POSITIVE = {'type': 'number', 'exclusiveMinimum': 0}
_EVAL_STEPS = {'anyOf': [{'type': 'integer', 'minimum': 1},
                         {'type': 'number', 'exclusiveMinimum': 0, 'maximum': 1}],
               'description': 'batches (integer) or fraction of each loader (float in (0, 1])'}

GROUP_SPECS = {
    'datasets': _object({**_BUILD, 'link': _STRING, 'merge': {**_NAMES, 'minItems': 1}, 'preprocessors': _NAMES}),
    'splits': _object({'dataset_name': _STRING,
                       'ratio': {'type': 'array', 'items': {'type': 'number', 'minimum': 0},
                                 'minItems': 2, 'maxItems': 3}}, ['dataset_name', 'ratio']),
    'preprocessors': _object({**_BUILD, 'fit': _STRING}),
    'collators': _CALLABLE,
    'data_loaders': _object({'dataset': _STRING, 'collator': _STRING, 'args': _ARGS, 'kwargs': _KWARGS},
                            ['dataset', 'collator']),
    'models': _CALLABLE,
    'optimizers': _object({'class': _BUILD['class'], 'model': _STRING, 'args': _ARGS, 'kwargs': _KWARGS,
                           'lr_scheduler': _object({**_CLASS_ONLY['properties'], 'monitor': {
                               **_STRING, 'description': 'a displayed metric (e.g. "val loss") the scheduler steps '
                                                         'with after validation, as ReduceLROnPlateau needs'}},
                               ['class'])}, ['class', 'model']),
    'losses': _object({'class': _BUILD['class'], 'inputs': _NAMES, 'transform': _STRING,
                       'args': _ARGS, 'kwargs': _KWARGS}, ['class', 'inputs']),
    'metrics': _object({'class': _BUILD['class'], 'inputs': _NAMES, 'transform': _STRING,
                        'args': _ARGS, 'kwargs': _KWARGS}, ['class', 'inputs']),
    'batch_processors': _object({
        'input_adapter': _CALLABLE, 'output_adapter': _CALLABLE, 'device': _STRING,
        'neural_graph': {'type': 'array', 'minItems': 1, 'items': _object(
            {'model_name': _STRING, 'inputs': _NAMES, 'outputs': _NAMES, 'optimizer_name': _STRING},
            ['model_name', 'inputs', 'outputs'])}}, ['neural_graph']),
    'batch_graphs': _object({'nodes': _NAMES, 'input_ports': _NAMES,
                             'ingoing_edges': {'type': 'object', 'additionalProperties': _NAMES}},
                            ['nodes', 'input_ports', 'ingoing_edges']),
    'gradient_clippers': _object({'model': _STRING, 'clip_value': _POSITIVE, 'clip_norm': _POSITIVE}, ['model']),
    'backward_hooks': _object({'model': _STRING, 'factory_fn': {
        **_STRING, 'description': 'dotted path of a function called with each parameter\'s name, returning its '
                                  'gradient hook'}}, ['model', 'factory_fn']),
}

DEFINITION = {
    'type': 'object',
    'properties': {'group': {'enum': list(GROUPS)}, 'name': _STRING, 'spec': {'type': 'object'}},
    'required': ['group', 'name', 'spec'],
    'additionalProperties': False,
    'allOf': [{'if': {'properties': {'group': {'const': group}}, 'required': ['group']},
               'then': {'properties': {'spec': spec}}} for group, spec in GROUP_SPECS.items()],
}

PIPELINE = _object({
    'graph': _STRING,
    'input_injector': {'type': 'array', 'minItems': 1, 'items': _object(
        {'data_loader': _STRING, 'variable_names': _NAMES, 'input_port': _STRING}, ['data_loader'])},
    'losses': {'type': 'array', 'items': _object(
        {'loss_name': _STRING, 'loss_display_name': _STRING, 'node_name': _STRING}, ['loss_name'])},
    'metrics': {'type': 'array', 'items': _object(
        {'metric_name': _STRING, 'display_name': _STRING, 'node_name': _STRING}, ['metric_name'])},
}, ['input_injector'])

STAGE = _object({
    'mode': {'enum': ['interleave']},
    'training_pipelines': {**_NAMES, 'minItems': 1},
    'validation_pipelines': _NAMES,
    'debug_pipelines': _NAMES,
    'eval_steps': _EVAL_STEPS,
    'stop_condition': _CLASS_ONLY,
}, ['training_pipelines'])

# Definitions are a list built in order, or the concise form {"data": [...], "computation": [...]}
# (torchassistant.spec.concise says which groups go in which part and fills in what is left out).
_DEFINITION_LIST = {'type': 'array', 'items': DEFINITION}
DEFINITIONS = {
    'description': 'a list of definitions built in order, or {"data": [...], "computation": [...]}: datasets, '
                   'splits, preprocessors, collators and data_loaders in data, the other groups in computation',
    'type': ['array', 'object'],
    'if': {'type': 'array'},
    'then': _DEFINITION_LIST,
    'else': {'if': {'type': 'object'},
             'then': _object({'data': _DEFINITION_LIST, 'computation': _DEFINITION_LIST}, ['data', 'computation'])},
}

INITIALIZE = _object({'definitions': DEFINITIONS,
                      'pipelines': {'type': 'object', 'additionalProperties': PIPELINE,
                                    'description': 'missing or {}: "training" and "validation" are filled in'}},
                     ['definitions'])

# An explicit spec (a list of definitions, pipelines and stages) is taken as written and needs every
# stage complete; any other spec is concise: what it leaves out is filled in (torchassistant.spec.concise).
EXPLICIT = {'required': ['initialize', 'train'],
            'properties': {'initialize': {'required': ['definitions', 'pipelines'],
                                          'properties': {'definitions': {'type': 'array'},
                                                         'pipelines': {'type': 'object', 'minProperties': 1}}},
                           'train': {'required': ['stages']}}}
_COMPLETE_STAGES = {'properties': {'train': {'properties': {'stages': {
    'minItems': 1, 'items': {'required': ['stop_condition']}}}}}}

# Where and how the run computes; the same fields on every spec, and a --device/--precision option
# on the commands overrides them (torchassistant.device decides).
RUNTIME = {
    'device': {**_STRING, 'description': '"auto" (default: CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:1", "mps"'},
    'precision': {'enum': ['32', 'bf16-mixed', '16-mixed'],
                  'description': 'autocast dtype of forward passes and losses; "16-mixed" adds a GradScaler'},
}

TRAIN = _object({
    'stages': {'type': 'array', 'items': STAGE,
               'description': 'missing: one stage is filled in; [] in a concise spec: no stages'},
    'checkpoint_every': {'oneOf': [_object({'iterations': {'type': 'integer', 'minimum': 1}}, ['iterations']),
                                   _object({'minutes': {'type': 'number', 'exclusiveMinimum': 0}}, ['minutes'])],
                         'description': f'mid-epoch checkpoints: every N iterations or M minutes (default '
                                        f'{CHECKPOINT_EVERY["minutes"]} minutes)'},
    'keep_checkpoints': {'type': 'integer', 'minimum': 1,
                         'description': f'epoch-end checkpoints kept (default {KEEP_CHECKPOINTS})'},
    'best_metric': _object({'name': _STRING, 'mode': {'enum': ['min', 'max']}}, ['name']),
    'accumulate': {'type': 'integer', 'minimum': 1, 'description': 'iterations per optimizer step (default 1)'},
    'clip_grad_norm': {'type': 'number', 'exclusiveMinimum': 0, 'description': 'clip gradients to this total norm'},
    'non_finite': {'enum': ['stop', 'skip'], 'description': 'a NaN/inf loss stops training (default) or skips the batch'},
    'loggers': {'type': 'array', 'items': {'enum': ['csv', 'tensorboard', 'plots', 'mlflow']}, 'description': 'default ["csv"]'},
})

TRAINING = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant training spec',
    **_object({'session_dir': _STRING, 'initialize': INITIALIZE, 'train': TRAIN, **RUNTIME,
               'compile': {'type': 'boolean', 'description': 'torch.compile the models (default false)'},
               'seed': {'type': 'integer', 'minimum': 0, 'description': 'drawn and printed at init when absent'}},
              ['session_dir', 'initialize']),
    'if': EXPLICIT, 'then': _COMPLETE_STAGES,
}

_CHECKPOINT = {'anyOf': [{'enum': ['best', 'latest']}, {'type': 'integer', 'minimum': 0}],
               'description': '"latest" (default), "best", or the epoch N whose checkpoint is used'}

# Overrides are merged into the training spec before it is validated as a whole, so here they are
# only checked for shape: an object, or an {"options", "replace_strategy"} wrapper.
_OVERRIDES = {'type': 'object', 'description': 'overrides merged into the training spec for this run'}

EVALUATION = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant evaluation spec',
    **_object({'session_dir': _STRING, 'validation_pipelines': {**_NAMES, 'minItems': 1},
               'eval_steps': _EVAL_STEPS, 'initialize': _OVERRIDES, 'checkpoint': _CHECKPOINT, **RUNTIME},
              ['session_dir', 'validation_pipelines']),
}

INFERENCE = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant inference spec',
    **_object({'session_dir': _STRING,
               'inference_pipeline': {**_STRING, 'description': 'missing: the first pipeline of the session'},
               'inputs_meta': {'type': 'array', 'minItems': 1, 'items': _object(
                   {'input_converter': _CALLABLE, 'input_port': _STRING}, ['input_converter'])},
               'results': _NAMES, 'post_processor': _CALLABLE, 'output_device': _CALLABLE,
               'input_adapter': {**_CALLABLE, 'description': 'accepted and ignored, as the original TorchAssistant '
                                                             'ignored it: batch processors adapt their inputs'},
               'initialize': _OVERRIDES, 'checkpoint': _CHECKPOINT, **RUNTIME},
              ['session_dir', 'inputs_meta']),
}

_BOUNDS = {'type': 'array', 'items': {'type': 'number'}, 'minItems': 2, 'maxItems': 2,
           'description': '[low, high], both included'}
_PARAMETER = {'oneOf': [
    _object({'float': _BOUNDS, 'log': {'type': 'boolean'}, 'step': _POSITIVE}, ['float']),
    _object({'int': {**_BOUNDS, 'items': {'type': 'integer'}}, 'log': {'type': 'boolean'},
             'step': {'type': 'integer', 'minimum': 1}}, ['int']),
    _object({'choices': {'type': 'array', 'minItems': 1}}, ['choices']),
], 'description': '{"float": [low, high], "log", "step"}, {"int": [low, high], "log", "step"} or {"choices": [...]}'}

SWEEP = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant sweep spec',
    **_object({'sweep_dir': _STRING,
               'training_spec': {**_STRING, 'description': 'the training spec, relative to the sweep file'},
               'trials': {'type': 'integer', 'minimum': 1, 'description': 'trials in the study, all machines together'},
               'objective': _object({'metric': {**_STRING, 'description': 'a display name of a validation pipeline'},
                                     'direction': {'enum': ['maximize', 'minimize']}}, ['metric']),
               'parameters': {'type': 'object', 'minProperties': 1, 'additionalProperties': _PARAMETER,
                              'description': 'override path -> search space'},
               'sampler': {'enum': ['tpe', 'random', 'grid'], 'description': 'default "tpe"'},
               'pruner': {'enum': ['median', 'hyperband', 'none'], 'description': 'default "median"'},
               'storage': {'type': ['string', 'null'],
                           'description': 'an Optuna storage URL; default: an SQLite file in sweep_dir'},
               'study_name': _STRING,
               'seed': {'type': 'integer', 'minimum': 0, 'description': 'the sampler\'s seed'}},
              ['sweep_dir', 'training_spec', 'trials', 'objective', 'parameters']),
}

SCHEMAS = {'training': TRAINING, 'evaluation': EVALUATION, 'inference': INFERENCE, 'sweep': SWEEP}
