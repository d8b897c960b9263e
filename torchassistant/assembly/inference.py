"""Raw inputs -> examples (input converters) -> batches through a pipeline, forward only -> results.

Examples come from the command line (one batch) or from a file, one example per line, in batches of
the data loader's batch size. Each batch's results go to the output device as soon as it finishes:
infer prints `Running inference on:  [inputs]`, then calls the device with the results dict (the
default device prints `name:value` per result); or, with --json, one JSON object per example.
"""
import contextlib
import json
import os
import re
import sys
import warnings

import torch

from torchassistant.assembly.build import instantiate
from torchassistant.core import errors, standard_json
from torchassistant.core.errors import UsageError
from torchassistant.core.resolve import suggest
from torchassistant.run.data import apply_preprocessors, describe, preprocessors_of
from torchassistant.spec import rules
from torchassistant.spec.rules import example_elements
from torchassistant.spec.validate import raise_for_problems

ORIGINAL_DEFAULT_PORT = 'default_port'      # what the original called the port a spec did not name


IMAGE_PIXELS_VARIABLE = 'TORCHASSISTANT_MAX_IMAGE_PIXELS'
MAX_IMAGE_PIXELS = 89_478_485     # Pillow's own warning threshold (~9459 x 9459), made the limit


class PrintResults:
    """The default output device: `name:value` per result."""

    def __call__(self, results):
        for name, value in results.items():
            print(f'{name}:{value.cpu() if isinstance(value, torch.Tensor) else value}')   # as on any device


class Example:
    """The raw inputs of one example (one per inputs_meta entry) and where they came from."""

    def __init__(self, inputs, where=None):
        self.inputs = inputs
        self.where = where       # "FILE:LINE" for --from, None for the command line

    def shown(self):
        """The example as printed and in --json: the input, or the list of them when there are several."""
        return self.inputs[0] if len(self.inputs) == 1 else list(self.inputs)


class Inference:
    """An inference spec ready to run: input converters bound to ports, post-processor, output device."""

    def __init__(self, spec, document, entities, pipeline, precision=None):
        self.document, self.pipeline = document, pipeline
        self.precision = precision       # a run.step.Precision: the forward runs under its autocast
        self.feeds = {feed.port: feed for feed in pipeline.feeds}
        self.metas = [self._ported(meta) for meta in spec['inputs_meta']]
        problems = [document.problem(('inputs_meta', i, 'input_port'),
                                     f'pipeline "{pipeline.name}" has no input port "{m["input_port"]}"'
                                     + suggest(m['input_port'], self.feeds) + f'; its ports: {", ".join(self.feeds)}')
                    for i, m in enumerate(self.metas) if 'input_port' in m and m['input_port'] not in self.feeds]
        problems += [document.problem(('inputs_meta', i), f'pipeline "{pipeline.name}" has {len(self.feeds)} input '
                                      f'port(s), so this entry has no port of its own; name one with "input_port": '
                                      f'{", ".join(self.feeds)}')
                     for i, m in enumerate(self.metas) if 'input_port' not in m and i >= len(pipeline.feeds)]
        raise_for_problems(problems, document.source)
        self.ports = [m.get('input_port', pipeline.feeds[i].port) for i, m in enumerate(self.metas)]
        self.converters = [_build(document, ('inputs_meta', i, 'input_converter'), m['input_converter'], entities)
                           for i, m in enumerate(self.metas)]
        self.names = spec.get('results', [rules.LONE_MODEL_OUTPUT])
        self.post = _build(document, ('post_processor',), spec['post_processor'], entities, (entities,)) \
            if 'post_processor' in spec else None
        self.device = _build(document, ('output_device',), spec['output_device'], entities) \
            if 'output_device' in spec else PrintResults()

    def _ported(self, meta):
        """`meta` with the original TorchAssistant's name of the one unnamed port, "default_port", read
        as ours when the pipeline has that one port only."""
        if meta.get('input_port') == ORIGINAL_DEFAULT_PORT and ORIGINAL_DEFAULT_PORT not in self.feeds \
                and list(self.feeds) == [rules.DEFAULT_PORT]:
            return {**meta, 'input_port': rules.DEFAULT_PORT}
        return meta

    def batch_size(self):
        """The smallest batch size of the data loaders the inputs go to (1 if none says)."""
        sizes = [_batch_size(self.feeds[port].loader) for port in set(self.ports)]
        return min([s for s in sizes if s] or [1])

    def examples_from_argv(self, inputs):
        """The command line's inputs: one example each, or, with k inputs_meta entries, exactly k inputs."""
        if len(self.metas) == 1:
            return [Example([text]) for text in inputs]
        if len(inputs) != len(self.metas):
            raise UsageError(f'{self.document.describe(("inputs_meta",))} has {len(self.metas)} entries, so '
                             f'exactly {len(self.metas)} inputs are expected (one example); got {len(inputs)}')
        return [Example(list(inputs))]

    def examples_from_lines(self, lines, source):
        """One example per non-blank line of `lines`; its inputs separated by tabs when there are several."""
        for number, line in enumerate(lines, start=1):
            line = line.rstrip('\r\n')
            if not line.strip():
                continue
            inputs = line.split('\t') if len(self.metas) > 1 else [line]
            if len(inputs) != len(self.metas):
                raise UsageError(f'{source}:{number}: {self.document.describe(("inputs_meta",))} has '
                                 f'{len(self.metas)} entries, so each line needs {len(self.metas)} inputs '
                                 f'separated by tabs; this one has {len(inputs)}')
            yield Example(inputs, f'{source}:{number}')

    def predict(self, examples):
        """{result name: value} for a batch of examples (post-processed when the spec says so)."""
        return self.predict_converted(examples, self.convert(examples))

    def convert(self, examples):
        """Each example's inputs through their input converters (and the dataset's preprocessors): one
        list per example, an element per inputs_meta entry."""
        return [[self._convert(i, converter, text, example.where)
                 for i, (converter, text) in enumerate(zip(self.converters, example.inputs))] for example in examples]

    def predict_converted(self, examples, converted):
        """`predict` on examples already converted (`convert`): collate, forward, results, post-processor."""
        groups = {}
        for elements in converted:
            for port, element in zip(self.ports, elements):
                groups.setdefault(port, []).append(element)
        port_frames = {}
        for port, column in groups.items():
            feed = self.feeds[port]
            port_frames.setdefault(port, {}).update(feed.frame(_collate(feed, column, examples)))
        self.pipeline.train(False)
        with torch.inference_mode(), self.precision.autocast() if self.precision else contextlib.nullcontext():
            try:
                outputs = self._forward(port_frames)
            except Exception as e:
                raise errors.user_code_error(f'pipeline "{self.pipeline.name}" failed on the inputs '
                                             f'{_about(examples)}', e) from e
        variables = {k: v for frame in outputs.values() for k, v in frame.items()}
        missing = [n for n in self.names if n not in variables]
        if missing:
            raise UsageError(f'{self.document.describe(("results",))}: pipeline "{self.pipeline.name}" produces no '
                             f'{", ".join(missing)}; it produces: {", ".join(variables)}')
        results = {name: variables[name] for name in self.names}
        if self.post is not None:
            results = _call(self.document, ('post_processor',), self.post, results, _about(examples))
        return results

    def _forward(self, port_frames):
        """The pipeline's graph on one batch in inference mode: a model's run_inference(*inputs) runs
        instead of its forward where it defines one."""
        return self.pipeline.forward(port_frames, inference=True)

    def _convert(self, index, converter, text, where):
        converter_at = self.document.describe(("inputs_meta", index, "input_converter"))
        on = f'{where}: input {text!r}' if where else f'input {text!r}'
        limit = _limit_image_size()
        try:
            example = converter(text)
        except (FileNotFoundError, IsADirectoryError) as e:
            if os.path.isdir(text):
                raise UsageError(f'{on} is a folder; the input converter at {converter_at} expects a file') from e
            if os.path.exists(text):
                raise errors.user_code_error(f'{converter_at} failed on {on}', e) from e
            raise UsageError(f'{on} does not exist (the input converter at {converter_at} '
                             f'opens it as a file)') from e
        except Exception as e:
            if type(e).__name__ == 'DecompressionBombError':      # Pillow, as it opened the image
                raise UsageError(_too_large(on, e, limit)) from None
            raise errors.user_code_error(f'{converter_at} failed on {on}', e) from e
        for preprocessors in preprocessors_of(self.feeds[self.ports[index]].loader.dataset):
            example = apply_preprocessors(preprocessors, example)
        return example

    # ---- output -----------------------------------------------------------------------------------
    def show(self, examples, results):
        """`Running inference on:  [inputs]`, then the output device gets the results."""
        print('Running inference on: ', [text for example in examples for text in example.inputs], flush=True)
        _call(self.document, ('output_device',), self.device, results, _about(examples))
        sys.stdout.flush()

    def write_json(self, examples, results, out):
        """One JSON object per example on `out`: its input and each result sliced along dimension 0."""
        for line in self.json_objects(examples, results):
            out.write(standard_json.dumps(line) + '\n')
        out.flush()

    def json_objects(self, examples, results):
        """What --json writes for `examples` as JSON values: {"input": ..., "<result>": value, ...} each."""
        if not isinstance(results, dict):
            raise UsageError(f'--json writes one object per example from a dict of results, but '
                             f'{self.document.describe(("post_processor",))} returned {describe(results)}')
        if 'input' in results:
            raise UsageError(f'--json writes the example\'s input under "input", and a result has that name '
                             f'({self.document.describe(("results",))}); rename it')
        per_name = {name: _per_example(name, value, len(examples)) for name, value in results.items()}
        return [{'input': example.shown(), **{name: values[i] for name, values in per_name.items()}}
                for i, example in enumerate(examples)]


def run(inference, batches, json_out=None):
    """Run every batch of examples through `inference`; print each one's results as it finishes,
    or write them as JSON lines to `json_out`. Returns the number of examples."""
    count = 0
    for examples in batches:
        results = inference.predict(examples)
        if json_out is not None:
            inference.write_json(examples, results, json_out)
        else:
            inference.show(examples, results)
        count += len(examples)
    return count


def batched(examples, size):
    """Lists of up to `size` examples, read lazily from the iterable `examples`."""
    batch = []
    for example in examples:
        batch.append(example)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _per_example(name, value, count):
    """The values of result `name` for each of the `count` examples: its items along dimension 0, as JSON values."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == count:
        value = value.detach().cpu()
        items = value.tolist()
        if not value.is_complex():        # numbers only: JSON values as they are, NaN and inf as null
            return items if not value.is_floating_point() or bool(torch.isfinite(value).all()) else \
                [standard_json.finite(item) for item in items]
    elif hasattr(value, 'tolist') and getattr(value, 'ndim', 0) > 0 and len(value) == count:   # numpy
        items = value.tolist()
    elif isinstance(value, (list, tuple)) and len(value) == count:
        items = list(value)
    else:
        raise UsageError(f'--json writes one object per example, but result "{name}" ({describe(value)}) has no '
                         f'entry per example along its first dimension ({count} examples in the batch)')
    try:
        return [standard_json.finite(json.loads(json.dumps(item, default=_jsonable))) for item in items]   # NaN: null
    except TypeError as e:
        raise UsageError(f'--json cannot write result "{name}": {e}') from None


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if hasattr(value, 'tolist'):          # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f'{describe(value)} is not a number, string, list, dict or tensor')


def _collate(feed, converted, examples):
    """The batch the feed's collator makes of the `converted` examples (from `examples`). At inference an
    example may have no target (a converter returns `(image, None)`): a collator that cannot take the
    None columns at the end is given only the columns before them, the inputs; if it fails on those too,
    the error says what to do."""
    collate = feed.loader.collate_fn
    try:
        return collate(converted)
    except Exception as e:
        error = e
    inputs = _without_missing_columns(converted)
    if inputs is not None:
        try:
            return collate(inputs)
        except Exception:
            pass
    failure = f'the collator of data loader "{feed.loader_name}" failed on the converted inputs {_about(examples)}'
    if inputs is None:
        raise errors.user_code_error(failure, error) from error
    width, kept = len(example_elements(converted[0])), len(inputs[0])
    raise errors.user_code_error(failure, error, (
        f'\n  The input converter gives examples of {width} elements whose last {width - kept} is None (no target '
        f'at inference), and the collator takes neither the examples as they are nor their first {kept} '
        f'element(s) alone. Make the collator pass a column of None through (as '
        f'torchassistant.collators.ColumnWiseCollator does) or accept examples without their target, or have the '
        f'input converter return a target the collator can convert.')) from error


def _without_missing_columns(examples):
    """The examples without their trailing elements that are None in every example, or None when
    there are none such (or nothing would be left)."""
    rows = [example_elements(example) for example in examples]
    width = min(len(row) for row in rows)
    kept = width
    while kept > 0 and all(row[kept - 1] is None for row in rows):
        kept -= 1
    if kept in (0, width) or any(len(row) != width for row in rows):
        return None
    return [tuple(row[:kept]) for row in rows]


def _batch_size(loader):
    size = getattr(loader, 'batch_size', None)
    return size or getattr(getattr(loader, 'batch_sampler', None), 'batch_size', None)


def _about(examples):
    """The inputs of a batch for error messages: their lines in the file, or the inputs themselves."""
    if examples[0].where:
        return examples[0].where if len(examples) == 1 else f'{examples[0].where} to {examples[-1].where}'
    return repr([example.shown() for example in examples])


def _build(document, path, spec, entities, leading=()):
    return errors.call_user_code(f'{document.describe(path)}: building it failed', instantiate, spec, entities,
                                 None, leading)


_image_limit: list = []       # the limit set in Pillow, once per process


def _limit_image_size():
    """Make Pillow refuse an image of more than MAX_IMAGE_PIXELS (or TORCHASSISTANT_MAX_IMAGE_PIXELS) pixels
    as it opens it, before anything is decoded: its decompression-bomb guard raises DecompressionBombError
    above twice its MAX_IMAGE_PIXELS (and only warns below, which is silenced here). The limit; None
    without Pillow."""
    if not _image_limit:
        text = os.environ.get(IMAGE_PIXELS_VARIABLE)
        try:
            limit = int(text) if text else MAX_IMAGE_PIXELS
        except ValueError:
            limit = 0
        if limit <= 1:
            raise UsageError(f'{IMAGE_PIXELS_VARIABLE} must be a number of pixels > 1, not {text!r}')
        try:
            from PIL import Image
        except ImportError:
            return None
        Image.MAX_IMAGE_PIXELS = limit // 2
        warnings.filterwarnings('ignore', category=Image.DecompressionBombWarning)
        _image_limit.append(limit)
    return _image_limit[0]


def _too_large(on, error, limit):
    found = re.search(r'\((\d+) pixels\)', str(error))
    size = f'{int(found.group(1)):,} pixels' if found else f'more pixels than that ({error})'
    return (f'{on} is an image of {size}, more than the limit of {limit:,}: it is refused as it is opened, '
            f'before it is decoded (which would take seconds and gigabytes). Shrink it, or raise the limit with '
            f'{IMAGE_PIXELS_VARIABLE}=N')


def _call(document, path, function, argument, inputs):
    return errors.call_user_code(f'{document.describe(path)} failed on the results of {inputs}', function, argument)
