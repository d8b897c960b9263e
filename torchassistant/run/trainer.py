"""The training loop: stages of epochs of interleaved pipeline iterations, then validation.

    for each stage, until its stop condition (asked once after every epoch) holds:
        one epoch: an iteration of each training pipeline in turn (a round), until all are exhausted;
                   every `checkpoint_every` rounds or minutes, a mid-epoch checkpoint
        run the validation pipelines (inference mode): the epoch's row
        step the LR schedulers (those with a "monitor" with that metric of the row)
        ask the stop condition, save the checkpoint

Signals (SIGINT, SIGTERM): the first stops training after the current round, with a checkpoint there;
during validation, or a second one, it stops at once. A signal during validation keeps the epoch's
training (one process): the checkpoint then is that of the epoch with all its batches done, and the
resumed run validates it. Either way the command exits 128 + the signal's number (130, 143).

Everything else (progress display, metrics CSV, TensorBoard) listens to `events`; the step object
(torchassistant.step) decides how a loss becomes an update.
"""
import signal
import time

import torch

from torchassistant.core import errors, resolve
from torchassistant.run import distributed
from torchassistant.run.graph import StepError
from torchassistant.run.meters import Meters
from torchassistant.session import checkpoint
from torchassistant.spec import rules


def run_pipelines(pipelines, eval_steps=1.0, phase='validation', precision=None, on_batch=None):
    """Forward-only run of each pipeline over (part of) its loaders: {display name: value}, merged."""
    row, done = {}, 0
    for pipeline in pipelines:
        meters = Meters(pipeline)
        pipeline.train(False)
        with torch.inference_mode(), step_errors(pipeline, phase):
            for frames in pipeline.batches(eval_steps):
                pipeline.eval_step(frames, meters, precision)
                done += 1
                if on_batch is not None:
                    on_batch(done)
        row.update(meters.values())
    return row


class CheckpointEvery:
    """When a mid-epoch checkpoint is due: every `iterations` rounds or every `minutes` of training."""

    def __init__(self, iterations=None, minutes=None):
        self.iterations = iterations
        self.seconds = minutes * 60 if minutes is not None else None
        self.last = time.monotonic()

    def due(self, rounds):
        if self.iterations is not None:
            return rounds % self.iterations == 0
        return time.monotonic() - self.last >= self.seconds

    def reset(self):
        self.last = time.monotonic()


class Trainer:
    def __init__(self, entities, stages, store, step, events, checkpoint_every=None, stop=None, world=None):
        self.entities = entities
        self.world = world or distributed.World()     # several processes: rank 0 writes, all agree
        self.stages = stages
        self.store = store
        self.step = step
        self.events = events
        self.checkpoint_every = checkpoint_every or CheckpointEvery(**rules.CHECKPOINT_EVERY)
        self.stop = stop or StopRequest()

    def run(self, progress, resume=None):
        """Train from `progress` (and the mid-epoch `resume` state, if the checkpoint has one) until every
        stage is done; the `Progress` at the end."""
        try:
            return self._run(progress, resume)
        except StopNow as stop:            # a second signal: stopped at once, wherever it was
            raise stop.interrupted() from None

    def _run(self, progress, resume):
        started = time.monotonic()
        self.events.emit('training_start', self, progress)
        announced = None
        while progress.stage < len(self.stages):
            stage = self.stages[progress.stage]
            if announced != stage.index:
                self.events.emit('stage_start', stage, progress)
                announced = stage.index
            history = progress.history.setdefault(stage.index, [])
            row = self.epoch(stage, progress, resume)
            resume = None
            history.append(row)
            progress.epoch += 1
            progress.stage_epoch += 1
            progress.batch = 0
            self.events.emit('epoch_end', stage, progress.stage_epoch, row, progress)
            if errors.call_user_code(f'{stage.where}: the stop condition failed after epoch {progress.stage_epoch} '
                                     f'of stage {stage.index}', stage.stop_condition, progress.stage_epoch, history):
                progress.stage, progress.stage_epoch = progress.stage + 1, 0
            self.save(stage, progress)
        self.events.emit('training_end', progress, time.monotonic() - started)
        return progress

    def epoch(self, stage, progress, resume=None):
        """Train one epoch of `stage` (from the middle, with `resume`); the row of metrics it records."""
        run = self.restore(stage, progress, resume)      # where the epoch stands; its batches to come
        self.rounds(stage, progress, run)                # training, mid-epoch checkpoints, signals
        return self.finish(stage, progress, run)         # validation, then LR schedulers: the epoch's row

    def restore(self, stage, progress, resume=None):
        """The epoch about to be trained: from its start, or from the mid-epoch checkpoint's EpochState
        `resume` (its meters, the batches done, which are skipped, and the RNG as it was)."""
        self.world.begin_training(self.entities)
        run = EpochRun(stage, progress.stage_epoch + 1, checkpoint.loader_states(self.entities), progress.batch)
        if resume is not None:
            run.resume(resume, self.world)
        self.events.emit('epoch_start', stage, run.number, run.total)
        for pipeline in stage.training:
            pipeline.train(True)
        run.active = [(p, p.batches(skip=run.positions[p.name])) for p in stage.training]
        if resume is not None:
            checkpoint.restore_rng(resume.rng)     # the iterators are made: now the RNG as it was
        return run

    def rounds(self, stage, progress, run):
        """An iteration of each training pipeline in turn (a round) until all are exhausted; after a
        round, a mid-epoch checkpoint when one is due or a signal asks to stop (then Interrupted)."""
        batch_end, active, meters, positions, step = self.events.emitter('batch_end'), run.active, run.meters, \
            run.positions, self.step
        done, pipeline = run.done(), stage.training[0]
        self.checkpoint_every.reset()
        try:
            while active:
                for entry in list(active):
                    pipeline, batches = entry
                    frames = next(batches, None)
                    if frames is None:
                        active.remove(entry)
                        continue
                    pipeline.train_step(frames, meters[pipeline.name], step)
                    positions[pipeline.name] += 1
                    done += 1
                    batch_end(done, run.running, meters[pipeline.name])
                run.rounds += 1
                saved = False
                if active and (self.stop.signum or self.checkpoint_every.due(run.rounds)) and step.at_boundary():
                    saved = self.save_mid_epoch(stage, progress, run)
                if self.stop.signum:
                    raise errors.Interrupted(self.stop.signum, f'in epoch {progress.epoch + 1} (stage {stage.index}, '
                                             f'epoch {run.number} of the stage), after batch {done} of {run.total}',
                                             saved=saved)
            step.flush(stage.training)
        except errors.TorchAssistantError:
            raise
        except Exception as e:
            raise step_error(pipeline, f'training (stage {stage.index}, epoch {run.number}, batch {done + 1})', e) from e

    def finish(self, stage, progress, run):
        """The epoch's row once its training is done: the validation pipelines' (without any, the
        running values), then the LR schedulers step."""
        self.world.end_training(self.entities)
        row = self.validate(stage, progress, run) if stage.validation else run.running(local=False)
        self.step_schedulers(stage, row)
        return row

    def validate(self, stage, progress, run):
        """Run the validation (and debug) pipelines: the epoch's row. A signal stops it at once; in one
        process the epoch's training is then saved (its EpochState with every batch done, the RNG as
        training left it) and the resumed run validates it again."""
        rng = checkpoint.rng_state()         # as training left it, for that checkpoint
        self.events.emit('validation_start', stage, sum(p.num_batches(stage.eval_steps) for p in stage.validation))
        try:
            with self.stop.immediate():
                row = run_pipelines(stage.validation, stage.eval_steps, precision=self.step.precision,
                                    on_batch=self.events.emitter('validation_batch'))
                for debug_pipeline in stage.debug:
                    self.debug(debug_pipeline)
        except StopNow as stop:
            saved = self.world.size == 1     # several processes cannot agree on a checkpoint at once
            if saved:
                progress.batch = run.rounds
                self.save(stage, progress, run.state(self.world.size, rng))
            kept = 'the epoch\'s training is kept' if saved else 'the epoch\'s training is not kept (several ' \
                'processes stop at once without agreeing on a checkpoint)'
            raise errors.Interrupted(stop.signum, f'during the validation of epoch {progress.epoch + 1} (stage '
                                     f'{stage.index}, epoch {run.number} of the stage); {kept}', saved=saved) from None
        return row

    def step_schedulers(self, stage, row):
        """Step the LR scheduler of each optimizer the stage's training pipelines use, once, after the
        epoch's row: one with a "monitor" is given that metric of the row (ReduceLROnPlateau & co.)."""
        names = dict.fromkeys(name for p in stage.training for name in p.optimizer_names)
        for record in (self.entities.optimizers[name] for name in names):
            if record.scheduler is None:
                continue
            where = f'{self.entities.where["optimizers", record.name]} lr_scheduler'
            if record.monitor is None:
                errors.call_user_code(f'{where}: its step() failed', record.scheduler.step)
            elif record.monitor not in row:
                raise errors.UsageError(f'{where}.monitor: the epoch\'s row has no "{record.monitor}"; it has: '
                                        f'{", ".join(row)}')
            else:
                errors.call_user_code(f'{where}: its step({record.monitor}) failed', record.scheduler.step,
                                      row[record.monitor])

    def save_mid_epoch(self, stage, progress, run):
        """A checkpoint `run.rounds` rounds into the epoch (its EpochState); True once it is on disk."""
        progress.batch = run.rounds
        self.save(stage, progress, run.state(self.world.size))
        self.checkpoint_every.reset()
        return True

    def save(self, stage, progress, epoch_state=None):
        """A checkpoint of everything that decides what happens next: at the end of an epoch, or
        `progress.batch` rounds into the next one (then `epoch_state` holds the epoch's own state)."""
        self.world.sync_buffers(self.entities.models.values())
        if self.world.is_main:       # the one writer; the other processes wait until the checkpoint is on disk
            state = checkpoint.capture(self.entities, progress, self.step, epoch_state)
            if epoch_state is None:
                path = self.store.save_checkpoint(progress.epoch, state, metrics=progress.history[stage.index][-1])
            else:
                path = self.store.save_checkpoint(progress.epoch, state, batch=progress.batch)
            self.events.emit('checkpoint_saved', stage, progress, path)
        self.world.barrier()

    def debug(self, pipeline):
        """Print the named outputs of one forward-only batch of `pipeline`, as inference does."""
        pipeline.train(False)
        with torch.inference_mode(), step_errors(pipeline, 'debug'):
            frames = next(pipeline.batches(1), None)
            if frames is None:
                return
            results = pipeline.forward(frames)
        if not self.world.is_main:
            return
        print(f'Debug output of pipeline "{pipeline.name}":')
        for node, frame in results.items():
            for name in (n for n in pipeline.output_names(node) if n in frame):   # an output adapter may drop some
                print(f'{name}:{frame[name]}')


class EpochRun:
    """An epoch of a stage being trained: its running meters, how many batches each training pipeline
    has done, the rounds done, and what a mid-epoch checkpoint of it holds (`state`)."""

    def __init__(self, stage, number, loaders, rounds=0):
        self.number = number                 # the stage's epoch number, 1 for its first
        self.loaders = loaders               # each loader's generator state at the epoch's start
        self.rounds = rounds                 # rounds done (an iteration of each training pipeline)
        self.meters = {p.name: Meters(p) for p in stage.training}
        self.positions = {p.name: 0 for p in stage.training}
        self.total = sum(p.num_batches() for p in stage.training)
        self.active = []                     # (pipeline, its batches to come) of the pipelines not exhausted

    def resume(self, resume, world):
        """Continue from the mid-epoch checkpoint's EpochState `resume` (of any number of processes)."""
        self.positions.update(resume.positions_for(world.size))
        for name, state in resume.meters.items() if world.is_main else ():   # sums of all processes
            self.meters[name].load_state_dict(state)
        self.loaders = resume.loaders

    def done(self):
        return sum(self.positions.values())

    def running(self, local=True):
        """The running metrics of every training pipeline, {display name: value} (a host sync)."""
        return {k: v for m in self.meters.values() for k, v in m.values(local).items()}

    def state(self, processes, rng=None):
        """The checkpoint.EpochState of the epoch now, trained by `processes` processes (`rng`: the RNG
        states to resume with, by default those of now)."""
        return checkpoint.EpochState(dict(self.positions), processes, self.loaders,
                                     {name: m.state_dict() for name, m in self.meters.items()},
                                     rng or checkpoint.rng_state())


class StopNow(BaseException):
    """A signal that stops training at once (during validation, or a second one), raised by the signal
    handler wherever the program is. A BaseException, so that no `except Exception` around user code
    (a model, a metric, a dataset) takes it for a failure of that code; the trainer and StopRequest turn
    it into errors.Interrupted."""

    def __init__(self, signum, where):
        super().__init__(signum, where)
        self.signum, self.where = signum, where

    def interrupted(self):
        return errors.Interrupted(self.signum, self.where, saved=False)


class StopRequest:
    """SIGINT and SIGTERM while training: the first one asks the loop to stop at the end of the current
    round (after a checkpoint there); a second one, or one during validation, stops at once (StopNow)."""

    def __init__(self):
        self.signum = None
        self.waiting = True        # False while a phase that cannot be checkpointed runs
        self.previous = {}

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[signum] = signal.signal(signum, self.handle)
            except ValueError:     # not the main thread: signals stay as they are
                pass
        return self

    def __exit__(self, kind, exc, tb):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if isinstance(exc, StopNow):       # stopped at once outside the trainer's own handling
            raise exc.interrupted() from None
        return False

    def handle(self, signum, frame):
        if self.signum is not None or not self.waiting:
            where = 'during validation' if not self.waiting else 'at once (a second signal)'
            self.signum = signum
            raise StopNow(signum, where)
        self.signum = signum

    def immediate(self):
        return _Immediate(self)


class _Immediate:
    def __init__(self, request):
        self.request = request

    def __enter__(self):
        self.request.waiting = False

    def __exit__(self, *exc):
        self.request.waiting = True
        return False


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
    """A UserCodeError naming the pipeline, the phase, the failing part (model, loss, metric, backward
    pass, optimizer step; else loading the batch) and what it received."""
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
