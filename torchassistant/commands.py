"""The four commands (and `check`) as functions: load, validate, build, run. No argument parsing
and no exit codes here; see `torchassistant.cli`."""
import contextlib
import json
import os
import random
import sys
import traceback

from dataclasses import dataclass

import torch

from torchassistant import build as builder
from torchassistant import checkpoint, distributed, errors, inference, trainer
from torchassistant.build import LearnedState
from torchassistant.data import settled_for_workers
from torchassistant.cli import command_hint
from torchassistant.device import choose_device, choose_precision
from torchassistant.events import Events
from torchassistant.loggers import LOGGERS
from torchassistant.progress import ConsoleProgress
from torchassistant.step import Precision, TrainStep
from torchassistant.errors import UsageError
from torchassistant.pipeline import Meters
from torchassistant.progress import format_metrics
from torchassistant.spec import concise, loader, validate
from torchassistant.spec.merge import MergeError, merged_document
from torchassistant.store import SessionStore


def load_spec(path, kind):
    """Parse and validate a spec file of `kind`; SpecError lists every problem."""
    path = os.fspath(path)
    if os.path.isdir(path):
        hint = f' (a session folder is what "{command_hint("train")}" takes; this command takes a spec file)' \
            if os.path.isfile(os.path.join(path, 'session.json')) else ''
        raise UsageError(f'"{path}" is a folder; expected the {kind} spec file (.json){hint}')
    if not os.path.isfile(path):
        raise UsageError(f'{kind} spec "{path}" does not exist')
    document = loader.load_file(path)
    if not isinstance(document.data, dict):
        raise errors.SpecError(path, [document.problem((), 'a spec must be a JSON object {...}')])
    validate.raise_for_problems(validate.check(document, kind), path)
    return document


# ---- init ----------------------------------------------------------------------------------------

def init(spec_path, overwrite=False, stream=None):
    document = load_spec(spec_path, 'training')
    session_dir = document.data['session_dir']
    try:
        SessionStore.check_target(session_dir, overwrite)    # before anything slow is built
    except UsageError as e:
        raise UsageError(f'{document.describe(("session_dir",))}: {e.message}') from None
    learned = LearnedState(document.data.get('seed'))
    seed_all(learned.seed)
    document = concise.prepare(document, learned, stream)      # fills in a concise spec; keeps the given text
    entities = builder.build(document, learned, choose_device(spec_value=document.data.get('device'),
                                                              where=document.describe(('device',))))
    builder.build_stages(document, entities)
    state = checkpoint.capture(entities, checkpoint.Progress())
    expanded = json.dumps(document.data, indent=4) + '\n' if getattr(document, 'expansion', None) else None
    store = SessionStore.create(session_dir, document.text, learned.state_dict(), state, overwrite=overwrite,
                                expanded_text=expanded)
    given = 'given in the spec' if 'seed' in document.data else f'drawn; add "seed": {learned.seed} to the spec to repeat it'
    print(f'Seed {learned.seed} ({given})', file=stream)
    print(f'Created training session "{store.path}" (epoch 0 checkpoint saved). '
          f'Start training with: {command_hint("train", store.path)}', file=stream)
    return store


def seed_all(seed):
    """Seed every generator that building models or drawing data may use."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
        numpy.random.seed(seed % 2 ** 32)
    except ImportError:
        pass


def check(spec_path, stream=None, debug=False, expanded=False):
    """Validate, build, and run one batch through every pipeline (forward, losses, metrics; no
    optimizer step). Writes nothing. Returns True when every pipeline is OK. With `debug`, a
    failing pipeline's traceback goes to stderr too. With `expanded`, print only the complete
    explicit spec (JSON) a concise spec is filled in to, and what was filled in to stderr."""
    stream = stream or sys.stdout
    document = load_spec(spec_path, 'training')
    learned = LearnedState(seed=document.data.get('seed', 0))
    if expanded:
        document = concise.prepare(document, learned, sys.stderr)
        print(json.dumps(document.data, indent=4), file=stream)
        return True
    document = concise.prepare(document, learned, stream)     # a concise spec is whole (and checked) only now
    print(f'{spec_path}: spec is valid', file=stream)
    entities = builder.build(document, learned, choose_device(spec_value=document.data.get('device'),
                                                                           where=document.describe(('device',))))
    builder.build_stages(document, entities)
    print(f'{spec_path}: all {len(document.data["initialize"]["definitions"])} definitions built', file=stream)
    ok = True
    for name, pipeline in entities.pipelines.items():
        try:
            with torch.inference_mode(), trainer.step_errors(pipeline, 'the check'):
                meters = Meters(pipeline)
                pipeline.train(False)
                frames = next(pipeline.batches(1), None)
                if frames is None:
                    raise UsageError(f'pipeline "{name}": its data loaders yield no batch')
                pipeline.eval_step(frames, meters)
                values = meters.values()
            print(f'pipeline "{name}": OK {format_metrics(values)}', file=stream)
        except errors.TorchAssistantError as e:
            ok = False
            if debug:
                traceback.print_exc()
            print(f'pipeline "{name}": FAILED\n  {e.message}', file=stream)
    return ok


# ---- opening a session ---------------------------------------------------------------------------

class Opened:
    """A session's spec built with its learned state and latest weights, and where it runs."""

    def __init__(self, store, document, entities, epoch, state, device, precision):
        self.store, self.document, self.entities, self.epoch, self.state = store, document, entities, epoch, state
        self.device, self.precision = device, precision


def open_session(session_dir, spec_document=None, options=None, world=None, only=None):
    """Open the session; `spec_document` is the evaluation or inference spec that named it, whose
    `initialize` overrides (if any) are merged into the session's training spec for this run.
    `options`: the command line's RunOptions (device, precision); `world`: the processes torchrun
    started (a distributed.World: their process group is made here, before the loaders are sharded);
    `only`: build just these pipelines and what they reach (inference)."""
    options = options or RunOptions()
    try:
        store = SessionStore.open(session_dir)
    except UsageError as e:
        if spec_document is None:
            raise
        raise UsageError(f'{spec_document.describe(("session_dir",))}: {e.message}') from None
    document = loader.load_file(store.spec_file())
    if spec_document is not None and 'initialize' in spec_document.data:
        try:
            document = merged_document(document, spec_document)
        except MergeError as e:
            raise errors.SpecError(spec_document.source, [spec_document.problem(e.path, str(e))]) from None
    validate.raise_for_problems(validate.check_training(document), document.source)
    learned = LearnedState.from_state_dict(store.learned_state())
    overridden = spec_document is not None and 'initialize' in spec_document.data
    document = concise.prepare(document, learned, quiet=True)     # restores, never refits or redraws
    stored = store.expanded_spec()
    if stored is not None and not overridden:
        drift = concise.drift(stored, document.data)
        if drift:
            raise UsageError(f'session "{store.path}" was filled in differently at init than its data fills it in '
                             f'now (has the data changed?): ' + '; '.join(drift[:5])
                             + (f' [and {len(drift) - 5} more]' if len(drift) > 5 else '')
                             + f'. The expansion made at init is {os.path.join(store.path, "expanded.json")}')
    which = spec_document.data.get('checkpoint', 'latest') if spec_document is not None else 'latest'
    if which == 'latest':
        (epoch, _), state = store.latest_checkpoint()      # (epoch, batch): batch > 0 for a mid-epoch checkpoint
    else:
        try:
            state = store.checkpoint(which)              # evaluate/infer: "best" or an epoch's checkpoint
        except UsageError as e:
            raise UsageError(f'{spec_document.describe(("checkpoint",))}: {e.message}') from None
        epoch = state['progress']['epoch']
    spec = spec_document or document
    device = choose_device(options.device, spec.data.get('device') or document.data.get('device'),
                           where=spec.describe(('device',)) if 'device' in spec.data else document.describe(('device',)))
    if world is not None:
        device = world.start(device)
    precision = Precision(choose_precision(options.precision, spec.data.get('precision')
                                           or document.data.get('precision')), device)
    entities = builder.build(document, learned, device, only)
    if document.data.get('compile'):
        compile_models(entities, options.stream)
    return Opened(store, document, entities, epoch, state, device, precision)


@dataclass
class RunOptions:
    """What the command line says about running: device and precision (override the spec), quiet."""
    device: str = None
    precision: str = None
    quiet: bool = False
    stream: object = None


def compile_models(entities, stream=None):
    """torch.compile every model in place (state_dict keys stay as they are, so checkpoints load
    without compile); where the platform cannot compile, models run eagerly, with a message."""
    import torch._dynamo
    torch._dynamo.config.suppress_errors = True      # a failing compile falls back to eager, per graph
    failed = []
    for name, model in entities.models.items():
        try:
            model.compile()
        except Exception as e:          # e.g. a platform torch.compile does not support
            failed.append(f'{name} ({type(e).__name__}: {e})')
    if failed:
        print(f'torch.compile is not available here; running eagerly: {", ".join(failed)}', file=stream)


# ---- train ---------------------------------------------------------------------------------------

def train(session_dir, stream=None, options=None):
    world = distributed.World.from_environment()      # torchrun's processes; rank 0 writes the session
    lock = SessionStore.open(session_dir).lock(command_hint('train', session_dir), stream) if world.is_main \
        else contextlib.nullcontext()
    with lock, world.failures():     # one trainer per session; a lost process: a clear error
        return _train(session_dir, stream, options, world)


def _train(session_dir, stream=None, options=None, world=None):
    options = options or RunOptions(stream=stream)
    world = world or distributed.World()
    session = open_session(session_dir, options=options, world=world)
    stages = builder.build_stages(session.document, session.entities)
    settings = session.document.data['train']
    session.store.set_retention(settings.get('keep_checkpoints', 3), settings.get('best_metric'))
    step = TrainStep(session.precision, settings.get('accumulate', 1), settings.get('clip_grad_norm'),
                     settings.get('non_finite', 'stop'), across_processes=world.size > 1)
    progress = checkpoint.restore(session.entities, session.state, step)
    world.check_same_checkpoint(progress, session.store.path)
    world.replicate(stages, session.entities)
    if progress.stage >= len(stages):
        if world.is_main:
            print(f'Training is complete: all {len(stages)} stage(s) of "{session.store.path}" are finished '
                  f'({progress.epoch} epochs). Nothing to do.', file=stream)
        return progress
    if not options.quiet and world.is_main:
        print(f'Training on {describe_device(session.device)}{world.describe()}, precision {session.precision.name}',
              file=stream)
        if progress.epoch or progress.batch:
            where = f' and {progress.batch} batches of the next' if progress.batch else ''
            print(f'Resuming "{session.store.path}" after epoch {progress.epoch}{where}', file=stream)
    listeners = []
    if world.is_main:      # one console, one writer of the session
        listeners = [ConsoleProgress(stream, quiet=options.quiet, best_metric=settings.get('best_metric'))]
        wanted = set(settings.get('loggers', ['csv'])) | ({'csv'} if 'plots' in settings.get('loggers', []) else set())
        listeners += [make(session.store, session.entities) for name, make in LOGGERS.items() if name in wanted]
    every, stop = world.agreed(trainer.CheckpointEvery(**settings.get('checkpoint_every', {'minutes': 10})),
                               trainer.StopRequest())
    run = trainer.Trainer(session.entities, stages, session.store, step, Events(listeners),
                          every, stop, world)
    with run.stop, settled_for_workers(session.entities.data_loaders.values()):
        progress = run.run(progress, session.state.get('epoch_state'))
    if step.skipped and world.is_main:
        print(f'  {step.skipped} batch(es) with a non-finite loss were skipped in this run (non_finite: "skip")',
              file=stream)
    return progress


def describe_device(device):
    if device.type == 'cuda':
        import torch.cuda
        return f'{device} ({torch.cuda.get_device_name(device)})'
    return str(device)


# ---- evaluate ------------------------------------------------------------------------------------

def evaluate(spec_path, stream=None, options=None):
    document = load_spec(spec_path, 'evaluation')
    spec = document.data
    world = distributed.World.from_environment()     # under torchrun: each process evaluates its share
    session = open_session(spec['session_dir'], document, options, world)
    pipelines = _pipelines(document, session, 'validation_pipelines', spec['validation_pipelines'])
    checkpoint.restore_weights(session.entities, session.state)
    with settled_for_workers(session.entities.data_loaders.values()):
        row = trainer.run_pipelines(pipelines, spec.get('eval_steps', 1.0), 'evaluation', session.precision)
    if world.is_main:
        print(format_metrics(row), file=stream)
    return row


def _pipelines(document, session, key, names):
    """The pipelines `names` listed at `key` of `document` (a list, or one name as a string)."""
    known = list(session.document.data['initialize']['pipelines'])    # infer builds only the one it runs
    at = (lambda i: (key, i)) if isinstance(document.data[key], list) else (lambda i: (key,))
    problems = [document.problem(at(i), f'session "{session.store.path}" has no pipeline "{name}"'
                                 + validate.resolve.suggest(name, known) + f'; its pipelines: {", ".join(known)}')
                for i, name in enumerate(names) if name not in known]
    validate.raise_for_problems(problems, document.source)
    return [session.entities.pipelines[name] for name in names]


# ---- infer ---------------------------------------------------------------------------------------

def infer(spec_path, inputs, json_lines=False, from_file=None, options=None):
    """Predictions on raw inputs: the command line's (one batch) or the lines of `from_file` ("-":
    standard input) in batches of the data loader's batch size, each batch's results printed as it
    finishes. With `json_lines`, stdout gets one JSON object per example and nothing else: whatever
    else is printed (user code included) goes to stderr. Returns the number of examples."""
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr) if json_lines else contextlib.nullcontext():
        return _infer(spec_path, inputs, from_file, out if json_lines else None, options)


def _infer(spec_path, inputs, from_file, json_out, options):
    document = load_spec(spec_path, 'inference')
    spec = document.data
    if not inputs and from_file is None:
        raise UsageError(f'{command_hint("infer")} needs at least one input after the spec, or --from FILE; '
                         f'e.g. {command_hint("infer", spec_path, "digit.png")}')
    if inputs and from_file is not None:
        raise UsageError(f'inputs were given both after the spec ({len(inputs)}) and in --from {from_file}; '
                         f'give them one way')
    with _input_lines(from_file) as lines:
        session = open_session(spec['session_dir'], document, options, only=[spec['inference_pipeline']])
        pipeline, = _pipelines(document, session, 'inference_pipeline', [spec['inference_pipeline']])
        checkpoint.restore_weights(session.entities, session.state)
        runner = inference.Inference(spec, document, session.entities, pipeline)
        if lines is None:
            batches = [runner.examples_from_argv(inputs)]
        else:
            source = '<stdin>' if from_file == '-' else from_file
            batches = inference.batched(runner.examples_from_lines(lines, source), runner.batch_size())
        return inference.run(runner, batches, json_out)


def _input_lines(from_file):
    """A context giving the lines of --from FILE (standard input for "-"), or None without it."""
    if from_file is None or from_file == '-':
        return contextlib.nullcontext(None if from_file is None else sys.stdin)
    if os.path.isdir(from_file):
        raise UsageError(f'--from {from_file}: that is a folder; expected a text file with one input per line')
    try:
        return open(from_file, encoding='utf-8')
    except OSError as e:
        raise UsageError(f'--from {from_file}: cannot read it ({e.strerror}); expected a text file with one '
                         f'input per line') from None


# ---- status and plot -----------------------------------------------------------------------------

def status(session_dir, as_json=False, stream=None):
    """Print where the session stands (reads its files only, runs no user code); returns the status."""
    from torchassistant import status as session_status
    report = session_status.read(session_dir)
    print(session_status.to_json(report) if as_json else session_status.describe(report), file=stream)
    return report


def plot(session_dir, out_dir=None, stream=None):
    """Write learning-curve PNGs, one per stage; returns their paths."""
    from torchassistant import plots     # matplotlib: imported only when plotting
    paths = plots.write(session_dir, out_dir)
    for path in paths:
        print(f'wrote {path}', file=stream)
    return paths
