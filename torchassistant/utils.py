"""Helpers that user code imports by name, kept at the paths the original TorchAssistant gave them.

`pad_sequences` is what the original's translation example calls in its input adapter
(`from torchassistant.utils import pad_sequences`).
"""
import torch


class Mask:
    """Which positions of a padded batch hold real values: `mask` is a bool tensor B x T, true for
    the first `lengths[i]` positions of row i. `to(device)` gives the same mask on another device."""

    def __init__(self, lengths, max_length=None):
        self.lengths = [int(n) for n in lengths]
        if max_length is None:
            max_length = max(self.lengths, default=0)
        positions = torch.arange(max_length)
        self.mask = positions.unsqueeze(0) < torch.tensor(self.lengths, dtype=torch.long).view(-1, 1)

    @property
    def device(self):
        return self.mask.device

    def to(self, device):
        moved = Mask.__new__(Mask)
        moved.lengths, moved.mask = list(self.lengths), self.mask.to(device)
        return moved

    def __repr__(self):
        return f'Mask(lengths={self.lengths})'


def pad_sequences(sequences, filler):
    """(the sequences as lists, each extended with `filler` to the longest one's length, their Mask).

    The sequences themselves are not changed; an empty batch gives ([], a Mask of shape 0 x 0)."""
    rows = [list(sequence) for sequence in sequences]
    lengths = [len(row) for row in rows]
    longest = max(lengths, default=0)
    padded = [row + [filler] * (longest - len(row)) for row in rows]
    return padded, Mask(lengths, longest)
