"""How a training iteration turns a loss into updated weights: precision, accumulation, clipping.

    with step.forward(pipeline):            # the pipeline's forward and losses
        total = ...
    step.update(pipeline, total, losses)    # zero_grad (window start), backward, optimizer steps

`Precision` is the autocast/GradScaler choice, shared by training, validation and inference.
`TrainStep` is the one object that decides when gradients are zeroed, how the loss is scaled, when
DDP synchronises and when optimizers step; the pipeline calls it and holds no such conditionals.
A window of `accumulate` iterations of one pipeline is one optimizer step, exactly what a hand-written
loop with `loss / accumulate` does. With accumulate 1 and precision "32" an iteration is the plain
zero_grad, backward, step, and, as in a hand-written loop, nothing is read from the device: with
non_finite "stop" (the default) the losses are kept where they are and read together every
CHECK_EVERY batches, before every mid-epoch checkpoint and at the end of the epoch (`check`). Only
"skip" reads each loss (one process) or the gradients (several) before it is applied.
"""
import contextlib
import math

import torch

from torchassistant.core.errors import UserCodeError
from torchassistant.core.resolve import qualified_name
from torchassistant.run.graph import StepError

PRECISIONS = ('32', 'bf16-mixed', '16-mixed')
CHECK_EVERY = 100         # non_finite "stop": batches of a pipeline between reads of their losses


class Precision:
    def __init__(self, name, device):
        if name not in PRECISIONS:
            raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, not {name!r}')
        self.name = name
        self.device_type = torch.device(device).type
        self.dtype = {'32': None, 'bf16-mixed': torch.bfloat16, '16-mixed': torch.float16}[name]

    def autocast(self):
        """The context the forward pass and the losses run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self):
        """A GradScaler where fp16 needs one (its gradients underflow without), else None."""
        return torch.amp.GradScaler(self.device_type) if self.dtype is torch.float16 else None


class TrainStep:
    """The training step: autocast, the fp16 GradScaler, gradient accumulation with DDP's `no_sync`,
    clipping, optimizer stepping, and what a non-finite loss does ("stop" or "skip").

    "stop" (the default) reads no loss per batch: each is kept on the device, unread, and `check` reads
    them all at once (one host sync) every CHECK_EVERY batches of a pipeline, before a mid-epoch
    checkpoint (`at_boundary`) and at the end of the epoch (`flush`), so no checkpoint and no validation
    ever sees weights a non-finite loss has reached; the message names the loss and how many batches
    before the check it was. "skip" must know before a batch is applied: in one process a loss is read
    before its backward pass. Across processes (DDP) the decision must agree everywhere without a
    collective of its own per batch: every process runs backward, and the gradients, equal in all of
    them after DDP's all-reduce (a NaN anywhere is a NaN everywhere), are read before the optimizers step
    ("skip"), or the weights they reached at each check ("stop": all processes check after the same
    batches and stop together). A process whose own loss is not finite leaves its batch out of its
    meters ("skip"). With fp16's GradScaler, which skips steps with non-finite gradients itself (and
    lowers its scale), that is what happens across processes."""

    def __init__(self, precision, accumulate=1, clip_grad_norm=None, non_finite='stop', across_processes=False):
        self.precision = precision
        self.accumulate = accumulate
        self.clip_grad_norm = clip_grad_norm
        self.skip_non_finite = non_finite == 'skip'
        self.across_processes = across_processes
        self.skipped = 0           # batches (or accumulation windows, across processes) skipped
        self.scaler = precision.scaler()
        self.pending = {}          # pipeline name -> iterations since its optimizers last stepped
        self.local_non_finite = {}      # across processes: pipeline name -> its window's first bad loss here
        self.updates = 0           # batches of every pipeline so far (numbers the watched ones)
        self.watched = {}          # "stop": pipeline name -> (pipeline, [(update, total, losses)]) not read yet

    @contextlib.contextmanager
    def forward(self, pipeline):
        """Where a training forward pass runs: under autocast, with the parameters no optimizer of the
        pipeline updates (frozen nodes) not requiring gradients, so backward leaves their `.grad`
        alone (another pipeline may be accumulating there) while gradients still flow through them."""
        frozen = pipeline.frozen
        for parameter in frozen:
            parameter.requires_grad_(False)
        try:
            with self.precision.autocast():
                yield
        finally:
            for parameter in frozen:
                parameter.requires_grad_(True)

    def update(self, pipeline, total, losses):
        """Back-propagate `total` (the pipeline's summed loss; `losses` its parts, (value, count) each)
        and step its optimizers at the end of an accumulation window; True when the batch counts in the
        meters. A NaN or infinite loss stops training at the next `check`, naming the loss (no checkpoint
        holds what it did, so the last checkpoint stays good), or with non_finite "skip" is dropped (False)."""
        self.updates += 1
        finite = True
        if self.skip_non_finite:          # known before the batch is applied: read now (a host sync)
            finite = _finite(total)
            if not finite and not self.across_processes:
                self.skipped += 1
                return False
            if not finite:
                self.local_non_finite.setdefault(pipeline.name, _bad_loss(pipeline, total, losses))
        else:                             # kept on the device, unread, until `check`
            watched = self.watched.setdefault(pipeline.name, (pipeline, []))[1]
            watched.append((self.updates, total.detach(), [(loss.detach(), count) for loss, count in losses]))
        done = self.pending.get(pipeline.name, 0)
        if done == 0:
            for optimizer in pipeline.optimizers:
                optimizer.zero_grad(set_to_none=True)
        done += 1
        last = done == self.accumulate
        loss = total / self.accumulate if self.accumulate > 1 else total
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        with contextlib.ExitStack() as stack:
            if not last:      # DDP: no gradient all-reduce until the window's last backward
                for model in pipeline.models:
                    if hasattr(model, 'no_sync'):
                        stack.enter_context(model.no_sync())
            _guarded('the backward pass of the summed losses', loss.backward)
        self.pending[pipeline.name] = done
        if last:
            self.step(pipeline)
        if len(self.watched.get(pipeline.name, (None, ()))[1]) >= CHECK_EVERY:
            self.check(ahead=0)
        return finite

    def check(self, ahead=1):
        """non_finite "stop": read the losses kept since the last check (one host sync per pipeline) and
        stop training (StepError) if one was not finite; across processes, if the weights, equal in all
        of them, are not. `ahead`: 1 when the batch the caller names is the next one (end of a round or
        an epoch), 0 when it is the last one."""
        for name, (pipeline, watched) in list(self.watched.items()):
            if not watched:
                continue
            self.watched[name] = (pipeline, [])
            finite = torch.isfinite(torch.cat([total.reshape(-1).float() for _, total, _ in watched]))
            flags = [finite.all()]
            if self.across_processes:
                flags.append(_all_finite([p for o in pipeline.optimizers for g in o.param_groups for p in g['params']]))
            read = torch.stack([flag.to(flags[0].device) for flag in flags]).tolist()
            if all(read):
                continue
            bad = None
            if not read[0]:
                update, total, losses = watched[int((~finite).nonzero()[0])]
                bad = _bad_loss(pipeline, total, losses) + (self.updates + ahead - update,)
            if not self.across_processes or not read[1]:      # several processes: the weights decide
                self._stop(bad)

    def _stop(self, bad):
        when = lambda ago: f' {ago} batch(es) before that one (losses are read from the device every '\
            f'{CHECK_EVERY} batches and at checkpoints)' if ago else ''  # noqa: E731
        if not self.across_processes:
            name, value, ago = bad
            what, problem = f'loss "{name}"', f'its value is {value}' + when(ago)
        else:       # which process's loss came first is not known here: a NaN anywhere is a NaN everywhere
            here = f'here loss "{bad[0]}" was the first, its value {bad[1]}{when(bad[2])}' if bad else \
                'none of this process\'s losses was'
            what, problem = 'the gradients', (f'they were not finite after the all-reduce, nor are the weights now: '
                                              f'a loss of this or another process was NaN or infinite; {here}')
        raise StepError(what, {}, FloatingPointError(
            f'{problem}; training stops so that no checkpoint holds weights it damaged (the last '
            f'checkpoint is good). To skip such batches instead, set "non_finite": "skip" under "train"'))

    def step(self, pipeline):
        """Clip (if asked: the pipeline's gradient clippers, then clip_grad_norm) and step every optimizer
        of `pipeline` once; the window closes. Across processes, non-finite gradients (the same in every
        process) skip the window ("skip"; "stop" reads them at `check`)."""
        self.pending[pipeline.name] = 0
        self.local_non_finite.pop(pipeline.name, None)
        if self.skip_non_finite and self.across_processes and self.scaler is None \
                and not _gradients_finite(pipeline.optimizers):
            for optimizer in pipeline.optimizers:
                optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            return
        clippers = pipeline.clippers
        if self.clip_grad_norm is not None or clippers:
            if self.scaler is not None:       # clip the true gradients, not the scaled ones
                for optimizer in pipeline.optimizers:
                    self.scaler.unscale_(optimizer)
            for clipper in clippers:
                clipper()
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(_with_gradients(pipeline.optimizers), self.clip_grad_norm)
        for name, optimizer in zip(pipeline.optimizer_names, pipeline.optimizers):
            step = optimizer.step if self.scaler is None else (lambda o=optimizer: self.scaler.step(o))
            _guarded(f'optimizer "{name}" step()', step)
        if self.scaler is not None:
            self.scaler.update()

    def flush(self, pipelines):
        """End of epoch: step the pipelines whose accumulation window is open, so no gradient is
        carried into the next epoch (or lost at a checkpoint)."""
        for pipeline in pipelines:
            if self.pending.get(pipeline.name):
                self.step(pipeline)
        self.check()

    def at_boundary(self):
        """No accumulation window is open: a checkpoint taken now holds everything (and no non-finite
        loss reached it: checked then)."""
        if any(self.pending.values()):
            return False
        self.check()
        return True

    def state_dict(self):
        return {'scaler': self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state):
        if self.scaler is not None and state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])


class GradientClipper:
    """A gradient_clippers definition: before each optimizer step of a pipeline that trains `model`,
    its gradients are clipped, each element into [-clip_value, clip_value], then to total norm clip_norm."""

    def __init__(self, name, model, clip_value=None, clip_norm=None):
        self.name = name
        self.parameters = list(model.parameters())
        self.clip_value, self.clip_norm = clip_value, clip_norm

    def __call__(self):
        gradients = [p for p in self.parameters if p.grad is not None]
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(gradients, self.clip_value)
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(gradients, self.clip_norm)


def clippers_of(clippers, optimizers):
    """The clippers whose model has parameters `optimizers` update (what a pipeline's step clips)."""
    owned = {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group['params']}
    return [c for c in clippers if any(id(p) in owned for p in c.parameters)]


class BackwardHooks:
    """A backward_hooks definition: `factory(parameter_name)` returns a hook for each parameter of
    `model` (that requires gradients), registered with `parameter.register_hook`: it sees, and may
    replace, the parameter's gradient in every backward pass."""

    def __init__(self, model, factory, where=''):
        self.handles = []
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            hook = factory(name)
            if not callable(hook):
                raise UserCodeError(f'{where}: building it failed: {qualified_name(factory)} returned '
                                    f'{type(hook).__name__} for parameter "{name}", not a hook (a function of the '
                                    f'gradient returning a new gradient or None)', None)
            self.handles.append(parameter.register_hook(hook))

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _bad_loss(pipeline, total, losses):
    """(display name, value) of the first non-finite loss of a batch."""
    bad = [(use.display_name, float(loss.detach())) for use, (loss, _) in zip(pipeline.losses, losses)
           if not bool(torch.isfinite(loss))]
    return bad[0] if bad else ('the summed losses', float(total.detach()))


def _with_gradients(optimizers):
    return [p for optimizer in optimizers for group in optimizer.param_groups
            for p in group['params'] if p.grad is not None]


def _gradients_finite(optimizers):
    """All gradients finite: their norms fused into one number, read once."""
    grads = [p.grad for p in _with_gradients(optimizers)]
    return not grads or bool(_all_finite(grads))


def _all_finite(tensors):
    """Whether every element of `tensors` is finite, as a boolean tensor on their device (not read):
    their norms fused into one number."""
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    norms = torch._foreach_norm(tensors)
    return torch.isfinite(torch.stack([n.to(norms[0].device, torch.float32) for n in norms]).sum())


def _finite(value):
    """A loss is finite: one number read (a host sync on a GPU, as any check is), no tensor made on the CPU."""
    return math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())


def _guarded(what, function):
    try:
        function()
    except Exception as e:
        raise StepError(what, {}, e) from e
