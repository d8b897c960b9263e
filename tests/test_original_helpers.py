"""The helpers and rules the original TorchAssistant's own examples (at 9c43f07) need from us, one test
each: what their adapters, collators, post-processors and override specs call, as they call it."""
import json

import pytest
import torch

from torchassistant.collators import ColumnWiseCollator, no_transform, seqs_to_tensor
from torchassistant.loss_functions import MaskedCrossEntropy
from torchassistant.output_adapters import SelectVariables
from torchassistant.preprocessors import TextPreprocessor
from torchassistant.run.graph import BatchProcessor, Node, StepError
from torchassistant.spec import validate
from torchassistant.spec.loader import parse
from torchassistant.spec.merge import merge
from torchassistant.transforms import pad_targets
from torchassistant.utils import Mask, pad_sequences

pytestmark = pytest.mark.unit


# ---- torchassistant.utils.pad_sequences and Mask --------------------------------------------------

def test_pad_sequences_pads_to_the_longest_with_the_filler_and_masks_the_real_positions():
    sequences = [[0, 5, 6, 1], [0, 7, 1], [0, 1]]
    padded, mask = pad_sequences(sequences, 1)
    assert padded == [[0, 5, 6, 1], [0, 7, 1, 1], [0, 1, 1, 1]]
    assert sequences == [[0, 5, 6, 1], [0, 7, 1], [0, 1]], 'the given sequences are not changed'
    assert isinstance(mask, Mask) and mask.lengths == [4, 3, 2]
    assert mask.mask.tolist() == [[True] * 4, [True, True, True, False], [True, True, False, False]]
    assert mask.mask.dtype == torch.bool and mask.device == torch.device('cpu')
    # the translation example's use: a LongTensor of the padded rows, the last position cut
    assert torch.LongTensor(padded)[:, :-1].shape == (3, 3)


def test_pad_sequences_takes_tuples_and_an_empty_batch():
    padded, mask = pad_sequences([(3,), (4, 5)], 0)
    assert padded == [[3, 0], [4, 5]] and mask.lengths == [1, 2]
    padded, mask = pad_sequences([], 0)
    assert padded == [] and tuple(mask.mask.shape) == (0, 0)


def test_mask_to_gives_a_mask_on_that_device_and_keeps_the_original():
    mask = Mask([2, 1])
    moved = mask.to('meta')
    assert moved.device == torch.device('meta') and moved.lengths == [2, 1]
    assert mask.device == torch.device('cpu')
    assert Mask([1, 3], max_length=4).mask.tolist() == [[True, False, False, False], [True, True, True, False]]


def test_masked_cross_entropy_takes_a_utils_mask_as_it_takes_a_bool_tensor():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    targets = [[0, 4, 1], [0, 1]]
    _, padded, tensor_mask = pad_targets(logits, targets)
    _, mask = pad_sequences(targets, 1)
    loss = MaskedCrossEntropy()
    assert torch.equal(mask.mask, tensor_mask)
    assert loss(logits, padded, mask).item() == pytest.approx(loss(logits, padded, tensor_mask).item())


# ---- torchassistant.collators, as the example's collators module builds them ------------------------

def test_column_wise_collator_with_the_functions_the_translation_example_passes():
    collate = ColumnWiseCollator([seqs_to_tensor, no_transform])
    sources, targets = collate([([0, 4, 5, 1], [0, 7, 1]), ([0, 6, 1], [0, 8, 9, 1])])
    assert sources.tolist() == [[0, 4, 5, 1], [0, 6, 1, 1]], 'padded with the first row\'s last id (<end>)'
    assert targets == [[0, 7, 1], [0, 8, 9, 1]], 'the targets stay lists of ids'
    (only,) = ColumnWiseCollator([seqs_to_tensor])([([0, 3, 1],), ([0, 1],)])   # inference: one element
    assert only.tolist() == [[0, 3, 1], [0, 1, 1]]


# ---- TextPreprocessor: the lookups the example's post-processor reads -------------------------------

def test_text_preprocessor_has_the_original_word_lookups():
    text = TextPreprocessor()
    text.fit(['she is late', 'we are late'])
    assert text.num_words == text.num_classes == 8
    assert (text.sentence_start, text.sentence_end, text.out_of_vocab) == ('<start>', '<end>', '<OOV>')
    assert text.encode_word(text.sentence_end) == 1 and text.encode_word('late') == text.word_indices['late']
    assert text.encode_word('never-seen') == text.OOV
    assert text.index2word[text.encode_word('we')] == 'we' and text.index2word.get(99, 'OOV') == 'OOV'
    assert text.decode_token(99) == '<OOV>'
    ids = text.process('we are late')
    assert ''.join(text.index2word[i] for i in ids[1:ids.index(text.encode_word(text.sentence_end))]) == 'wearelate'


def test_text_preprocessor_lookups_follow_a_restored_vocabulary():
    text = TextPreprocessor()
    text.fit(['a b'])
    assert text.index2word[3] == 'a'
    restored = TextPreprocessor()
    restored.load_state_dict(json.loads(json.dumps(text.state_dict())))
    assert restored.index2word == text.index2word and restored.encode_word('b') == 4
    restored.fit(['x'])                    # refitting replaces the cached lookups too
    assert restored.index2word[3] == 'x' and restored.encode_word('a') == restored.OOV


# ---- batch processors: adapters as the original called them ----------------------------------------

class Doubler(torch.nn.Module):
    def forward(self, x):
        self.seen_device = x.device
        return [x * 2]


def processor(input_adapter=None, output_adapter=None, session_device=None):
    node = Node('doubler', Doubler(), ['x'], ['y_hat'])
    return BatchProcessor('p', [node], input_adapter, output_adapter, session_device=session_device)


def test_an_output_adapter_sees_the_frame_with_the_outputs_and_may_replace_a_frame_variable():
    def drop_start(values):           # the translation example's OutputAdapter: targets lose <start>
        values['input_2'] = [seq[1:] for seq in values['input_2']]
        return values

    frame = {'x': torch.ones(2), 'input_2': [[0, 5, 1], [0, 1]]}
    result = processor(output_adapter=drop_start)(frame)
    assert result['input_2'] == [[5, 1], [1]] and torch.equal(result['y_hat'], torch.full((2,), 2.0))
    assert frame['input_2'] == [[0, 5, 1], [0, 1]], 'the frame given is not changed'


def test_select_variables_still_keeps_the_frame():
    result = processor(output_adapter=SelectVariables(['y_hat']))({'x': torch.ones(1), 'input_2': [3]})
    assert set(result) == {'x', 'input_2', 'y_hat'}


def test_a_failing_adapter_is_named_with_what_it_received():
    def broken(values):
        return values['no such variable']

    with pytest.raises(StepError) as caught:
        processor(output_adapter=broken)({'x': torch.ones(1)})
    assert caught.value.where == 'the output adapter (function) of batch processor "p"'
    assert set(caught.value.received) == {'x', 'y_hat'} and isinstance(caught.value.original, KeyError)
    with pytest.raises(StepError, match='the input adapter'):
        processor(input_adapter=broken)({'x': torch.ones(1)})


def test_what_an_input_adapter_makes_goes_to_the_session_device():
    """The example's adapter makes its zero hidden state on the CPU; the models may be on a GPU. ("meta"
    stands in for another device: the move is what is tested.)"""
    def adapter(frame):
        return {'doubler': {'x': torch.zeros(3)}}

    moved = processor(input_adapter=adapter, session_device='meta')
    moved({'x': torch.ones(3)})
    assert moved.nodes[0].model.seen_device == torch.device('meta')
    kept = processor(input_adapter=adapter)
    kept({'x': torch.ones(3)})
    assert kept.nodes[0].model.seen_device == torch.device('cpu')


# ---- overrides and the inference spec --------------------------------------------------------------

def test_an_override_naming_a_class_replaces_a_factory_fn_and_keeps_the_kwargs():
    """The example's inference spec turns the training input adapter (a factory_fn with hidden_size)
    into a class; the class is then built with the kwargs it merged with."""
    original = {'factory_fn': 'pkg.build_input_adapter', 'kwargs': {'hidden_size': 32}}
    assert merge(original, {'class': 'pkg.BatchInferenceAdapter'}) == \
        {'class': 'pkg.BatchInferenceAdapter', 'kwargs': {'hidden_size': 32}}
    assert merge({'class': 'pkg.A', 'args': [1]}, {'factory_fn': 'pkg.make'}) == {'factory_fn': 'pkg.make', 'args': [1]}
    assert merge({'class': 'pkg.A'}, {'class': 'pkg.B', 'factory_fn': 'pkg.make'}) == \
        {'class': 'pkg.B', 'factory_fn': 'pkg.make'}, 'both given: the override is kept as written (an error later)'


def test_an_inference_spec_may_leave_out_its_pipeline_and_carry_a_top_level_input_adapter():
    spec = {'session_dir': 'pretrained',
            'input_adapter': {'class': 'examples.language_translation.adapters.InputAdapter'},
            'inputs_meta': [{'input_port': 'default_port',
                             'input_converter': {'class': 'torchassistant.output_adapters.SelectVariables',
                                                 'args': [['x']]}}]}
    assert validate.check(parse(json.dumps(spec), 'inference.json'), 'inference') == []
    spec['input_adapter'] = {'clas': 'x.Y'}
    problems = validate.check(parse(json.dumps(spec), 'inference.json'), 'inference')
    assert [p.path for p in problems] == [('input_adapter', 'clas')], 'its shape is still checked'
