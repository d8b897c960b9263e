"""Collators: callables passed to DataLoader as `collate_fn`.

`ColumnWiseCollator` passes column i of a batch (element i of every example) through its i-th
column function; the functions below turn a column into what a model takes.
"""
import torch

from torchassistant.spec.rules import example_elements  # noqa: F401  (collators.example_elements: its old home)


class CollationError(ValueError):
    """A batch that its collator cannot turn into columns."""


class BatchDivide:
    """Turn a list of example tuples into a tuple of lists: [(x1, y1), (x2, y2)] -> ([x1, x2], [y1, y2])."""

    def __call__(self, batch):
        return tuple(list(column) for column in zip(*batch))


class ColumnWiseCollator:
    """A tuple with column i of the batch passed through `columns[i]`.

    A column function is given as a callable, a name (a function or class of this module such as
    "to_long_tensor", or a dotted path) or {"class": NAME, "args": [...], "kwargs": {...}} (built
    once, e.g. {"class": "SeqsToOneHot", "args": [57]}). A column of only None (inference inputs
    have no target) stays None.
    """

    def __init__(self, columns):
        self.columns = list(columns)
        self.functions = [_column_function(column) for column in self.columns]

    def __call__(self, batch):
        examples = [example_elements(example) for example in batch]
        for index, elements in enumerate(examples):
            if len(elements) != len(self.functions):
                raise CollationError(f'example {index} of the batch has {len(elements)} element(s), but the '
                                     f'collator has {len(self.functions)} column function(s): {self.describe()}')
        out = []
        for position, (function, column) in enumerate(zip(self.functions, zip(*examples))):
            if all(value is None for value in column):
                out.append(None)
                continue
            try:
                out.append(function(list(column)))
            except CollationError:
                raise
            except Exception as e:
                raise CollationError(f'column {position + 1} ({_name(function)}) cannot take this batch\'s '
                                     f'element {position + 1}: {type(e).__name__}: {e}') from e
        return tuple(out)

    def describe(self):
        return ', '.join(_name(f) for f in self.functions)


def _column_function(column):
    from torchassistant.core.resolve import resolve
    if callable(column):
        return column
    if isinstance(column, str):
        function = resolve(column, 'collators')
        return function() if isinstance(function, type) else function
    if isinstance(column, dict) and 'class' in column:
        return resolve(column['class'], 'collators')(*column.get('args', []), **column.get('kwargs', {}))
    raise CollationError(f'a column function is a name, a callable or {{"class": ..., "args": [...]}}, '
                         f'not {column!r}')


def _name(function):
    return getattr(function, '__name__', type(function).__name__)


# ---- column functions: a list of values (one per example) -> a batch value ----------------------

def to_long_tensor(values):
    """Integers -> LongTensor (B)."""
    return torch.tensor([int(v) for v in values], dtype=torch.long)


def to_float_tensor(values):
    """Numbers -> FloatTensor (B)."""
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def images_to_tensor(images):
    """Images -> float B x C x H x W in [0, 1] (each converted with ToTensor, then stacked)."""
    from torchvision.transforms.functional import to_tensor
    return torch.stack([to_tensor(image) for image in images])


def stack_tensors(tensors):
    """Tensors of one shape -> one tensor with a batch dimension first."""
    return torch.stack(list(tensors))


def no_transform(values):
    """The values as a list, unchanged."""
    return list(values)


def seqs_to_tensor(sequences, filler=None):
    """Id sequences -> LongTensor B x T, padded to the longest with `filler` (default: the last id of
    the batch's first sequence, <end> for TextPreprocessor output)."""
    if filler is None:
        filler = sequences[0][-1] if len(sequences[0]) else 0
    length = max(len(s) for s in sequences)
    out = torch.full((len(sequences), length), int(filler), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, :len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
    return out


class SeqsToOneHot:
    """Id sequences -> float B x T x num_classes one-hot vectors, padded as seqs_to_tensor pads."""

    def __init__(self, num_classes):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive integer, not {num_classes!r}')
        self.num_classes = num_classes

    def __call__(self, sequences):
        ids = seqs_to_tensor(sequences)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
            bad = ids[(ids < 0) | (ids >= self.num_classes)][0].item()
            raise ValueError(f'id {bad} is out of range for one-hot vectors of {self.num_classes} classes')
        return torch.nn.functional.one_hot(ids, self.num_classes).float()


class StackTensors:
    """A collator: tensor columns are stacked, any other column is converted with torch.tensor."""

    def __call__(self, batch):
        columns = zip(*(example_elements(example) for example in batch))
        return tuple(torch.stack(list(c)) if isinstance(c[0], torch.Tensor) else torch.tensor(list(c))
                     for c in columns)
