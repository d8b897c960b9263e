"""Collators: callables passed to DataLoader as `collate_fn`."""


class BatchDivide:
    """Turn a list of example tuples into a tuple of lists: [(x1, y1), (x2, y2)] -> ([x1, x2], [y1, y2])."""

    def __call__(self, batch):
        return tuple(list(column) for column in zip(*batch))
