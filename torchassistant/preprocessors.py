"""Preprocessors transform one element of each example; learnable ones are fitted once, at init.

Fitted state is plain data: `state_dict()` returns numbers, strings and lists that the session
stores, and `load_state_dict()` takes them back, so restoring a session never refits or unpickles.
A preprocessor passes `None` through (an inference input without its target).
"""
import re

import torch

from torchassistant.spec.rules import example_elements


class ValuePreprocessor:
    """Base class for preprocessors.

    Override `process(value)`; override `fit(dataset)` to learn from a dataset (called once, at
    `init`). The fitted state stored in the session is `state_dict()`, by default the instance's
    attributes, so subclasses that keep their state in plain attributes need nothing more.
    """

    def fit(self, dataset):
        pass

    def process(self, value):
        return value

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)


class NullProcessor(ValuePreprocessor):
    """The identity."""


class SimpleNormalizer(ValuePreprocessor):
    """Divides by 255: pixel bytes to [0, 1]."""

    def process(self, value):
        return None if value is None else value / 255


def fit_sample_size(length):
    """How many examples a trainable preprocessor reads: floor(N * f), f = 0.01 above 10^6 examples,
    0.1 above 10^4, 0.5 above 10^3, else 1 (all of them)."""
    fraction = 0.01 if length > 10 ** 6 else 0.1 if length > 10 ** 4 else 0.5 if length > 10 ** 3 else 1
    return int(length * fraction)


class TrainablePreprocessor(ValuePreprocessor):
    """A preprocessor that learns from element `fit_index` of a sample of the fit dataset.

    The sample is `fit_sample_size(N)` examples in a random order drawn from the session's seed
    (`torch.initial_seed()`, without touching the global random stream), or the first ones when
    N >= 10^7. Subclasses implement `learn(values)`, `process(value)` and their state.
    """

    def __init__(self, fit_index=0):
        if isinstance(fit_index, bool) or not isinstance(fit_index, int) or fit_index < 0:
            raise ValueError(f'fit_index must be the position of an element in an example (0, 1, ...), '
                             f'not {fit_index!r}')
        self.fit_index = fit_index

    def fit(self, dataset):
        self.learn(self.sample(dataset))

    def sample(self, dataset):
        """Element `fit_index` of each example of the fit sample."""
        length = len(dataset)
        count = fit_sample_size(length)
        if length < 10 ** 7:
            generator = torch.Generator().manual_seed(torch.initial_seed() % 2 ** 63)
            indices = torch.randperm(length, generator=generator)[:count].tolist()
        else:
            indices = range(count)
        values = []
        for index in indices:
            elements = example_elements(dataset[index])
            if self.fit_index >= len(elements):
                raise ValueError(f'{type(self).__name__} is fitted on element {self.fit_index} of each example, '
                                 f'but example {index} has {len(elements)} element(s)')
            values.append(elements[self.fit_index])
        return values

    def learn(self, values):
        raise NotImplementedError(f'{type(self).__name__} must implement learn(values)')


class ImagePreprocessor(TrainablePreprocessor):
    """An image (PIL, or anything ToTensor takes) -> float C x H x W tensor, each channel standardised
    with the mean and standard deviation of its pixels over the fit sample (pooled over all pixels
    of all sampled images; a channel that never varies keeps std 1)."""

    def __init__(self, fit_index=0):
        super().__init__(fit_index)
        self.mu = []
        self.sd = []
        self._scale = None

    def learn(self, images):
        total = squares = None
        count = 0
        for index, image in enumerate(images):
            pixels = _to_tensor(image).double().flatten(1)      # C x (H*W)
            if total is not None and pixels.shape[0] != total.shape[0]:
                raise ValueError(f'image {index} of the fit sample has {pixels.shape[0]} channel(s), the first '
                                 f'had {total.shape[0]}: ImagePreprocessor needs images of one channel count')
            total = pixels.sum(1) if total is None else total + pixels.sum(1)
            squares = pixels.square().sum(1) if squares is None else squares + pixels.square().sum(1)
            count += pixels.shape[1]
        if not count:
            raise ValueError('ImagePreprocessor has no image to fit on: the fit dataset is empty')
        mean = total / count
        std = (squares / count - mean.square()).clamp(min=0).sqrt()
        self.mu = [float(m) for m in mean]
        self.sd = [float(s) if s > 1e-8 else 1.0 for s in std]
        self._scale = None

    def process(self, image):
        if image is None:
            return None
        if not self.mu:
            raise ValueError('ImagePreprocessor is not fitted: give its definition "fit" (a dataset name)')
        x = _to_tensor(image)
        if x.shape[0] != len(self.mu):
            raise ValueError(f'this image has {x.shape[0]} channel(s); ImagePreprocessor was fitted on images '
                             f'with {len(self.mu)}')
        if self._scale is None:
            self._scale = (torch.tensor(self.mu).view(-1, 1, 1), torch.tensor(self.sd).view(-1, 1, 1))
        mean, std = self._scale
        return (x - mean) / std

    def state_dict(self):
        return {'fit_index': self.fit_index, 'mu': list(self.mu), 'sd': list(self.sd)}

    def load_state_dict(self, state):
        self.fit_index, self.mu, self.sd = state['fit_index'], list(state['mu']), list(state['sd'])
        self._scale = None


def _to_tensor(image):
    from torchvision.transforms.functional import to_tensor  # torchvision only where images are
    return to_tensor(image)


class TextPreprocessor(TrainablePreprocessor):
    """Text -> [<start> id, word ids..., <end> id]. Words are runs of word characters (punctuation is
    dropped, case kept); ids 0, 1 and 2 are <start>, <end> and <OOV> (a word not seen in fitting).
    `num_classes` is the vocabulary size; `decode(ids)` turns ids back into words."""
    START, END, OOV = 0, 1, 2
    SPECIAL = ('<start>', '<end>', '<OOV>')
    sentence_start, sentence_end, out_of_vocab = SPECIAL      # the original's names of the special words

    def __init__(self, fit_index=0):
        super().__init__(fit_index)
        self.words = list(self.SPECIAL)
        self._ids = self._words_by_id = None

    @staticmethod
    def tokenize(text):
        return re.findall(r'\w+', text)

    def learn(self, texts):
        known = set(self.SPECIAL)
        self.words = list(self.SPECIAL)
        for text in texts:
            for word in self.tokenize(text):
                if word not in known:         # each word once: ids are stable and the vocabulary small
                    known.add(word)
                    self.words.append(word)
        self._ids = self._words_by_id = None

    @property
    def num_classes(self):
        return len(self.words)

    @property
    def num_words(self):
        """The original's name for `num_classes` (its translation example's factory reads it)."""
        return self.num_classes

    def process(self, text):
        if text is None:
            return None
        ids = self.word_indices
        return [self.START] + [ids.get(word, self.OOV) for word in self.tokenize(text)] + [self.END]

    def decode(self, ids):
        return ' '.join(self.decode_token(i) for i in ids)

    # the original's lookups, which its translation example's post-processor uses

    def encode_word(self, word):
        """The id of `word` (<OOV>'s for a word not seen in fitting)."""
        return self.word_indices.get(word, self.OOV)

    def decode_token(self, token):
        """The word of id `token` ('<OOV>' for an id outside the vocabulary)."""
        return self.words[token] if 0 <= token < len(self.words) else self.out_of_vocab

    @property
    def word_indices(self):
        """{word: id}."""
        if self._ids is None:
            self._ids = {word: i for i, word in enumerate(self.words)}
        return self._ids

    @property
    def index2word(self):
        """{id: word}."""
        if self._words_by_id is None:
            self._words_by_id = dict(enumerate(self.words))
        return self._words_by_id

    def state_dict(self):
        return {'fit_index': self.fit_index, 'words': list(self.words)}

    def load_state_dict(self, state):
        self.fit_index, self.words = state['fit_index'], list(state['words'])
        self._ids = self._words_by_id = None
