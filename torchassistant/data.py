"""Datasets made from other datasets: split slices and preprocessed links; device moves."""
import torch
from torch.utils.data import Subset

SLICES = ('train', 'val', 'test')


def draw_split(length, ratio, generator):
    """Random disjoint index lists, one per ratio entry, covering range(length)."""
    order = torch.randperm(length, generator=generator).tolist()
    sizes = [int(length * r) for r in ratio]
    sizes[0] += length - sum(sizes)     # rounding leftovers go to the first slice
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


def apply_preprocessors(preprocessors, example):
    example = tuple(example)
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
