"""The built-in Classification post-processor: labels, probabilities and top-k from class scores, with class
names from the spec or a dataset's `classes` (tests/test_serve.py: through infer --json and serve)."""
import math
import re

import pytest
import torch
from torch.utils.data import Dataset, Subset

from torchassistant.assembly.build import Entities
from torchassistant.postprocessors import Classification

pytestmark = pytest.mark.unit

SCORES = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, -1.0]])


class Named(Dataset):
    classes = ['cat', 'dog', 'emu']

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return index


def session_with(name, dataset):
    entities = Entities()
    entities.add('datasets', name, dataset)
    return entities


def test_labels_probabilities_and_top_k_from_logits():
    out = Classification(Entities(), top_k=2, decimals=None)({'y_hat': SCORES})
    assert list(out) == ['label', 'probability', 'top']
    assert out['label'] == [1, 0]
    expected = SCORES.softmax(1)
    assert out['probability'] == pytest.approx([expected[0, 1].item(), expected[1, 0].item()])
    assert [[t['label'] for t in row] for row in out['top']] == [[1, 2], [0, 1]]
    assert out['top'][0][1]['probability'] == pytest.approx(expected[0, 2].item())
    assert all(row[0]['probability'] >= row[1]['probability'] for row in out['top'])


def test_class_names_from_a_list_or_a_datasets_classes_through_slices():
    listed = Classification(Entities(), classes=['a', 'b', 'c'], top_k=5)({'y_hat': SCORES})
    assert listed['label'] == ['b', 'a'] and len(listed['top'][0]) == 3       # top_k capped at the class count
    named = Classification(session_with('ds', Subset(Named(), [0])), classes='ds')({'y_hat': SCORES})
    assert named['label'] == ['dog', 'cat']
    assert named['probability'][0] == round(SCORES.softmax(1)[0, 1].item(), 4)       # 4 decimals by default


def test_probabilities_given_raw_results_kept_and_another_result_read():
    probabilities = torch.tensor([[0.1, 0.9], [0.6, 0.4]])
    out = Classification(Entities(), scores='p', logits=False, raw=True, top_k=1)({'p': probabilities, 'x': 1})
    assert out['label'] == [1, 0] and out['probability'] == pytest.approx([0.9, 0.6])
    assert out['p'] is probabilities and out['x'] == 1
    assert math.isclose(sum(t['probability'] for t in out['top'][0]), 0.9)


@pytest.mark.parametrize('make, results, says', [
    (lambda: Classification(Entities()), {'logits': SCORES}, 'reads the scores from result "y_hat"'),
    (lambda: Classification(Entities()), {'y_hat': SCORES[0]}, 'shape (batch, classes)'),
    (lambda: Classification(Entities(), classes=['a', 'b']), {'y_hat': SCORES}, '3 scores per example but 2 class'),
    (lambda: Classification(Entities(), top_k=0), None, 'top_k must be an integer >= 1'),
    (lambda: Classification(session_with('plain', [1, 2]), classes='plain'), None, 'has no "classes" attribute'),
    (lambda: Classification(Entities(), classes=[]), None, 'classes is empty'),
])
def test_mistakes_are_named(make, results, says):
    with pytest.raises((KeyError, ValueError), match=re.escape(says)):
        make()(results)
