"""Sentence pairs, one `source<TAB>target` line each, lowercased, accents and punctuation dropped."""
import re
import unicodedata

import torch


def plain(text):
    """Lowercase ASCII letters and spaces: 'Ça va !' -> 'ca va'."""
    decomposed = unicodedata.normalize('NFD', text.lower())
    letters = ''.join(c for c in decomposed if unicodedata.category(c) != 'Mn')
    return ' '.join(re.findall(r'[a-z]+', letters))


class SentencePairs(torch.utils.data.Dataset):
    """(source, target) of the first `limit` lines of `path` (the tutorial files are target<TAB>source)."""

    def __init__(self, path, limit=10):
        with open(path, encoding='utf-8') as f:
            self.lines = [line.rstrip('\n') for line in f if line.strip()][:limit]

    def __len__(self):
        return len(self.lines)

    def __getitem__(self, index):
        target, source = self.lines[index].split('\t')
        return plain(source), plain(target)
