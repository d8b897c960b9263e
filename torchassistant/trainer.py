"""The training loop: stages of epochs of interleaved pipeline iterations, then validation.

    for each stage, until its stop condition holds:
        one epoch: an iteration of each training pipeline in turn, until all are exhausted
        step the LR schedulers
        run the validation pipelines (inference mode), print and record the row
        save a checkpoint, rewrite the stage's metrics CSV
"""
from dataclasses import dataclass

import torch

from torchassistant import checkpoint, errors, resolve
from torchassistant.graph import StepError
from torchassistant.pipeline import Meters
from torchassistant.progress import EpochProgress


@dataclass
class Stage:
    index: int
    training: list
    validation: list
    debug: list
    eval_steps: object
    stop_condition: object


def build_stages(document, entities):
    stages = []
    for index, spec in enumerate(document.data['train']['stages']):
        where = document.describe(('train', 'stages', index, 'stop_condition'))
        condition_spec = spec['stop_condition']
        try:
            condition = resolve.resolve(condition_spec['class'], 'stop_condition')(
                *condition_spec.get('args', []), **condition_spec.get('kwargs', {}))
        except Exception as e:
            raise errors.user_code_error(f'{where}: building the stop condition failed', e) from e
        pick = lambda key: [entities.pipelines[name] for name in spec.get(key, [])]  # noqa: E731
        stages.append(Stage(index, pick('training_pipelines'), pick('validation_pipelines'),
                            pick('debug_pipelines'), spec.get('eval_steps', 1.0), condition))
    return stages


def run_pipelines(pipelines, eval_steps=1.0, phase='validation'):
    """Forward-only run of each pipeline over (part of) its loaders: {display name: value}, merged."""
    row = {}
    for pipeline in pipelines:
        meters = Meters(pipeline)
        pipeline.train(False)
        with torch.inference_mode(), step_errors(pipeline, phase):
            for frames in pipeline.batches(eval_steps):
                pipeline.eval_step(frames, meters)
        row.update(meters.values())
    return row


class Trainer:
    def __init__(self, entities, stages, store, stream=None):
        self.entities = entities
        self.stages = stages
        self.store = store
        self.stream = stream

    def run(self, progress):
        announced = None
        while progress.stage < len(self.stages):
            stage = self.stages[progress.stage]
            history = progress.history.setdefault(stage.index, [])
            if stage.stop_condition(progress.stage_epoch, history):
                progress.stage, progress.stage_epoch = progress.stage + 1, 0
                continue
            if announced != stage.index:
                print(f'Training stage {stage.index} in progress', file=self.stream, flush=True)
                announced = stage.index
            history.append(self.epoch(stage, progress.stage_epoch + 1))
            progress.epoch += 1
            progress.stage_epoch += 1
            if stage.stop_condition(progress.stage_epoch, history):
                progress.stage, progress.stage_epoch = progress.stage + 1, 0
            self.store.save_checkpoint(progress.epoch, checkpoint.capture(self.entities, progress))
            self.store.write_metrics(stage.index, history)
        return progress

    def epoch(self, stage, number):
        """Train one epoch of `stage`; returns the row of metrics it records."""
        meters = {p.name: Meters(p) for p in stage.training}
        running = lambda: {k: v for m in meters.values() for k, v in m.values().items()}  # noqa: E731
        bar = EpochProgress(number, sum(p.num_batches() for p in stage.training), self.stream)
        for pipeline in stage.training:
            pipeline.train(True)
        active = [(p, p.batches()) for p in stage.training]
        done = 0
        try:
            while active:
                for entry in list(active):
                    pipeline, batches = entry
                    frames = next(batches, None)
                    if frames is None:
                        active.remove(entry)
                        continue
                    pipeline.train_step(frames, meters[pipeline.name])
                    done += 1
                    bar.update(done, running)
        except errors.TorchAssistantError:
            raise
        except Exception as e:
            raise step_error(pipeline, f'training (stage {stage.index}, epoch {number}, batch {done + 1})', e) from e
        for optimizer in {id(o): o for p in stage.training for o in p.optimizers}.values():
            if hasattr(optimizer, 'lr_scheduler'):
                optimizer.lr_scheduler.step()
        row = run_pipelines(stage.validation, stage.eval_steps) if stage.validation else running()
        bar.finish(row)
        for pipeline in stage.debug:
            self.debug(pipeline)
        return row

    def debug(self, pipeline):
        """Print the named outputs of one forward-only batch of `pipeline`, as inference does."""
        pipeline.train(False)
        with torch.inference_mode(), step_errors(pipeline, 'debug'):
            frames = next(pipeline.batches(1), None)
            if frames is None:
                return
            results = pipeline.forward(frames)
        print(f'Debug output of pipeline "{pipeline.name}":', file=self.stream)
        for node, frame in results.items():
            for name in (n for n in pipeline.output_names(node) if n in frame):   # an output adapter may drop some
                print(f'{name}:{frame[name]}', file=self.stream)


class step_errors:
    """Context manager: an exception from user code while running `pipeline` becomes `step_error`."""

    def __init__(self, pipeline, phase):
        self.pipeline = pipeline
        self.phase = phase

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, Exception) and not isinstance(exc, errors.TorchAssistantError):
            raise step_error(self.pipeline, self.phase, exc) from exc
        return False


def step_error(pipeline, phase, exc):
    """A UserCodeError naming the pipeline, the phase, the failing model/loss/metric and what it received."""
    message = f'pipeline "{pipeline.name}" ({pipeline.where}) failed in {phase}'
    if not isinstance(exc, StepError):
        return errors.user_code_error(message + ' (loading a batch)', exc)
    received = ', '.join(f'{name} = {text}' for name, text in exc.received.items())
    details = f'\n  It received: {received}' if received else ''
    if exc.where.startswith('model') and any(t.startswith(('list', 'tuple')) for t in exc.received.values()):
        collators = ', '.join(sorted({f'"{f.loader_name}" uses {resolve.qualified_name(type(f.loader.collate_fn))}'
                                      for f in pipeline.feeds}))
        details += (f'\n  A model needs tensors, but it was given a list (data loader {collators}). '
                    f'Use a collator that returns tensors, e.g. a BatchDivide subclass that stacks '
                    f'the images with torch.stack, as MyCollator in the tutorial does.')
    return errors.user_code_error(f'{message}: {exc.where}', exc.original, details)

