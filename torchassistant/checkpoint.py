"""What a checkpoint holds, and putting it back: weights, optimizer and scheduler state, training
progress, metric history and every random number generator that decides what happens next."""
import random
from dataclasses import dataclass, field

import torch


@dataclass
class Progress:
    """Where training stands: `stage` to run next (len(stages) when done), epochs done in it."""
    epoch: int = 0               # epochs finished over all stages
    stage: int = 0
    stage_epoch: int = 0
    history: dict = field(default_factory=dict)   # stage index -> list of {display name: value}


def capture(entities, progress):
    state = {
        'progress': vars(progress).copy(),
        'models': {name: model.state_dict() for name, model in entities.models.items()},
        'optimizers': {name: opt.state_dict() for name, opt in entities.optimizers.items()},
        'schedulers': {name: opt.lr_scheduler.state_dict() for name, opt in entities.optimizers.items()
                       if hasattr(opt, 'lr_scheduler')},
        'loaders': {name: loader.generator.get_state() for name, loader in entities.data_loaders.items()
                    if loader.generator is not None},
        'rng': {'python': random.getstate(), 'torch': torch.get_rng_state(),
                'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
    }
    try:
        import numpy
        state['rng']['numpy'] = numpy.random.get_state()
    except ImportError:
        pass
    return state


def restore_weights(entities, state):
    """Load models, optimizers and schedulers, as evaluation and inference need."""
    for name, model in entities.models.items():
        if name in state['models']:
            model.load_state_dict(state['models'][name])
    for name, optimizer in entities.optimizers.items():
        if name in state['optimizers']:
            optimizer.load_state_dict(state['optimizers'][name])
        if hasattr(optimizer, 'lr_scheduler') and name in state['schedulers']:
            optimizer.lr_scheduler.load_state_dict(state['schedulers'][name])


def restore(entities, state):
    """Load everything training needs to continue exactly where the checkpoint was taken."""
    restore_weights(entities, state)
    for name, loader in entities.data_loaders.items():
        if name in state['loaders'] and loader.generator is not None:
            loader.generator.set_state(state['loaders'][name])
    rng = state['rng']
    random.setstate(rng['python'])
    torch.set_rng_state(rng['torch'])
    if rng.get('cuda') is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng['cuda'])
    if 'numpy' in rng:
        import numpy
        numpy.random.set_state(rng['numpy'])
    return Progress(**state['progress'])
