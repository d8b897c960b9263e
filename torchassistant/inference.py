"""Raw command-line inputs -> examples (input converters) -> one batch through a pipeline, forward only."""
import os

import torch

from torchassistant import errors
from torchassistant.build import instantiate
from torchassistant.data import apply_preprocessors, preprocessors_of
from torchassistant.errors import UsageError
from torchassistant.resolve import suggest
from torchassistant.spec.validate import raise_for_problems


class PrintResults:
    """The default output device: the inputs, then `name:value` per result."""

    def __call__(self, inputs, results):
        print('Running inference on: ', inputs)
        for name, value in results.items():
            print(f'{name}:{value.cpu() if isinstance(value, torch.Tensor) else value}')   # as on any device


def run(spec, document, entities, pipeline, inputs):
    """Run `pipeline` on the raw `inputs` as the inference spec says, then print or output them."""
    metas = spec['inputs_meta']
    converters = [_build(document, ('inputs_meta', i, 'input_converter'), m['input_converter'], entities)
                  for i, m in enumerate(metas)]
    if len(metas) > 1 and len(inputs) != len(metas):
        raise UsageError(f'{document.describe(("inputs_meta",))} has {len(metas)} entries, so exactly '
                         f'{len(metas)} inputs are expected (one example); got {len(inputs)}')
    feeds = {feed.port: feed for feed in pipeline.feeds}
    problems = [document.problem(('inputs_meta', i, 'input_port'),
                                 f'pipeline "{pipeline.name}" has no input port "{m["input_port"]}"'
                                 + suggest(m['input_port'], feeds) + f'; its ports: {", ".join(feeds)}')
                for i, m in enumerate(metas) if 'input_port' in m and m['input_port'] not in feeds]
    raise_for_problems(problems, document.source)
    if len(metas) == 1:
        # every input is one example, all of them one batch
        port = metas[0].get('input_port', pipeline.feeds[0].port)
        groups = {port: [_convert(document, 0, converters[0], text, feeds[port]) for text in inputs]}
    else:
        groups = {}
        for i, (meta, converter, text) in enumerate(zip(metas, converters, inputs)):
            port = meta.get('input_port', pipeline.feeds[i].port)
            groups.setdefault(port, []).append(_convert(document, i, converter, text, feeds[port]))
    port_frames = {}
    for port, examples in groups.items():
        feed = feeds[port]
        port_frames.setdefault(port, {}).update(feed.frame(feed.loader.collate_fn(examples)))
    pipeline.train(False)
    with torch.inference_mode():
        try:
            outputs = pipeline.forward(port_frames)
        except Exception as e:
            raise errors.user_code_error(f'pipeline "{pipeline.name}" failed on the inputs', e) from e
    variables = {k: v for frame in outputs.values() for k, v in frame.items()}
    names = spec.get('results', ['y_hat'])
    missing = [n for n in names if n not in variables]
    if missing:
        raise UsageError(f'{document.describe(("results",))}: pipeline "{pipeline.name}" produces no '
                         f'{", ".join(missing)}; it produces: {", ".join(variables)}')
    results = {name: variables[name] for name in names}
    if 'post_processor' in spec:
        post = _build(document, ('post_processor',), spec['post_processor'], entities, (entities,))
        results = _call(document, ('post_processor',), post, results)
    device = _build(document, ('output_device',), spec['output_device'], entities) \
        if 'output_device' in spec else PrintResults()
    _call(document, ('output_device',), device, list(inputs), results)


def _convert(document, index, converter, text, feed):
    converter_at = document.describe(("inputs_meta", index, "input_converter"))
    try:
        example = converter(text)
    except (FileNotFoundError, IsADirectoryError) as e:
        if os.path.isdir(text):
            raise UsageError(f'input {text!r} is a folder; the input converter at {converter_at} '
                             f'expects a file') from e
        if os.path.exists(text):
            raise errors.user_code_error(f'{converter_at} failed on {text!r}', e) from e
        raise UsageError(f'input {text!r} does not exist (the input converter at {converter_at} '
                         f'opens it as a file)') from e
    except Exception as e:
        raise errors.user_code_error(f'{converter_at} failed on {text!r}', e) from e
    for preprocessors in preprocessors_of(feed.loader.dataset):
        example = apply_preprocessors(preprocessors, example)
    return example


def _build(document, path, spec, entities, leading=()):
    return errors.call_user_code(f'{document.describe(path)}: building it failed', instantiate, spec, entities,
                                 None, leading)


def _call(document, path, function, *args):
    return errors.call_user_code(f'{document.describe(path)} failed on {args[0]!r}', function, *args)
