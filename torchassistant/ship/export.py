"""The models of an inference pipeline as files other programs load without TorchAssistant.

    safetensors   the weights of each model (its state_dict) with metadata: session, epoch, spec digest
    torch-export  each model as a torch.export program (.pt2): torch.export.load(path).module()(x)
    onnx          each model as ONNX (torch.onnx.export(..., dynamo=True)), for onnxruntime and others

One file per model of the pipeline's graph, what `infer` runs: a model that defines run_inference is
exported through it, as infer calls it. The example inputs are the pipeline's own: the first examples
of each data loader's dataset, collated as the loader does, run through the graph while every
model's inputs and outputs are recorded. Two batch sizes are recorded, so the dimensions that follow
the batch are seen and exported as dynamic ("batch"); other dimensions that differ between the
recorded batches (sequence lengths) are dynamic too, and the rest are fixed.

Every file is checked before it is written: loaded back (safetensors into a copy of the model,
torch.export.load, an onnxruntime session) and run on the recorded inputs of a few hundred examples,
its outputs compared with the outputs the pipeline computed (what infer answers), the largest
absolute difference printed against the format's tolerance. Files are written to a temporary name
and renamed, so a failed export leaves no file behind. A model that cannot be traced is an error
naming it, with torch's reason shortened to its first line and the line of code it points at; in a
graph of several models the others are still exported.
"""
import contextlib
import copy
import hashlib
import importlib.util
import io
import itertools
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch

from torchassistant import version
from torchassistant.core import errors
from torchassistant.core.errors import TorchAssistantError, UsageError
from torchassistant.session import atomic

FORMATS = {'safetensors': '.safetensors', 'torch-export': '.pt2', 'onnx': '.onnx'}
TOLERANCE = {'safetensors': 0.0, 'torch-export': 1e-5, 'onnx': 1e-4}     # largest absolute difference allowed
CHECK_EXAMPLES = 256
METADATA_FILE = 'torchassistant.json'      # the metadata inside a .pt2 (torch.export.save's extra_files)


class ExportError(TorchAssistantError):
    """A model that could not be exported or did not match the pipeline; exit 1."""


@dataclass
class Source:
    """Where the exported pipeline comes from: recorded in every file's metadata."""
    session: str
    epoch: int
    checkpoint: str
    pipeline: str
    spec_sha256: str            # of the session's training spec (spec.json) as stored
    inference_spec: str

    def metadata(self, member):
        return {'session': self.session, 'epoch': str(self.epoch), 'checkpoint': self.checkpoint,
                'pipeline': self.pipeline, 'model': member.name,
                'class': f'{type(member.model).__module__}.{type(member.model).__qualname__}',
                'inputs': json.dumps(member.inputs), 'outputs': json.dumps(member.outputs),
                'spec_sha256': self.spec_sha256, 'inference_spec': self.inference_spec,
                'torchassistant': version}


def spec_digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclass
class Member:
    """A model of the graph: its spec name, the variables it reads and writes (its first node's), and
    the (inputs, outputs) of its first call in each recorded batch."""
    name: str
    model: torch.nn.Module
    inputs: list
    outputs: list
    where: str
    calls: list = field(default_factory=list)
    recording: bool = False

    def entry(self):
        """The module to export: what infer calls (run_inference where the model defines one)."""
        return _RunInference(self.model) if hasattr(type(self.model), 'run_inference') else self.model


class _RunInference(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model.run_inference(*args)


def members(pipeline):
    """The models of the pipeline's graph in the order they run, each once."""
    found = {}
    for processor in pipeline.graph.processors():
        for node in processor.nodes:
            found.setdefault(node.model_name, Member(node.model_name, node.model, list(node.inputs),
                                                     list(node.outputs), node.where))
    return list(found.values())


# ---- the export ----------------------------------------------------------------------------------

def export(pipeline, source, fmt, out=None, store=None, stream=None, check_examples=CHECK_EXAMPLES):
    """Export every model of `pipeline` as `fmt`; print one line per file written (and a note on a graph
    of several models). Files go to `out` (a file for a single model, else a folder) or, without it,
    to the session's exports folder through `store`. Returns the paths written; ExportError after
    writing the others when a model cannot be exported."""
    if fmt not in FORMATS:
        raise UsageError(f'no export format "{fmt}"; the formats: {", ".join(FORMATS)}')
    check_installed(fmt)
    found = members(pipeline)
    if not found:
        raise UsageError(f'pipeline "{pipeline.name}" runs no model; there is nothing to export')
    targets = _destinations(found, FORMATS[fmt], out)
    batch_sizes, described = record(pipeline, found, check_examples)
    written, failures = [], []
    for member in found:
        try:
            data, shapes = _EXPORTERS[fmt](member, source.metadata(member), batch_sizes)
            difference = _check(fmt, member, data)
        except ExportError as e:
            failures.append(e.message)
            continue
        path = store.write_export(targets[member.name], data) if out is None else _write(targets[member.name], data)
        written.append(path)
        print(f'wrote {path} (model "{member.name}": {shapes})\n  checked with {_CHECKED_WITH[fmt]} against the '
              f'pipeline on {described}: max abs diff {difference:.3g} (tolerance {TOLERANCE[fmt]:g})', file=stream)
    if len(found) > 1 and written:
        print(f'note: pipeline "{pipeline.name}" runs {len(found)} models ({", ".join(m.name for m in found)}); '
              f'each is a file of its own: which output feeds which model is in the spec, not in the files, '
              f'so a program that loads them runs them in that order itself', file=stream)
    if failures:
        done = f'; written: {", ".join(written)}' if written else ''
        raise ExportError('\n'.join(failures) + (f'\n({len(found) - len(failures)} of {len(found)} models of '
                                                 f'pipeline "{pipeline.name}" exported{done})' if len(found) > 1 else ''))
    return written


def check_installed(fmt):
    """UsageError naming what to install when a library `fmt` needs is missing."""
    needed = {'safetensors': ['safetensors'], 'torch-export': [], 'onnx': ['onnx', 'onnxscript', 'onnxruntime']}[fmt]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f'export --format {fmt} needs {", ".join(missing)}, which is not installed: '
                         f'pip install "torchassistant[export]"')


def _destinations(found, suffix, out):
    """{model name: file name (in the session's exports folder) or path (under `out`)}."""
    names = {m.name: re.sub(r'[^\w.-]', '_', m.name) + suffix for m in found}
    if out is None:
        return names
    if out.endswith(suffix) and not os.path.isdir(out):
        if len(found) > 1:
            raise UsageError(f'--out {out} names one file, but the pipeline runs {len(found)} models '
                             f'({", ".join(names)}); give a folder for their {len(found)} files')
        _folder(os.path.dirname(out) or '.', out)
        return {found[0].name: out}
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f'--out {out} is a file that does not end in {suffix}; give a {suffix} file or a folder')
    _folder(out, out)
    return {name: os.path.join(out, file) for name, file in names.items()}


def _folder(path, out):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UsageError(f'--out {out}: cannot create the folder {path} ({atomic.describe(e)})') from None


def _write(path, data):
    try:
        atomic.write(path, data)
    except OSError as e:
        raise UsageError(f'--out: cannot write {path}: {atomic.describe(e)}') from None
    return path


# ---- recording the pipeline's models on its own data ---------------------------------------------

def record(pipeline, found, count):
    """Run the graph as infer does on batches of the first `count` examples of each data loader's
    dataset, recording each member's first call per batch. Returns (the batch sizes, what the
    examples were, for messages)."""
    batches, sizes, described = _batches(pipeline, count)
    pipeline.train(False)
    with _recording(found), torch.no_grad():
        for port_frames in batches:
            for member in found:
                member.recording = True
            try:
                pipeline.forward(port_frames, inference=True)
            except Exception as e:
                raise errors.user_code_error(f'pipeline "{pipeline.name}" failed on a batch of its data loaders '
                                             f'{", ".join(f.loader_name for f in pipeline.feeds)}', e) from e
    for member in found:
        if len(member.calls) != len(sizes):
            raise ExportError(f'model "{member.name}" ({member.where}) did not run in every batch of pipeline '
                              f'"{pipeline.name}"; its inputs could not be recorded')
    return sizes, described


@contextlib.contextmanager
def _recording(found):
    """While the block runs, each member records its inputs and outputs when `member.recording` is set.
    The graph calls `model.run_inference` where it exists (else the model): an attribute of that name
    on the instance, removed afterwards, stands in for either."""
    installed = []
    try:
        for member in found:
            call = member.model.run_inference if hasattr(type(member.model), 'run_inference') else member.model
            member.model.__dict__['run_inference'] = _recorder(member, call)
            installed.append(member.model)
        yield
    finally:
        for model in installed:
            model.__dict__.pop('run_inference', None)


def _recorder(member, call):
    def run(*args):
        result = call(*args)
        if member.recording:
            member.calls.append((args, result))
            member.recording = False
        return result
    return run


def _batches(pipeline, count):
    """(port frames per batch, their sizes, a description): the first `count` examples of each feed's
    dataset in batches of the loader's batch size, collated by its collator; when every batch has the
    same size, one batch of one example fewer is added, so the batch dimension shows."""
    columns = []
    for feed in pipeline.feeds:
        dataset = feed.loader.dataset
        try:
            if hasattr(dataset, '__len__') and hasattr(dataset, '__getitem__'):
                examples = [dataset[i] for i in range(min(count, len(dataset)))]
            else:
                examples = list(itertools.islice(iter(dataset), count))
        except Exception as e:
            raise errors.user_code_error(f'the dataset of data loader "{feed.loader_name}" failed on one of its '
                                         f'first {count} examples', e) from e
        columns.append(examples)
    total = min(len(examples) for examples in columns)
    if total == 0:
        raise UsageError(f'the data loaders of pipeline "{pipeline.name}" have no examples to take the models\' '
                         f'example inputs from')
    size = max(1, min(getattr(feed.loader, 'batch_size', None) or 32 for feed in pipeline.feeds))
    spans = [(start, min(start + size, total)) for start in range(0, total, size)]
    if len({stop - start for start, stop in spans}) == 1 and spans[0][1] - spans[0][0] >= 3:
        spans.append((0, spans[0][1] - 1))
    batches = []
    for start, stop in spans:
        port_frames = {}
        for feed, examples in zip(pipeline.feeds, columns):
            batch = errors.call_user_code(f'the collator of data loader "{feed.loader_name}" failed',
                                          feed.loader.collate_fn, examples[start:stop])
            port_frames.setdefault(feed.port, {}).update(feed.frame(batch))
        batches.append(port_frames)
    loaders = ', '.join(f'"{feed.loader_name}"' for feed in pipeline.feeds)
    return batches, [stop - start for start, stop in spans], \
        f'{total} examples of data loader{"s" if len(pipeline.feeds) > 1 else ""} {loaders}'


def _dynamic_shapes(member, batch_sizes):
    """torch.export's dynamic_shapes for the member's inputs: per tensor input {dimension: Dim}, a
    shared "batch" Dim where the size is the batch's in every recorded call, one of its own where the
    size differs otherwise; None for a fixed input. Also (the shapes as text, for messages)."""
    batch = torch.export.Dim('batch')
    specs, shown = [], []
    for index, name in enumerate(_input_names(member)):
        values = [args[index] for args, _ in member.calls]
        if not all(isinstance(v, torch.Tensor) for v in values) or len({v.dim() for v in values}) != 1:
            specs.append(None)
            continue
        dims, text = {}, []
        for d in range(values[0].dim()):
            sizes = [v.shape[d] for v in values]
            if len(set(sizes)) == 1:
                text.append(str(sizes[0]))
            elif sizes == list(batch_sizes):
                dims[d] = batch
                text.append('batch')
            else:
                dims[d] = torch.export.Dim(re.sub(r'\W', '_', f'{name}_{d}'))
                text.append(f'{name}_{d}')
        specs.append(dims or None)
        shown.append(f'{name} ({" x ".join(text)})')
    return tuple(specs), ', '.join(shown)


def _input_names(member):
    count = len(member.calls[0][0])
    return [member.inputs[i] if i < len(member.inputs) else f'input_{i + 1}' for i in range(count)]


def _output_names(member):
    leaves = _leaves(member.calls[0][1])
    return [member.outputs[i] if i < len(member.outputs) else f'output_{i + 1}' for i in range(len(leaves))]


def _described(member, inputs):
    """"input_1 (batch x 1 x 28 x 28) -> y_hat (batch x 10)": the member's inputs and outputs by name."""
    calls = [_leaves(outputs) for _, outputs in member.calls]
    batch_sizes = [_batch_of(args) for args, _ in member.calls]
    shown = []
    for index, name in enumerate(_output_names(member)):
        values = [leaves[index] for leaves in calls]
        if not all(isinstance(v, torch.Tensor) for v in values) or len({v.dim() for v in values}) != 1:
            shown.append(name)
            continue
        dims = []
        for d in range(values[0].dim()):
            sizes = [v.shape[d] for v in values]
            dims.append(str(sizes[0]) if len(set(sizes)) == 1 else 'batch' if sizes == batch_sizes else '?')
        shown.append(f'{name} ({" x ".join(dims)})')
    return f'{inputs} -> {", ".join(shown)}'


# ---- the three formats ---------------------------------------------------------------------------

def _safetensors(member, metadata, batch_sizes):
    from safetensors.torch import save
    state = member.model.state_dict()
    others = [name for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise ExportError(f'model "{member.name}" ({member.where}): its state_dict holds values that are not tensors '
                          f'({", ".join(others[:5])}), which safetensors cannot store')
    state = {name: value.detach().cpu().contiguous().clone() for name, value in state.items()}
    try:
        data = save(state, metadata=metadata)
    except Exception as e:
        raise ExportError(f'model "{member.name}" ({member.where}): its weights cannot be written as safetensors: '
                          f'{_reason(e)}') from e
    _, shown = _dynamic_shapes(member, batch_sizes)
    return data, f'{len(state)} tensors for {metadata["class"]}; {_described(member, shown)}'


def _torch_export(member, metadata, batch_sizes):
    program, shown = _traced(member, batch_sizes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue(), _described(member, shown)


def _traced(member, batch_sizes):
    dynamic, shown = _dynamic_shapes(member, batch_sizes)
    args = member.calls[0][0]
    try:
        with _quiet():
            program = torch.export.export(member.entry().eval(), tuple(args), dynamic_shapes=dynamic, strict=False)
    except Exception as e:
        raise ExportError(_untraceable(member, 'torch.export', e)) from e
    return program, shown


def _onnx(member, metadata, batch_sizes):
    import onnx
    dynamic, shown = _dynamic_shapes(member, batch_sizes)
    args = member.calls[0][0]
    inputs = [name for name, arg in zip(_input_names(member), args) if isinstance(arg, torch.Tensor)]
    try:
        with _quiet():
            program = torch.onnx.export(member.entry().eval(), tuple(args), dynamo=True, dynamic_shapes=dynamic,
                                        input_names=inputs, output_names=_output_names(member), verbose=False)
            proto = program.model_proto
            onnx.helper.set_model_props(proto, metadata)
            data = proto.SerializeToString()
    except Exception as e:
        raise ExportError(_untraceable(member, 'torch.onnx.export (dynamo)', e)) from e
    return data, _described(member, shown)


_EXPORTERS = {'safetensors': _safetensors, 'torch-export': _torch_export, 'onnx': _onnx}
_CHECKED_WITH = {'safetensors': 'a copy of the model loaded from it', 'torch-export': 'torch.export.load',
                 'onnx': 'onnxruntime'}


@contextlib.contextmanager
def _quiet():
    """torch.export and torch.onnx print progress, warnings and, on failure, whole graphs (on stdout,
    stderr and through logging); the export's own lines say what matters."""
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter('ignore')
            yield
    finally:
        logging.disable(disabled)


# ---- checking an export against the pipeline -----------------------------------------------------

def _check(fmt, member, data):
    """The largest absolute difference between the export's outputs and the pipeline's on every
    recorded batch; ExportError if it exceeds the format's tolerance or the export fails to run."""
    run = _loaded(fmt, member, data)
    largest = 0.0
    for index, (args, expected) in enumerate(member.calls):
        try:
            got = run(args)
        except Exception as e:
            raise ExportError(f'model "{member.name}" ({member.where}): the {fmt} export fails on recorded batch '
                              f'{index + 1} (batch size {_batch_of(args)}): {_reason(e)}') from e
        largest = max(largest, _difference(member, expected, got))
    if not largest <= TOLERANCE[fmt]:
        raise ExportError(f'model "{member.name}" ({member.where}): the {fmt} export differs from the pipeline by up '
                          f'to {largest:.3g} (tolerance {TOLERANCE[fmt]:g}); nothing was written')
    return largest


def _loaded(fmt, member, data):
    if fmt == 'safetensors':
        from safetensors.torch import load
        restored = copy.deepcopy(member.model)
        restored.load_state_dict(load(data))
        entry = Member(member.name, restored, member.inputs, member.outputs, member.where).entry().eval()
        return lambda args: _no_grad(entry, args)
    if fmt == 'torch-export':
        module = torch.export.load(io.BytesIO(data)).module()
        return lambda args: _no_grad(module, args)
    import onnxruntime
    session = onnxruntime.InferenceSession(data, providers=['CPUExecutionProvider'])
    names = [i.name for i in session.get_inputs()]

    def run(args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        return [torch.from_numpy(v) for v in session.run(None, {n: t.cpu().numpy() for n, t in zip(names, tensors)})]
    return run


def _no_grad(module, args):
    with torch.no_grad():
        return module(*args)


def _difference(member, expected, got):
    want, have = _leaves(expected), _leaves(got)
    if len(want) != len(have):
        raise ExportError(f'model "{member.name}": the export gives {len(have)} outputs where the model gives '
                          f'{len(want)}')
    largest = 0.0
    for a, b in zip(want, have):
        if not isinstance(a, torch.Tensor):
            continue
        b = torch.as_tensor(b)
        if tuple(a.shape) != tuple(b.shape):
            raise ExportError(f'model "{member.name}": the export gives an output of shape {tuple(b.shape)} where the '
                              f'model gives {tuple(a.shape)}')
        if a.numel():
            a, b = a.detach().double().cpu(), b.detach().double().cpu()
            gap = (a - b).abs()
            gap[torch.isnan(a) & torch.isnan(b)] = 0
            largest = max(largest, float(gap.max()))
    return largest


def _leaves(value):
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _batch_of(args):
    return next((a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.dim()), '?')


# ---- messages ------------------------------------------------------------------------------------

_RAISED_AT = re.compile(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in (\S+)\s*\n\s*(.+)')
_DATA_DEPENDENT = ('GuardOnDataDependentSymNode', 'data-dependent', 'data dependent')


def _untraceable(member, exporter, e):
    """One paragraph: the model, what failed, torch's reason shortened, the line it points at, a hint."""
    text = f'model "{member.name}" ({member.where}) cannot be exported with {exporter}: {_reason(e)}'
    said = ' '.join(f'{type(c).__name__} {c}' for c in _causes(e))
    if any(mark in said for mark in _DATA_DEPENDENT):
        text += ('. Its code branches on the values of its tensors (a loop or an "if" on data, such as decoding '
                 'until every sequence has ended), which one traced graph cannot hold; the loop can be written '
                 'with torch.cond or a fixed number of steps')
    elif 'FakeTensor' in said:
        text += ('. It uses values computed from its inputs\' data as sizes or Python numbers (e.g. sequence '
                 'lengths for pack_padded_sequence), which tracing does not know')
    return text + '. The safetensors format exports its weights whatever its code does (--debug shows torch\'s ' \
                  'whole message)'


def _causes(e):
    """`e` and the exceptions it was raised from (torch.onnx wraps torch.export's error)."""
    chain = [e]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    return chain


def _reason(e):
    """The first line of the innermost exception, and the line of code torch (or the traceback) points at."""
    causes = _causes(e)
    root = causes[-1]
    said = re.sub(r'\x1b\[[0-9;]*m', '', str(root)).strip()
    first = next((line.strip() for line in said.splitlines() if line.strip()), '')
    if len(first) > 240:
        first = first[:237] + '...'
    where = next(filter(None, (_raised_at(str(c)) or _user_line(c) for c in reversed(causes))), None)
    return f'{type(root).__name__}: {first}' + (f' (at {where})' if where else '')


def _raised_at(said):
    match = _RAISED_AT.search(said)
    if not match:
        return None
    path, line, function, code = match.groups()
    return f'{_relative(path)}:{line} in {function}: {code.strip()}'


def _user_line(e) -> Optional[str]:
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', errors.user_frames(e))
    if not frames:
        return None
    path, line, function, code = frames[-1]
    return f'{_relative(path)}:{line} in {function}: {code.strip()}'


def _relative(path):
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative
