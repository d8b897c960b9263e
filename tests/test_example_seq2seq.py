"""The seq2seq example (examples/seq2seq): its user code, and its specs end to end on a tiny setting."""
import csv
import json
import os
import re

import pytest
import torch
from conftest import REPO, run_script, write_json

from examples.seq2seq import NumberWords, PadBatch, Vocabulary, number_to_words

pytestmark = pytest.mark.e2e


EXAMPLE = os.path.join(REPO, 'examples', 'seq2seq')
FLOAT = r'\d+\.\d{4}'
INPUTS = ['three hundred twelve', 'forty two', 'seven']
EPOCHS = (3, 1)


@pytest.mark.parametrize('number, words', [
    (0, 'zero'), (7, 'seven'), (15, 'fifteen'), (40, 'forty'), (42, 'forty two'), (100, 'one hundred'),
    (312, 'three hundred twelve'), (42007, 'forty two thousand seven'), (1000000, 'one million'),
    (900000090, 'nine hundred million ninety'),
])
def test_number_to_words(number, words):
    assert number_to_words(number) == words


def test_dataset_is_generated_from_its_seed():
    first, again, other = NumberWords(50, seed=3), NumberWords(50, seed=3), NumberWords(50, seed=4)
    assert [first[i] for i in range(50)] == [again[i] for i in range(50)]
    assert [first[i] for i in range(50)] != [other[i] for i in range(50)]
    assert all(words == number_to_words(int(digits)) for words, digits in (first[i] for i in range(50)))
    assert {len(digits) for _, digits in (NumberWords(300, max_digits=3)[i] for i in range(300))} == {1, 2, 3}


def test_vocabulary_round_trip_and_state():
    data = [('forty two', '42'), ('seven', '7'), ('forty', '40')]
    words = Vocabulary(element=0, level='word')
    words.fit(data)
    assert words.tokens[4] == 'forty'                    # most frequent first
    ids = words.process('forty two')
    assert ids[-1] == 2 and words.decode(ids) == 'forty two'
    assert words.process('forty million')[1] == 3        # unknown -> <unk>
    assert words.process(None) is None
    restored = Vocabulary(element=0, level='word', max_size=1)
    restored.load_state_dict(words.state_dict())
    assert restored.tokens == words.tokens and restored.process('seven') == words.process('seven')
    source, target = PadBatch()([([5, 6, 2], [4, 2]), ([7, 2], None)])
    assert source.tolist() == [[5, 6, 2], [7, 2, 0]] and target is None


def tiny_training_spec():
    """The example's training spec on 1,500 numbers below 1000, small models, 3 + 1 epochs (seconds)."""
    with open(os.path.join(EXAMPLE, 'training.json')) as f:
        spec = json.load(f)
    for definition in spec['initialize']['definitions']:
        name, kwargs = definition['name'], definition['spec'].get('kwargs', {})
        if name == 'numbers':
            kwargs.update(size=1500, max_digits=3)
        if definition['group'] == 'models':
            kwargs.update(embedding_size=32, hidden_size=64)
        if name == 'train_loader':
            kwargs['batch_size'] = 32
    for stage, epochs in zip(spec['train']['stages'], EPOCHS):
        stage['stop_condition']['kwargs']['num_epochs'] = epochs
    return spec


@pytest.fixture
def project(tmp_path, monkeypatch):
    # One intra-op thread: on a shared 2-core machine torch's default threads wait on each other.
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    write_json(tmp_path / 'training.json', tiny_training_spec())
    for name in ('evaluation.json', 'inference.json'):
        with open(os.path.join(EXAMPLE, name)) as f:
            (tmp_path / name).write_text(f.read())
    return tmp_path


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_seq2seq_end_to_end(project):
    session = project / 'seq2seq_pretrained'
    check(run_script('init.py', 'training.json', cwd=project))

    out = check(run_script('train.py', 'seq2seq_pretrained', cwd=project))
    assert 'Training stage 0 in progress' in out and 'Training stage 1 in progress' in out
    rows = []
    for stage, epochs in enumerate(EPOCHS):
        with open(session / 'metrics' / f'{stage}.csv') as f:
            header, *stage_rows = csv.reader(f)
        assert header == ['epoch', 'tf cer', 'loss', 'val cer', 'val exact']
        assert [r[0] for r in stage_rows] == [str(e) for e in range(1, epochs + 1)]
        rows += [list(map(float, r[1:])) for r in stage_rows]
    for tf_cer, loss, val_cer, val_exact in rows:
        assert 0 <= tf_cer <= 2 and 0 < loss and 0 <= val_cer <= 2 and 0 <= val_exact <= 1
    assert rows[-1][2] < 0.3 and rows[-1][2] < rows[0][2], rows      # it learns: greedy CER falls

    # the models were built from the fitted vocabularies stored in the session
    learned = torch.load(session / 'learned.pt', weights_only=True)['preprocessors']
    words, digits = learned['words']['tokens'], learned['digits']['tokens']
    assert sorted(digits[4:]) == list('0123456789')
    assert 'hundred' in words and 'thousand' not in words          # fitted on 3-digit numbers
    models = torch.load(session / 'checkpoints' / f'epoch_{sum(EPOCHS)}.pt', weights_only=True)['models']
    assert models['encoder']['embedding.weight'].shape[0] == len(words)
    assert models['decoder']['out.weight'].shape[0] == len(digits)

    out = check(run_script('evaluate.py', 'evaluation.json', cwd=project))
    row = re.fullmatch(rf'\[val cer ({FLOAT}), val exact ({FLOAT}), test cer ({FLOAT}), test exact ({FLOAT})\]',
                       out.strip())
    assert row, out                 # the test pipeline and its loader exist only in the overrides
    assert 0 <= float(row[3]) <= 2 and 0 <= float(row[4]) <= 1

    # Overrides that would shrink the vocabularies if they were fitted again: the fitted ones are
    # restored instead, so the models load and score exactly as before.
    evaluation = json.loads((project / 'evaluation.json').read_text())
    evaluation['initialize']['definitions']['options'] += [
        {'group': 'preprocessors', 'name': name, 'spec': {'fit': 'numbers_split.val', 'kwargs': {'max_size': 2}}}
        for name in ('words', 'digits')]
    write_json(project / 'refit.json', evaluation)
    assert check(run_script('evaluate.py', 'refit.json', cwd=project)) == out

    out = check(run_script('infer.py', 'inference.json', *INPUTS, cwd=project)).splitlines()
    assert out[0] == f'Running inference on:  {INPUTS}'
    assert re.fullmatch(r"digits:\[('\d+'(, )?){3}\]", out[1]), out
    decoded = re.findall(r"'(\d+)'", out[1])
    assert sum(d == t for d, t in zip(decoded, ['312', '42', '7'])) >= 2, out
