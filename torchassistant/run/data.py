"""Datasets made from other datasets: split slices and preprocessed links; resumable loaders;
device moves."""
import contextlib
import gc

import torch
from torch.utils.data import ConcatDataset, DataLoader, IterableDataset, Subset

from torchassistant.spec.rules import SLICES


def draw_split(length, ratio, generator):
    """Random disjoint index lists, one per ratio entry, covering range(length): floor(r * length)
    examples each, and the last slice also gets what rounding leaves (10 at .5/.25/.25: 5, 2, 3)."""
    order = torch.randperm(length, generator=generator).tolist()
    sizes = [int(length * r) for r in ratio]
    sizes[-1] += length - sum(sizes)
    slices, start = [], 0
    for size in sizes:
        slices.append(order[start:start + size])
        start += size
    return dict(zip(SLICES, slices))


class Split:
    """A dataset split into slices by stored index lists; `split.slices['train']` is a Subset."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices
        self.slices = {name: Subset(dataset, idx) for name, idx in indices.items()}


class PreprocessedDataset(torch.utils.data.Dataset):
    """Element i of each example goes through preprocessor i; extra elements pass unchanged."""

    def __init__(self, dataset, preprocessors):
        self.dataset = dataset
        self.preprocessors = preprocessors

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return apply_preprocessors(self.preprocessors, self.dataset[index])


class ResumableLoader(DataLoader):
    """A DataLoader whose next iteration can start `skip` batches in, by advancing its sampler only:
    the skipped batches' indices are drawn (so the order is the same as a full pass) but their examples
    are never loaded. Resuming mid-epoch uses it to continue exactly where a checkpoint was taken."""

    _skip = 0

    def skip_next(self, count):
        """The next iterator starts after `count` batches. IterableDatasets have no sampler to advance;
        their next iterator loads and drops `count` batches instead."""
        self._skip = count

    @property
    def _index_sampler(self):     # read once by each new iterator (and by len())
        sampler = super()._index_sampler
        if self._skip and not isinstance(self.dataset, IterableDataset):
            return _Skipping(sampler, self._skip)
        return sampler

    def __iter__(self):
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        if isinstance(self.dataset, IterableDataset):
            for _ in range(skip):
                next(iterator)
        return iterator


@contextlib.contextmanager
def settled_for_workers(loaders):
    """Where loaders with worker processes run: every object that exists goes into the collector's
    permanent generation (`gc.freeze`, as Python's gc documentation advises before fork()) until the
    block ends. Forked workers inherit some 340,000 objects (torch's import makes most); their
    collections then never walk them, which touched and so copied their memory pages: on the
    tutorial, the loader workers used about 1 s less CPU per epoch (5.0 instead of 6.1 s). No
    collection first: it would cost 0.17 s, and what is garbage now is collected after the block."""
    if not any(getattr(loader, 'num_workers', 0) for loader in loaders):
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class _Skipping:
    """A (batch) sampler that passes over its first `skip` items once, then is the sampler itself."""

    def __init__(self, sampler, skip):
        self.sampler = sampler
        self.skip = skip

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        iterator = iter(self.sampler)
        for _ in range(skip):
            next(iterator, None)
        yield from iterator


def apply_preprocessors(preprocessors, example):
    """Element i through preprocessor i; an example that is not a tuple or list is one element."""
    example = tuple(example) if isinstance(example, (tuple, list)) else (example,)
    processed = tuple(p.process(value) for p, value in zip(preprocessors, example))
    return processed + example[len(processed):]


def preprocessors_of(dataset):
    """The preprocessors a dataset chain applies, outermost first (for raw inference inputs)."""
    chain = []
    while True:
        if isinstance(dataset, PreprocessedDataset):
            chain.append(dataset.preprocessors)
            dataset = dataset.dataset
        elif isinstance(dataset, Subset):
            dataset = dataset.dataset
        elif isinstance(dataset, ConcatDataset):     # a merge: its parts are preprocessed alike (the first says)
            dataset = dataset.datasets[0]
        else:
            return chain[::-1]


def to_device(value, device):
    """Move tensors (also inside lists, tuples and dicts) to `device`; leave everything else."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def describe(value):
    """A short description of a value for error messages: 'Tensor(32, 10) float32', 'list of 32 int'."""
    if isinstance(value, torch.Tensor):
        return f'Tensor{tuple(value.shape)} {str(value.dtype).replace("torch.", "")} on {value.device}'
    if isinstance(value, (list, tuple)):
        kinds = sorted({_type_name(v) for v in value})
        return f'{type(value).__name__} of {len(value)} {" / ".join(kinds) or "items"}'
    return _type_name(value)


def _type_name(value):
    cls = type(value)
    return cls.__name__ if cls.__module__ == 'builtins' else f'{cls.__module__}.{cls.__name__}'
