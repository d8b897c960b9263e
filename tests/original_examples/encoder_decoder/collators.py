"""Collators made by factory functions, from the column functions the original's example imports."""
from torchassistant.collators import ColumnWiseCollator, no_transform, seqs_to_tensor


def training_collator(session):
    """Sources as a padded LongTensor, targets as id lists (the input adapter pads them)."""
    return ColumnWiseCollator([seqs_to_tensor, no_transform])


def sources_only(session):
    """At inference an example is the source alone."""
    return ColumnWiseCollator([seqs_to_tensor])
