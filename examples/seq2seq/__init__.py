"""Number words to digits ("three hundred twelve" -> "312") with a GRU encoder-decoder.

The user code of the seq2seq example (see README.md here): a generated dataset, vocabularies fitted
on the training slice, a padding collator, the encoder and decoder built from the learned
vocabulary sizes, and the pieces that turn predicted ids back into text for metrics and inference.
"""
import random
from collections import Counter

import torch
import torchmetrics
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchassistant.preprocessors import ValuePreprocessor

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ['<pad>', '<s>', '</s>', '<unk>']
TARGET_VOCABULARY = 'digits'     # the name of the target vocabulary in the specs

# ---- data ----------------------------------------------------------------------------------------

_ONES = ('zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen '
         'fifteen sixteen seventeen eighteen nineteen').split()
_TENS = 'twenty thirty forty fifty sixty seventy eighty ninety'.split()


def number_to_words(number):
    """English words of 0 <= number < 10**9: 312 -> "three hundred twelve"."""
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens - 2] + (' ' + _ONES[ones] if ones else '')
    for size, word in ((10 ** 6, 'million'), (1000, 'thousand'), (100, 'hundred')):
        if number >= size:
            high, low = divmod(number, size)
            return number_to_words(high) + ' ' + word + (' ' + number_to_words(low) if low else '')
    raise ValueError(f'number out of range: {number}')


class NumberWords(torch.utils.data.Dataset):
    """`size` examples (words, digits), e.g. ("forty two thousand seven", "42007"), drawn from `seed`.

    The number of digits is drawn uniformly from 1..max_digits, so short and long numbers are equally
    common; every digit after the first is 0 with probability `zero_rate`, else 1..9, so numbers such
    as "one million one" (1000001), rare among uniformly drawn numbers, are seen often enough to learn.
    """

    def __init__(self, size, seed=0, max_digits=6, zero_rate=0.5):
        if not 1 <= max_digits <= 9:
            raise ValueError(f'max_digits must be between 1 and 9, got {max_digits}')
        rng = random.Random(seed)
        self.numbers = []
        for _ in range(size):
            length = rng.randint(1, max_digits)
            digits = [rng.randint(0 if length == 1 else 1, 9)]
            digits += [0 if rng.random() < zero_rate else rng.randint(1, 9) for _ in range(length - 1)]
            self.numbers.append(int(''.join(map(str, digits))))

    def __len__(self):
        return len(self.numbers)

    def __getitem__(self, index):
        number = self.numbers[index]
        return number_to_words(number), str(number)


class Vocabulary(ValuePreprocessor):
    """Text <-> token ids, learned from element `element` of a dataset's examples.

    `level` "word" splits on spaces, "char" takes characters. `process` maps a text to its ids
    followed by </s> (unknown tokens become <unk>; None, a missing target at inference, stays None).
    Only the token list is fitted state: it is what the session stores and restores.
    """

    def __init__(self, element, level='char', max_size=None):
        if level not in ('word', 'char'):
            raise ValueError(f'level must be "word" or "char", got {level!r}')
        self.element = element
        self.level = level
        self.max_size = max_size
        self.tokens = list(SPECIALS)
        self.ids = {}

    def tokenize(self, text):
        return text.split() if self.level == 'word' else list(text)

    def fit(self, dataset):
        counts = Counter(token for example in dataset for token in self.tokenize(example[self.element]))
        ranked = sorted(counts, key=lambda token: (-counts[token], token))[:self.max_size]
        self.load_state_dict({'tokens': SPECIALS + ranked})

    def process(self, text):
        if text is None:
            return None
        return [self.ids.get(token, UNK) for token in self.tokenize(text)] + [EOS]

    def decode(self, ids):
        """Text of `ids` up to the first </s>; padding and <s> are skipped."""
        tokens = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                tokens.append(self.tokens[i])
        return (' ' if self.level == 'word' else '').join(tokens)

    def __len__(self):
        return len(self.tokens)

    def state_dict(self):
        return {'tokens': list(self.tokens)}

    def load_state_dict(self, state):
        self.tokens = list(state['tokens'])
        self.ids = {token: i for i, token in enumerate(self.tokens)}


class PadBatch:
    """Examples (source ids, target ids) -> (source, target) LongTensors padded with <pad>.

    The target is None when the examples have none (inference on raw inputs).
    """

    def __call__(self, batch):
        sources, targets = zip(*batch)
        target = None if any(t is None for t in targets) else pad(targets)
        return pad(sources), target


def pad(sequences):
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        out[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return out


class TextToExample:
    """Input converter: a command-line text is an example without a target."""

    def __call__(self, text):
        return text, None

# ---- models --------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Bidirectional GRU over the source: (memory, memory_mask, state).

    memory (batch, length, hidden) is what the decoder attends to, memory_mask marks real tokens,
    state (1, batch, hidden) starts the decoder.
    """

    def __init__(self, vocabulary_size, embedding_size=64, hidden_size=128):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f'hidden_size must be even (two directions), got {hidden_size}')
        self.embedding = nn.Embedding(vocabulary_size, embedding_size, padding_idx=PAD)
        self.gru = nn.GRU(embedding_size, hidden_size // 2, batch_first=True, bidirectional=True)

    def forward(self, source):
        mask = source != PAD
        lengths = mask.sum(1).cpu()
        packed = pack_padded_sequence(self.embedding(source), lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.gru(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])
        state = torch.cat([final[0], final[1]], dim=-1).unsqueeze(0)
        return memory, mask, state


class Decoder(nn.Module):
    """GRU decoder with (Luong) attention over the encoder memory; returns (logits,).

    Given the target it is teacher-forced: it reads <s> and the target shifted right, all steps at
    once. Without it, it decodes greedily, feeding back its own predictions, for at most
    `max_length` steps (fewer once every sequence has produced </s>).
    """

    def __init__(self, vocabulary_size, embedding_size=32, hidden_size=128, max_length=12):
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(vocabulary_size, embedding_size, padding_idx=PAD)
        self.gru = nn.GRU(embedding_size, hidden_size, batch_first=True)
        self.attention = nn.Linear(hidden_size, hidden_size, bias=False)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, vocabulary_size)

    def forward(self, memory, memory_mask, state, target=None):
        if target is not None:
            start = torch.full_like(target[:, :1], BOS)
            outputs, _ = self.gru(self.embedding(torch.cat([start, target[:, :-1]], dim=1)), state)
            return (self.predict(outputs, memory, memory_mask),)
        token = torch.full((memory.shape[0], 1), BOS, dtype=torch.long, device=memory.device)
        finished = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        steps = []
        for _ in range(self.max_length):
            output, state = self.gru(self.embedding(token), state)
            steps.append(self.predict(output, memory, memory_mask))
            token = steps[-1].argmax(-1)
            finished |= token[:, 0] == EOS
            if finished.all():
                break
        return (torch.cat(steps, dim=1),)

    def predict(self, outputs, memory, memory_mask):
        scores = self.attention(outputs) @ memory.transpose(1, 2)          # (batch, steps, source)
        scores = scores.masked_fill(~memory_mask.unsqueeze(1), float('-inf'))
        context = scores.softmax(-1) @ memory
        return self.out(torch.tanh(self.combine(torch.cat([outputs, context], dim=-1))))


def build_encoder(session, vocabulary, **kwargs):
    """factory_fn: an Encoder sized by the fitted vocabulary `session.preprocessors[vocabulary]`."""
    return Encoder(len(session.preprocessors[vocabulary]), **kwargs)


def build_decoder(session, vocabulary, **kwargs):
    """factory_fn: a Decoder sized by the fitted vocabulary `session.preprocessors[vocabulary]`."""
    return Decoder(len(session.preprocessors[vocabulary]), **kwargs)

# ---- losses, metrics, inference output -----------------------------------------------------------


def sequence_loss_inputs(logits, target):
    """Loss transform: CrossEntropyLoss wants classes in dimension 1: (batch, vocabulary, steps)."""
    return logits.transpose(1, 2), target


class DecodeTexts:
    """Metric transform (built with the session): logits and target ids -> predicted and true texts."""

    def __init__(self, session):
        self.vocabulary = session.preprocessors[TARGET_VOCABULARY]

    def __call__(self, logits, target):
        return decode_all(self.vocabulary, logits.argmax(-1)), decode_all(self.vocabulary, target)


def decode_all(vocabulary, ids):
    return [vocabulary.decode(row) for row in ids.tolist()]


class ExactMatch(torchmetrics.Metric):
    """Fraction of predicted texts equal to their targets."""
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state('correct', default=torch.tensor(0), dist_reduce_fx='sum')
        self.add_state('total', default=torch.tensor(0), dist_reduce_fx='sum')

    def update(self, predictions, targets):
        self.correct += sum(p == t for p, t in zip(predictions, targets))
        self.total += len(targets)

    def compute(self):
        return self.correct.float() / self.total.clamp(min=1)


class DecodePredictions:
    """Inference post-processor: the greedy decoder's logits -> {"digits": [text per input]}."""

    def __init__(self, session, vocabulary=TARGET_VOCABULARY, logits='logits', name='digits'):
        self.vocabulary = session.preprocessors[vocabulary]
        self.logits = logits
        self.name = name

    def __call__(self, results):
        return {self.name: decode_all(self.vocabulary, results[self.logits].argmax(-1))}
