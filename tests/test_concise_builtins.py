"""The built-ins concise specs rely on: preprocessors, column-wise collation, transforms, the masked
loss, output devices and EarlyStopping."""
import json
import os

import numpy
import pytest
import torch
from PIL import Image

from torchassistant.collators import (
    CollationError,
    ColumnWiseCollator,
    SeqsToOneHot,
    StackTensors,
    images_to_tensor,
    no_transform,
    seqs_to_tensor,
    stack_tensors,
    to_float_tensor,
    to_long_tensor,
)
from torchassistant.loss_functions import MaskedCrossEntropy
from torchassistant.output_devices import Printer, SaveAsImages
from torchassistant.preprocessors import (
    ImagePreprocessor,
    NullProcessor,
    SimpleNormalizer,
    TextPreprocessor,
    TrainablePreprocessor,
    fit_sample_size,
)
from torchassistant.stop_conditions import EarlyStopping
from torchassistant.transforms import DecodeText, pad_targets, reverse_onehot

pytestmark = pytest.mark.unit


def gray(value, size=4):
    return Image.new('L', (size, size), value)


def json_round_trip(state):
    return json.loads(json.dumps(state))


# ---- preprocessors -------------------------------------------------------------------------------

def test_image_preprocessor_pools_pixels_and_restores_from_plain_data():
    images = [(gray(0), 1), (gray(255), 2), (gray(255), 3), (gray(0), 4)]
    pre = ImagePreprocessor(0)
    pre.fit(images)
    assert pre.mu == pytest.approx([0.5]) and pre.sd == pytest.approx([0.5]), 'pooled std over all pixels'
    again = ImagePreprocessor()
    again.load_state_dict(json_round_trip(pre.state_dict()))
    out = again.process(gray(255))
    assert out.shape == (1, 4, 4) and out.dtype == torch.float32 and torch.allclose(out, torch.ones(1, 4, 4))
    assert again.process(None) is None


def test_image_preprocessor_guards_constant_channels_and_channel_counts():
    pre = ImagePreprocessor(0)
    pre.fit([(gray(7),)] * 3)
    assert pre.sd == [1.0]
    with pytest.raises(ValueError, match='has 3 channel'):
        pre.process(Image.new('RGB', (4, 4)))
    with pytest.raises(ValueError, match='channel'):
        ImagePreprocessor(0).fit([(gray(1),), (Image.new('RGB', (4, 4)),)])


def test_text_preprocessor_adds_each_word_once():
    pre = TextPreprocessor(1)
    torch.manual_seed(0)          # the fit sample's order follows the seed (this one keeps the examples' order)
    pre.fit([('x', 'the cat, the dog!'), ('y', 'The cat')])
    assert pre.words == ['<start>', '<end>', '<OOV>', 'the', 'cat', 'dog', 'The'] and pre.num_classes == 7
    assert pre.process('the bird dog') == [0, 3, 2, 5, 1]
    assert pre.decode([3, 4, 99]) == 'the cat <OOV>'
    again = TextPreprocessor()
    again.load_state_dict(json_round_trip(pre.state_dict()))
    assert again.process('dog') == [0, 5, 1] and again.fit_index == 1


def test_trainable_preprocessor_sample_size_and_order():
    assert [fit_sample_size(n) for n in (10, 1000, 1001, 20_000, 2_000_000)] == [10, 1000, 500, 2000, 20_000]

    class Collect(TrainablePreprocessor):
        def learn(self, values):
            self.seen = values

    data = [(i, -i) for i in range(3000)]
    torch.manual_seed(1)
    first, second = Collect(1), Collect(1)
    first.fit(data)
    torch.rand(5)                                   # the global stream moved: the sample does not
    second.fit(data)
    assert len(first.seen) == 1500 and first.seen == second.seen and first.seen != sorted(first.seen, reverse=True)
    with pytest.raises(ValueError, match='element 2'):
        Collect(2).fit(data)


def test_simple_preprocessors():
    assert NullProcessor().process('x') == 'x'
    assert SimpleNormalizer().process(torch.tensor([255.0])).item() == 1.0


# ---- collators -----------------------------------------------------------------------------------

def test_column_functions():
    assert torch.equal(to_long_tensor([1, 2]), torch.tensor([1, 2]))
    assert to_float_tensor([1, 2.5]).dtype == torch.float32
    assert images_to_tensor([gray(255), gray(0)]).shape == (2, 1, 4, 4)
    assert stack_tensors([torch.zeros(2), torch.ones(2)]).shape == (2, 2)
    assert no_transform(([1], [2, 3])) == [[1], [2, 3]]
    padded = seqs_to_tensor([[0, 5, 1], [0, 1]])
    assert padded.tolist() == [[0, 5, 1], [0, 1, 1]], 'padded with the last id of the first sequence'
    one_hot = SeqsToOneHot(6)([[0, 5, 1], [0, 1]])
    assert one_hot.shape == (2, 3, 6) and one_hot.dtype == torch.float32 and one_hot[0, 1, 5] == 1
    with pytest.raises(ValueError, match='id 6 is out of range'):
        SeqsToOneHot(6)([[0, 6]])


def test_column_wise_collator():
    collator = ColumnWiseCollator(['stack_tensors', {'class': 'SeqsToOneHot', 'args': [4]}, to_long_tensor])
    x, ids, y = collator([(torch.zeros(2), [1, 2], 3), (torch.ones(2), [3], 1)])
    assert x.shape == (2, 2) and ids.shape == (2, 2, 4) and y.tolist() == [3, 1]
    inputs, target = ColumnWiseCollator(['stack_tensors', 'to_long_tensor'])([(torch.zeros(2), None)])
    assert target is None, 'inference examples carry no target'
    with pytest.raises(CollationError, match='has 3 element'):
        ColumnWiseCollator(['no_transform'] * 2)([(1, 2, 3)])
    with pytest.raises(CollationError, match='column 1 \\(to_long_tensor\\)'):
        ColumnWiseCollator(['to_long_tensor'])([('a',)])
    assert [t.tolist() for t in StackTensors()([(torch.zeros(1), 2), (torch.ones(1), 3)])] == [[[0.0], [1.0]], [2, 3]]


# ---- transforms and the masked loss --------------------------------------------------------------

def test_reverse_onehot_and_pad_targets():
    labels, targets = reverse_onehot(torch.tensor([[0.1, 0.9], [2.0, 1.0]]), [1, 0])
    assert labels.tolist() == [1, 0] and targets.tolist() == [1, 0]
    y_hat, padded, mask = pad_targets('y', [[4, 5, 6], [7]])
    assert y_hat == 'y' and padded.tolist() == [[4, 5, 6], [7, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]] and mask.to('cpu').dtype == torch.bool


def test_masked_cross_entropy_ignores_padding():
    logits = torch.randn(2, 3, 5)
    targets = torch.tensor([[1, 2, 3], [4, 0, 0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    real = torch.nn.functional.cross_entropy(torch.cat([logits[0], logits[1, :1]]), torch.tensor([1, 2, 3, 4]))
    assert MaskedCrossEntropy()(logits, targets, mask).item() == pytest.approx(real.item())
    with pytest.raises(ValueError, match='same B and T'):
        MaskedCrossEntropy()(logits, targets[:, :2], mask[:, :2])


def test_decode_text_uses_the_target_preprocessor():
    from torchassistant.run.data import PreprocessedDataset
    source, target = TextPreprocessor(0), TextPreprocessor(1)
    pairs = [('a b', 'x y'), ('b', 'y')]
    source.fit(pairs)
    target.fit(pairs)
    dataset = PreprocessedDataset(pairs, [source, target])
    from torchassistant.assembly.build import Entities
    session = Entities()
    session.add('data_loaders', 'l', torch.utils.data.DataLoader(dataset))
    decode = DecodeText(session)
    assert decode.decoder is target
    ids = [target.process('x y'), target.process('y')]          # <start> x y <end>; <start> y <end>
    x, y = ids[0][1:3]
    predicted_ids = [[0, x, y, 1], [0, y, 1, x]]                 # the second: <end>, then padding
    y_hat = torch.nn.functional.one_hot(torch.tensor(predicted_ids), target.num_classes).float()
    predicted, expected = decode(y_hat, ids)
    assert expected == ['x y', 'y'] and predicted == ['x y', 'y'], 'cut at <end>; padding ignored'
    session = Entities()
    session.add('data_loaders', 'l', torch.utils.data.DataLoader([(1, 2)]))
    with pytest.raises(ValueError, match='cannot decode predictions'):
        DecodeText(session)


# ---- output devices ------------------------------------------------------------------------------

def test_printer(capsys):
    Printer()({'y_hat': torch.tensor([1, 2]), 'text': 'ok'})
    assert capsys.readouterr().out == 'y_hat:tensor([1, 2])\ntext:ok\n'


def test_save_as_images_writes_bytes_under_unique_names(tmp_path):
    device = SaveAsImages(str(tmp_path / 'out'), mean=0.5, std=0.5)
    images = torch.zeros(10, 1, 4, 4)
    images[0] = 1.0                         # x * 0.5 + 0.5 = 1 -> white
    first = device({'other': 1, 'images': images})
    second = device({'images': images})
    assert first != second and sorted(os.listdir(tmp_path / 'out')) == sorted(map(os.path.basename, (first, second)))
    with Image.open(first) as picture:
        pixels = torch.from_numpy(numpy.array(picture.convert('L')))
    assert picture.width == 8 * 4 + 9 * 2 and picture.height == 2 * 4 + 3 * 2, 'tiled 8 per row'
    assert pixels[2, 2] == 255 and pixels[2, 8] == 128, 'un-normalised, scaled to bytes'


# ---- EarlyStopping -------------------------------------------------------------------------------

def rows(*values, name='val loss'):
    return [{name: v, 'loss': 0.0} for v in values]


@pytest.mark.parametrize('values, stops', [
    ((1.0, 0.9, 0.8), False),
    ((1.0, 1.1), False),                      # one worse epoch: patience 1 allows it
    ((1.0, 1.1, 1.2), True),                  # two worse in a row
    ((1.0, 1.0, 1.0), False),                 # equal to the best does not count
    ((1.0, 0.5, 0.7, 0.6), True),             # oscillating: 0.7 and 0.6 both fail to beat 0.5
    ((1.0, 0.5, 0.7, 0.4, 0.6), False),
    ((1.0, float('nan'), float('nan')), True),
])
def test_early_stopping_compares_with_the_best_so_far(values, stops):
    assert EarlyStopping('val loss')(len(values), rows(*values)) is stops


def test_early_stopping_options():
    assert EarlyStopping('val loss', min_delta=0.1)(3, rows(1.0, 0.95, 0.92))
    assert not EarlyStopping('val loss', patience=2)(3, rows(1.0, 1.1, 1.2))
    assert EarlyStopping('val acc', mode='max')(3, rows(0.9, 0.8, 0.85, name='val acc'))
    assert not EarlyStopping('val loss')(0, [])
    with pytest.raises(ValueError, match='does not record; its rows have: val loss, loss'):
        EarlyStopping('val los')(1, rows(1.0))
    with pytest.raises(ValueError, match='mode'):
        EarlyStopping('val loss', mode='best')
