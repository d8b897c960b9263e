"""JSON Schemas of the three spec formats: the one description of their structure.

`torchassistant.spec.validate` checks specs against these; `python -m torchassistant.schema KIND`
prints one so an editor can complete and underline specs. Semantics that a schema cannot express
(references, importable classes, signatures, graphs) are checked in `torchassistant.spec.validate`.
"""
import argparse
import json
import sys

GROUPS = ('datasets', 'splits', 'preprocessors', 'collators', 'data_loaders', 'models', 'optimizers',
          'losses', 'metrics', 'batch_processors', 'batch_graphs')

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
_EVAL_STEPS = {'anyOf': [{'type': 'integer', 'minimum': 1},
                         {'type': 'number', 'exclusiveMinimum': 0, 'maximum': 1}],
               'description': 'batches (integer) or fraction of each loader (float in (0, 1])'}

GROUP_SPECS = {
    'datasets': _object({**_BUILD, 'link': _STRING, 'preprocessors': _NAMES}),
    'splits': _object({'dataset_name': _STRING,
                       'ratio': {'type': 'array', 'items': {'type': 'number', 'minimum': 0},
                                 'minItems': 2, 'maxItems': 3}}, ['dataset_name', 'ratio']),
    'preprocessors': _object({**_BUILD, 'fit': _STRING}),
    'collators': _CALLABLE,
    'data_loaders': _object({'dataset': _STRING, 'collator': _STRING, 'args': _ARGS, 'kwargs': _KWARGS},
                            ['dataset', 'collator']),
    'models': _CALLABLE,
    'optimizers': _object({'class': _BUILD['class'], 'model': _STRING, 'args': _ARGS, 'kwargs': _KWARGS,
                           'lr_scheduler': _CLASS_ONLY}, ['class', 'model']),
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
}, ['training_pipelines', 'stop_condition'])

INITIALIZE = _object({'definitions': {'type': 'array', 'items': DEFINITION},
                      'pipelines': {'type': 'object', 'additionalProperties': PIPELINE}},
                     ['definitions', 'pipelines'])

TRAINING = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant training spec',
    **_object({'session_dir': _STRING, 'initialize': INITIALIZE,
               'train': _object({'stages': {'type': 'array', 'minItems': 1, 'items': STAGE}}, ['stages'])},
              ['session_dir', 'initialize', 'train']),
}

# Overrides are merged into the training spec before it is validated as a whole, so here they are
# only checked for shape: an object, or an {"options", "replace_strategy"} wrapper.
_OVERRIDES = {'type': 'object', 'description': 'overrides merged into the training spec for this run'}

EVALUATION = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant evaluation spec',
    **_object({'session_dir': _STRING, 'validation_pipelines': {**_NAMES, 'minItems': 1},
               'eval_steps': _EVAL_STEPS, 'initialize': _OVERRIDES},
              ['session_dir', 'validation_pipelines']),
}

INFERENCE = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema',
    'title': 'TorchAssistant inference spec',
    **_object({'session_dir': _STRING, 'inference_pipeline': _STRING,
               'inputs_meta': {'type': 'array', 'minItems': 1, 'items': _object(
                   {'input_converter': _CALLABLE, 'input_port': _STRING}, ['input_converter'])},
               'results': _NAMES, 'post_processor': _CALLABLE, 'output_device': _CALLABLE,
               'initialize': _OVERRIDES},
              ['session_dir', 'inference_pipeline', 'inputs_meta']),
}

SCHEMAS = {'training': TRAINING, 'evaluation': EVALUATION, 'inference': INFERENCE}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m torchassistant.schema',
                                     description='Print the JSON Schema of a spec format.')
    parser.add_argument('kind', choices=sorted(SCHEMAS), help='which spec format')
    args = parser.parse_args(argv)
    json.dump(SCHEMAS[args.kind], sys.stdout, indent=2)
    print()


if __name__ == '__main__':
    main()
