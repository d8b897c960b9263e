"""Transforms for losses and metrics: `f(*inputs) -> tuple`, applied to a criterion's inputs first.

A transform given as a class is built with the session (`DecodeText(session)`).
"""
import torch


def reverse_onehot(y_hat, targets):
    """(predicted class: argmax of the scores over the last dimension, the targets as a tensor)."""
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets, device=y_hat.device)
    return y_hat.argmax(dim=-1), targets


def pad_targets(y_hat, targets):
    """(y_hat, targets padded into a LongTensor B x T, mask): `targets` is a list of id lists and the
    boolean B x T mask is true at real (not padding) positions."""
    length = max((len(t) for t in targets), default=0)
    padded = torch.zeros(len(targets), length, dtype=torch.long)
    mask = torch.zeros(len(targets), length, dtype=torch.bool)
    for row, sequence in enumerate(targets):
        padded[row, :len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
        mask[row, :len(sequence)] = True
    return y_hat, padded, mask


class DecodeText:
    """(predicted texts, target texts) for text metrics such as CharErrorRate.

    Predictions are the argmax over dim 2 of y_hat (B x T x V); targets are id lists. Both are decoded
    with the preprocessor of the target element (the one with `decode` at the last position of the
    data loaders' examples): a leading <start> is dropped, everything from <end> on is cut, and a
    prediction is read only as far as its target reaches (the rest is padding)."""

    def __init__(self, session):
        self.decoder = target_decoder(session)
        self.start = getattr(self.decoder, 'START', None)
        self.end = getattr(self.decoder, 'END', None)

    def __call__(self, y_hat, targets):
        predictions = y_hat.argmax(dim=2).tolist()
        targets = [list(t) for t in targets]
        return ([self.text(p[:len(t)]) for p, t in zip(predictions, targets)],
                [self.text(t) for t in targets])

    def text(self, ids):
        ids = [int(i) for i in ids]
        if ids and ids[0] == self.start:
            ids = ids[1:]
        if self.end in ids:
            ids = ids[:ids.index(self.end)]
        return self.decoder.decode(ids)


def target_decoder(session):
    """The one preprocessor with `decode` that makes the targets of the session's data loaders."""
    from torchassistant.run.data import preprocessors_of
    from torchassistant.spec.rules import example_elements
    found = {}
    for name, loader in zip(session.defined['data_loaders'], session.every('data_loaders')):
        dataset = loader.dataset
        if not len(dataset):
            continue
        position = len(example_elements(dataset[0])) - 1
        decoders = [layer[position] for layer in preprocessors_of(dataset)
                    if len(layer) > position and hasattr(layer[position], 'decode')]
        if decoders:
            found.setdefault(id(decoders[-1]), (decoders[-1], []))[1].append(name)
    if not found:
        raise ValueError('DecodeText cannot decode predictions: no data loader\'s dataset makes its targets with a '
                         'preprocessor that has decode(ids) (such as TextPreprocessor)')
    if len(found) > 1:
        which = '; '.join(f'{type(p).__name__} for {", ".join(names)}' for p, names in found.values())
        raise ValueError(f'DecodeText found different target preprocessors ({which}); it needs one')
    return next(iter(found.values()))[0]
