"""The four commands (and `check`) as functions: load, validate, build, run. No argument parsing
and no exit codes here; see `torchassistant.cli`."""
import contextlib
import json
import os
import random
import sys
import traceback
from dataclasses import dataclass
from typing import Optional

import torch

from torchassistant.assembly import build as builder
from torchassistant.assembly import inference
from torchassistant.assembly.build import LearnedState
from torchassistant.assembly.probe import DataProbe
from torchassistant.cli import hints
from torchassistant.cli.hints import command_hint
from torchassistant.core import errors
from torchassistant.core.errors import UsageError
from torchassistant.core.hints import Hint
from torchassistant.report.loggers import LOGGERS
from torchassistant.report.progress import ConsoleProgress, format_metrics
from torchassistant.run import distributed, trainer
from torchassistant.run.data import settled_for_workers
from torchassistant.run.device import choose_device, choose_precision
from torchassistant.run.events import Events
from torchassistant.run.meters import Meters
from torchassistant.run.step import Precision, TrainStep
from torchassistant.session import checkpoint
from torchassistant.session.store import SPEC, SPEC_YAML, SessionStore
from torchassistant.spec import concise, loader, rules, validate
from torchassistant.spec import overrides as spec_overrides
from torchassistant.spec.merge import MergeError, merged_document


def load_spec(path, kind, overrides=()):
    """Parse and validate a spec file of `kind` (JSON or YAML) with `overrides` (--set arguments)
    applied; SpecError lists every problem, an overridden value located at its --set argument."""
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
    if overrides:
        document = spec_overrides.apply_overrides(document, overrides)
    validate.raise_for_problems(validate.check(document, kind), path)
    return document


# ---- init ----------------------------------------------------------------------------------------

def init(spec_path, overwrite=False, stream=None, overrides=()):
    document = load_spec(spec_path, 'training', overrides)
    session_dir = document.data['session_dir']
    try:
        SessionStore.check_target(session_dir, overwrite)    # before anything slow is built
    except UsageError as e:
        raise UsageError(f'{document.describe(("session_dir",))}: {e.message}') from None
    learned = LearnedState(document.data.get('seed'))
    seed_all(learned.seed)
    document = concise.prepare(document, DataProbe(learned), stream)      # fills in a concise spec; keeps the given text
    entities = builder.build(document, learned, choose_device(spec_value=document.data.get('device'),
                                                              where=document.describe(('device',))))
    builder.build_stages(document, entities)
    state = checkpoint.capture(entities, checkpoint.Progress())
    expanded = json.dumps(document.data, indent=4) + '\n' if getattr(document, 'expansion', None) else None
    store = SessionStore.create(session_dir, document.text, learned.state_dict(), state, overwrite=overwrite,
                                expanded_text=expanded, spec_name=_spec_name(spec_path),
                                records=_override_records(overrides))
    given = 'given in the spec' if 'seed' in document.data else f'drawn; add "seed": {learned.seed} to the spec to repeat it'
    print(f'Seed {learned.seed} ({given})', file=stream)
    print(f'Created training session "{store.path}" (epoch 0 checkpoint saved). '
          f'Start training with: {command_hint("train", store.path)}', file=stream)
    return store


def _spec_name(spec_path):
    """A session keeps its spec as it was given: spec.yaml for a YAML spec."""
    return SPEC_YAML if str(spec_path).lower().endswith(loader.YAML_SUFFIXES) else SPEC


def _override_records(overrides, train=()):
    if not overrides and not train:
        return None
    return {'overrides.json': {'init': spec_overrides.to_plain(overrides), 'train': list(train)}}


def seed_all(seed):
    """Seed every generator that building models or drawing data may use."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
        numpy.random.seed(seed % 2 ** 32)
    except ImportError:
        pass


def check(spec_path, stream=None, debug=False, expanded=False, overrides=()):
    """Validate, build, and run one batch through every pipeline (forward, losses, metrics; no
    optimizer step). Writes nothing. Returns True when every pipeline is OK. With `debug`, a
    failing pipeline's traceback goes to stderr too. With `expanded`, print only the complete
    explicit spec (JSON) a concise spec is filled in to, and what was filled in to stderr."""
    stream = stream or sys.stdout
    document = load_spec(spec_path, 'training', overrides)
    learned = LearnedState(seed=document.data.get('seed', 0))
    seed_all(learned.seed)      # as init does: the check draws the weights and batches init would
    if expanded:
        document = concise.prepare(document, DataProbe(learned), sys.stderr)
        print(json.dumps(document.data, indent=4), file=stream)
        return True
    document = concise.prepare(document, DataProbe(learned), stream)     # a concise spec is whole (and checked) only now
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

def missing_session(spec_document, session_dir):
    """The error for an evaluation/inference spec whose session_dir is not there. session_dir is
    relative to the current folder (as in the training spec); when the spec file is elsewhere, the
    message says both places, and whether the session is there relative to the spec file."""
    where = spec_document.describe(('session_dir',))
    spec_folder = os.path.dirname(spec_document.source)
    if os.path.isabs(session_dir) or os.path.abspath(spec_folder) == os.getcwd():
        return UsageError(f'{where}: session folder "{session_dir}" does not exist; create it with: ',
                          Hint('init', 'SPEC.json'))
    text = (f'{where}: session folder "{session_dir}" does not exist in the current folder ({os.getcwd()}): '
            f'session_dir is relative to the folder the command runs in, not to the folder of the spec file '
            f'("{spec_folder}")')
    beside = os.path.join(spec_folder, session_dir)
    if os.path.isdir(beside):
        return UsageError(f'{text}. It does exist relative to the spec file, as "{os.path.normpath(beside)}": run '
                          f'the command from "{spec_folder}", or set "session_dir": '
                          f'"{os.path.normpath(beside)}" in the spec')
    return UsageError(f'{text}; it is not there either. Create it with: ', Hint('init', 'SPEC.json'))


class Opened:
    """A session's spec built with its learned state and latest weights, and where it runs."""

    def __init__(self, store, document, entities, epoch, state, device, precision):
        self.store, self.document, self.entities, self.epoch, self.state = store, document, entities, epoch, state
        self.device, self.precision = device, precision


def open_session(session_dir, spec_document=None, options=None, world=None, only=None, checkpoint_option=None):
    """Open the session; `spec_document` is the evaluation or inference spec that named it, whose
    `initialize` overrides (if any) are merged into the session's training spec for this run.
    `options`: the command line's RunOptions (device, precision); `world`: the processes torchrun
    started (a distributed.World: their process group is made here, before the loaders are sharded);
    `only`: build just these pipelines and what they reach (inference); or a function of the filled-in
    training spec's document that names them. `checkpoint_option`: a command line's --checkpoint
    ("latest", "best" or an epoch), which overrides the spec's "checkpoint"."""
    options = options or RunOptions()
    try:
        store = SessionStore.open(session_dir)
    except UsageError as e:
        if spec_document is None:
            raise
        if not os.path.exists(session_dir):
            raise missing_session(spec_document, session_dir) from None
        raise UsageError(f'{spec_document.describe(("session_dir",))}: ', *e.parts) from None
    if store.require_unchanged_spec() is None:      # the spec decides what code runs: not changed unasked
        notice(f'session "{store.path}" records no digest of its spec (made before they were recorded); record one '
               f'with: {command_hint("trust", store.path)}')
    document = loader.load_file(store.spec_file())
    if store.overrides('init'):
        document = spec_overrides.apply_overrides(document, store.overrides('init'))
    if spec_document is not None and 'initialize' in spec_document.data:
        try:
            document = merged_document(document, spec_document)
        except MergeError as e:
            raise errors.SpecError(spec_document.source, [spec_document.problem(e.path, str(e))]) from None
    validate.raise_for_problems(validate.check_training(document), document.source)
    learned = LearnedState.from_state_dict(store.learned_state())
    overridden = spec_document is not None and 'initialize' in spec_document.data
    document = concise.prepare(document, DataProbe(learned), quiet=True)     # restores, never refits or redraws
    stored = store.expanded_spec()
    if stored is not None and not overridden:
        drift = concise.drift(stored, document.data)
        if drift:
            raise UsageError(f'session "{store.path}" was filled in differently at init than its data fills it in '
                             f'now (has the data changed?): ' + '; '.join(drift[:5])
                             + (f' [and {len(drift) - 5} more]' if len(drift) > 5 else '')
                             + f'. The expansion made at init is {os.path.join(store.path, "expanded.json")}')
    if store.overrides('train'):          # train --set: on the spec training runs (a concise one filled in)
        document = spec_overrides.apply_overrides(document, store.overrides('train'))
    which = spec_document.data.get('checkpoint', 'latest') if spec_document is not None else 'latest'
    if checkpoint_option is not None:
        which = checkpoint_option
    if which == 'latest':
        (epoch, _), state = store.latest_checkpoint(notice, checkpoint.problem)   # batch > 0: a mid-epoch one
    else:
        try:
            state = store.checkpoint(which, notice, checkpoint.problem)   # evaluate/infer: "best" or an epoch
        except UsageError as e:
            given = '--checkpoint' if checkpoint_option is not None else spec_document.describe(("checkpoint",))
            raise UsageError(f'{given}: {e.message}') from None
        epoch = state['progress']['epoch']
    spec = spec_document or document
    device = choose_device(options.device, spec.data.get('device') or document.data.get('device'),
                           where=spec.describe(('device',)) if 'device' in spec.data else document.describe(('device',)))
    if world is not None:
        device = world.start(device)
    precision = Precision(choose_precision(options.precision, spec.data.get('precision')
                                           or document.data.get('precision')), device)
    entities = builder.build(document, learned, device, only(document) if callable(only) else only)
    if document.data.get('compile'):
        compile_models(entities, options.stream)
    return Opened(store, document, entities, epoch, state, device, precision)


def notice(text):
    """A fallback or repair the user should know of (an older checkpoint used instead of a damaged one)."""
    print(f'notice: {text}', file=sys.stderr, flush=True)


@dataclass
class RunOptions:
    """What the command line says about running: device and precision (override the spec), quiet."""
    device: Optional[str] = None
    precision: Optional[str] = None
    quiet: bool = False
    stream: object = None
    listeners: tuple = ()       # more event listeners (e.g. a sweep's trial reporter)


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

def train(session_dir, stream=None, options=None, overrides=()):
    """Train the session (resuming where it stands). `overrides`: --set arguments for what does not
    change what init built (stop conditions' arguments, train options); they are recorded in the
    session, and a finished stage whose stop condition now says go on is trained on."""
    world = distributed.World.from_environment()      # torchrun's processes; rank 0 writes the session
    if overrides and world.size > 1:
        raise UsageError('train --set under torchrun: record the change first without torchrun, e.g. with '
                         f'{command_hint("train", session_dir, "--set", "...")} stopped at once (Ctrl+C), then '
                         'train under torchrun')
    lock = SessionStore.open(session_dir).lock(command_hint('train', session_dir), stream, job=world.job()) \
        if world.is_main else contextlib.nullcontext()     # job: torchrun's, whose restarted groups take it over
    with lock, world.failures():     # one trainer per session; a lost process: a clear error
        if overrides:
            record_train_overrides(SessionStore.open(session_dir), overrides)
        return _train(session_dir, stream, options, world)


def record_train_overrides(store, overrides):
    """Check `overrides` for `train SESSION --set` and add them to the session's overrides.json: only
    paths that leave what init built as it was, and no stage that is already finished but the last."""
    base = training_document(store)
    parsed = spec_overrides.parse_overrides(overrides)
    building = spec_overrides.paths_that_change_build(parsed, base.data)
    if building:
        shown = '; '.join(f'{o} sets {loader.format_path(path)}' for o, path in building)
        raise UsageError(f'{shown}: that changes what init built from the spec (its definitions, data or '
                         f'pipelines), which a trained session cannot take. Make a new session with the change: ',
                         Hint('init', '--set', parsed[0].text, 'SPEC.json'))
    changed = spec_overrides.apply_overrides(base, parsed)
    validate.raise_for_problems(validate.check_training(changed), changed.source)
    (_, _), state = store.latest_checkpoint()
    done = state['progress']['stage'] if isinstance(state.get('progress'), dict) else 0
    stages = len(changed.data.get('train', {}).get('stages', []))
    for override, path in changed.applied:
        if len(path) > 2 and path[:2] == ('train', 'stages') and isinstance(path[2], int) \
                and path[2] < min(done, stages - 1):
            raise UsageError(f'{override}: stage {path[2]} is finished and later stages trained after it, so '
                             f'its stop condition can no longer change the result; make a new session: ',
                             Hint('init', '--set', override.text, 'SPEC.json'))
    record = store.read_record('overrides.json', {}) or {}
    store.write_record('overrides.json', {'init': record.get('init', []),
                                          'train': record.get('train', []) + spec_overrides.to_plain(parsed)})


def training_document(store):
    """The spec training runs, as a Document, without building: the spec as given with init's overrides
    (for a concise spec, the explicit one it was filled in to at init), then train's overrides."""
    if store.expanded_spec() is not None:
        document = loader.load_file(os.path.join(store.path, 'expanded.json'))
    else:
        document = loader.load_file(store.spec_file())
        if store.overrides('init'):
            document = spec_overrides.apply_overrides(document, store.overrides('init'))
    if store.overrides('train'):
        document = spec_overrides.apply_overrides(document, store.overrides('train'))
    return document


def reopen_finished_stage(progress, stages):
    """A finished session whose last stage's stop condition (changed by --set) says go on: that stage
    is trained on from its last epoch, exactly as if the condition had said so then."""
    if progress.stage < len(stages) or not stages:
        return progress
    last = stages[-1]
    history = progress.history.get(last.index, [])
    if history and not errors.call_user_code(f'{last.where}: the stop condition failed', last.stop_condition,
                                             len(history), history):
        progress.stage, progress.stage_epoch = len(stages) - 1, len(history)
    return progress


def _train(session_dir, stream=None, options=None, world=None):
    options = options or RunOptions(stream=stream)
    world = world or distributed.World()
    session = open_session(session_dir, options=options, world=world)
    stages = builder.build_stages(session.document, session.entities)
    settings = session.document.data['train']
    session.store.set_retention(settings.get('keep_checkpoints', rules.KEEP_CHECKPOINTS), settings.get('best_metric'))
    if world.is_main:
        session.store.repair_best(stream)       # what a crash left of best.pt, completed
    step = TrainStep(session.precision, settings.get('accumulate', 1), settings.get('clip_grad_norm'),
                     settings.get('non_finite', 'stop'), across_processes=world.size > 1)
    progress = reopen_finished_stage(checkpoint.restore(session.entities, session.state, step), stages)
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
    every, stop = world.agreed(trainer.CheckpointEvery(**settings.get('checkpoint_every', rules.CHECKPOINT_EVERY)),
                               trainer.StopRequest())
    run = trainer.Trainer(session.entities, stages, session.store, step, Events([*listeners, *options.listeners]),
                          every, stop, world)
    with run.stop, settled_for_workers(session.entities.data_loaders.values()):
        progress = run.run(progress, checkpoint.epoch_state(session.state))
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


def open_inference(document, options=None, checkpoint_option=None):
    """(the opened session, an inference.Inference) for the inference spec `document`: its pipeline and
    what it reaches built with the checkpoint's weights (`checkpoint_option`: a command line's
    --checkpoint, which overrides the spec's "checkpoint"). Used by infer, export and serve."""
    spec = document.data
    if 'inference_pipeline' in spec:
        session = open_session(spec['session_dir'], document, options, only=[spec['inference_pipeline']],
                               checkpoint_option=checkpoint_option)
        pipeline, = _pipelines(document, session, 'inference_pipeline', [spec['inference_pipeline']])
    else:       # as in the original: the session's first pipeline
        session = open_session(spec['session_dir'], document, options, only=first_pipeline,
                               checkpoint_option=checkpoint_option)
        pipeline = session.entities.pipelines[first_pipeline(session.document)[0]]
    checkpoint.restore_weights(session.entities, session.state)
    return session, inference.Inference(spec, document, session.entities, pipeline, session.precision)


def _infer(spec_path, inputs, from_file, json_out, options):
    document = load_spec(spec_path, 'inference')
    if not inputs and from_file is None:
        raise UsageError(f'{command_hint("infer")} needs at least one input after the spec, or --from FILE; '
                         f'e.g. {command_hint("infer", spec_path, "digit.png")}')
    if inputs and from_file is not None:
        raise UsageError(f'inputs were given both after the spec ({len(inputs)}) and in --from {from_file}; '
                         f'give them one way')
    with _input_lines(from_file) as lines:
        session, runner = open_inference(document, options)
        if lines is None:
            batches = [runner.examples_from_argv(inputs)]
        else:
            source = '<stdin>' if from_file == '-' else from_file
            batches = inference.batched(runner.examples_from_lines(_text(lines, source), source), runner.batch_size())
        return inference.run(runner, batches, json_out)


def first_pipeline(document):
    """[the name of the first pipeline of a (filled-in) training spec]."""
    return list(document.data['initialize']['pipelines'])[:1]


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


def _text(lines, source):
    """The lines of --from as they are read; a file that is not UTF-8 text (an image given as --from) is a
    UsageError naming it."""
    number, bad = 0, None
    try:
        for line in lines:
            try:
                line.encode('utf-8')      # standard input decodes bytes that are not UTF-8 as lone surrogates
            except UnicodeEncodeError as e:
                bad = ord(line[e.start]) - 0xdc00
                break
            yield line
            number += 1
    except UnicodeDecodeError as e:
        bad = e.object[e.start]
    if bad is not None:
        where = 'it' if number == 0 else f'what follows line {number}'
        raise UsageError(f'--from {source}: {where} is not text (byte 0x{bad:02x} is not UTF-8); --from takes a '
                         f'text file with one input per line, such as the paths of image files, not an input itself')


# ---- status and plot -----------------------------------------------------------------------------

def status(session_dir, as_json=False, stream=None):
    """Print where the session stands (reads its files only, runs no user code); returns the status."""
    from torchassistant.report import status as session_status
    report = session_status.read(session_dir)
    print(session_status.to_json(report) if as_json else session_status.describe(report, hints.prefix_of), file=stream)
    return report


def trust(session_dir, stream=None):
    """Show what code the session's spec runs and accept its spec files as they are now: train,
    evaluate and infer then use it again (reads the spec only, runs no user code); returns the status."""
    from torchassistant.report import status as session_status
    report = session_status.read(session_dir)
    store = SessionStore.open(session_dir)
    lines = session_status.describe_code(report, hints.prefix_of)[:-1]
    was = 'no digest recorded' if report.spec_changed is None else \
        f'changed since recorded: {", ".join(report.spec_changed)}' if report.spec_changed else 'unchanged'
    store.accept_spec()
    lines.append(f'  spec: {was}; accepted as it is now (recorded in {os.path.join(store.path, "session.json")})')
    print('\n'.join(lines), file=stream)
    return report


def plot(session_dir, out_dir=None, stream=None):
    """Write learning-curve PNGs, one per stage; returns their paths."""
    from torchassistant.report import plots  # matplotlib: imported only when plotting
    paths = plots.write(session_dir, out_dir)
    for path in paths:
        print(f'wrote {path}', file=stream)
    return paths
