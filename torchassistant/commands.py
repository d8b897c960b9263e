"""The four commands (and `check`) as functions: load, validate, build, run. No argument parsing
and no exit codes here; see `torchassistant.cli`."""
import os
import sys

import torch

from torchassistant import build as builder
from torchassistant import checkpoint, errors, inference, trainer
from torchassistant.build import LearnedState
from torchassistant.device import choose_device
from torchassistant.errors import UsageError
from torchassistant.pipeline import Meters
from torchassistant.progress import format_metrics
from torchassistant.spec import loader, validate
from torchassistant.spec.merge import MergeError, merged_document
from torchassistant.store import SessionStore


def load_spec(path, kind):
    """Parse and validate a spec file of `kind`; SpecError lists every problem."""
    path = os.fspath(path)
    if os.path.isdir(path):
        hint = ' (that is the form train.py takes; this command takes a spec file)' \
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
    learned = LearnedState()
    torch.manual_seed(learned.seed)
    entities = builder.build(document, learned, choose_device())
    trainer.build_stages(document, entities)
    state = checkpoint.capture(entities, checkpoint.Progress())
    store = SessionStore.create(session_dir, document.text, learned.state_dict(), state, overwrite=overwrite)
    print(f'Created training session "{store.path}" (epoch 0 checkpoint saved). '
          f'Start training with: python train.py {store.path}', file=stream)
    return store


def check(spec_path, stream=None):
    """Validate, build, and run one batch through every pipeline (forward, losses, metrics; no
    optimizer step). Writes nothing. Returns True when every pipeline is OK."""
    stream = stream or sys.stdout
    document = load_spec(spec_path, 'training')
    print(f'{spec_path}: spec is valid', file=stream)
    entities = builder.build(document, LearnedState(seed=0), choose_device())
    trainer.build_stages(document, entities)
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
            print(f'pipeline "{name}": FAILED\n  {e.message}', file=stream)
    return ok


# ---- opening a session ---------------------------------------------------------------------------

class Opened:
    """A session's spec built with its learned state and latest weights."""

    def __init__(self, store, document, entities, epoch, state):
        self.store, self.document, self.entities, self.epoch, self.state = store, document, entities, epoch, state


def open_session(session_dir, spec_document=None):
    """Open the session; `spec_document` is the evaluation or inference spec that named it, whose
    `initialize` overrides (if any) are merged into the session's training spec for this run."""
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
    epoch, state = store.latest_checkpoint()
    entities = builder.build(document, learned, choose_device())
    return Opened(store, document, entities, epoch, state)


# ---- train ---------------------------------------------------------------------------------------

def train(session_dir, stream=None):
    session = open_session(session_dir)
    stages = trainer.build_stages(session.document, session.entities)
    progress = checkpoint.restore(session.entities, session.state)
    if progress.stage >= len(stages):
        print(f'Training is complete: all {len(stages)} stage(s) of "{session.store.path}" are finished '
              f'({progress.epoch} epochs). Nothing to do.', file=stream)
        return progress
    if progress.epoch:
        print(f'Resuming "{session.store.path}" after epoch {progress.epoch}', file=stream)
    return trainer.Trainer(session.entities, stages, session.store, stream).run(progress)


# ---- evaluate ------------------------------------------------------------------------------------

def evaluate(spec_path, stream=None):
    document = load_spec(spec_path, 'evaluation')
    spec = document.data
    session = open_session(spec['session_dir'], document)
    pipelines = _pipelines(document, session, 'validation_pipelines', spec['validation_pipelines'])
    checkpoint.restore_weights(session.entities, session.state)
    row = trainer.run_pipelines(pipelines, spec.get('eval_steps', 1.0), 'evaluation')
    print(format_metrics(row), file=stream)
    return row


def _pipelines(document, session, key, names):
    """The pipelines `names` listed at `key` of `document` (a list, or one name as a string)."""
    known = session.entities.pipelines
    at = (lambda i: (key, i)) if isinstance(document.data[key], list) else (lambda i: (key,))
    problems = [document.problem(at(i), f'session "{session.store.path}" has no pipeline "{name}"'
                                 + validate.resolve.suggest(name, known) + f'; its pipelines: {", ".join(known)}')
                for i, name in enumerate(names) if name not in known]
    validate.raise_for_problems(problems, document.source)
    return [known[name] for name in names]


# ---- infer ---------------------------------------------------------------------------------------

def infer(spec_path, inputs):
    document = load_spec(spec_path, 'inference')
    spec = document.data
    if not inputs:
        raise UsageError('infer.py needs at least one input after the spec, e.g. python infer.py '
                         f'{spec_path} digit.png')
    session = open_session(spec['session_dir'], document)
    pipeline, = _pipelines(document, session, 'inference_pipeline', [spec['inference_pipeline']])
    checkpoint.restore_weights(session.entities, session.state)
    inference.run(spec, document, session.entities, pipeline, inputs)
