"""Property tests: whatever is wrong with a spec, validation answers with SpecError (every problem
located and explained) or accepts it; it never crashes with another exception.

The spec fuzz mutates the example training spec (and a richer variant using splits, preprocessors,
a scheduler and a batch graph) as a JSON tree; the text fuzz edits the bytes of the file.
Validation runs in-process through `commands.load_spec`, which writes and builds nothing.
"""
import copy
import json
import re
import string
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from torchassistant.cli import commands  # noqa: E402
from torchassistant.core.errors import SpecError  # noqa: E402
from torchassistant.spec import loader  # noqa: E402

pytestmark = pytest.mark.unit


EXAMPLE = json.loads((REPO / 'examples' / 'mnist' / 'training.json').read_text())
SPEC = 'training.json'
LOCATED = re.compile(r'training\.json:(\d+):(\d+)[ :]')
FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def richer_example():
    """The example plus a split, a fitted preprocessor on a linked dataset, a scheduler, a batch
    graph with two ports, explicit node names, eval_steps and debug pipelines: more to break."""
    spec = copy.deepcopy(EXAMPLE)
    definitions = spec['initialize']['definitions']
    definitions[1:1] = [
        {'group': 'splits', 'name': 'my_split', 'spec': {'dataset_name': 'train_ds', 'ratio': [0.7, 0.2, 0.1]}},
        {'group': 'preprocessors', 'name': 'identity', 'spec': {
            'class': 'ValuePreprocessor', 'fit': 'my_split.train'}},
        {'group': 'datasets', 'name': 'linked', 'spec': {'link': 'my_split.val', 'preprocessors': ['identity']}},
    ]
    loader_spec = next(d for d in definitions if d['name'] == 'test_loader')['spec']
    loader_spec['dataset'] = 'linked'
    optimizer = next(d for d in definitions if d['name'] == 'optimizer')['spec']
    optimizer['lr_scheduler'] = {'class': 'StepLR', 'kwargs': {'step_size': 1, 'gamma': 0.5}}
    definitions += [
        {'group': 'batch_processors', 'name': 'classify', 'spec': {'neural_graph': [
            {'model_name': 'LeNet5', 'inputs': ['image'], 'outputs': ['y_hat'], 'optimizer_name': 'optimizer'}]}},
        {'group': 'batch_graphs', 'name': 'graph', 'spec': {
            'nodes': ['classify'], 'input_ports': ['train_port', 'test_port'],
            'ingoing_edges': {'classify': ['train_port', 'test_port']}}},
    ]
    for name, port in (('training_pipeline', 'train_port'), ('evaluation_pipeline', 'test_port')):
        pipeline = spec['initialize']['pipelines'][name]
        pipeline['graph'] = 'graph'
        pipeline['input_injector'][0].update(variable_names=['image', 'label'], input_port=port)
        for use in pipeline['losses'] + pipeline['metrics']:
            use['node_name'] = 'classify'
    for definition in definitions:
        if definition['group'] in ('losses', 'metrics'):
            definition['spec']['inputs'] = ['y_hat', 'label']
    stage = spec['train']['stages'][0]
    stage.update(eval_steps=0.5, debug_pipelines=['evaluation_pipeline'], mode='interleave')
    return spec


BASES = {'example': EXAMPLE, 'richer': richer_example()}

# Values a mutation may put anywhere: every JSON type, edge numbers, names that exist elsewhere.
ODD_VALUES = [None, True, False, 0, 1, -1, 3, 0.5, -0.25, 1.5, 1e9, '', ' ', 'x', 'input_1', 'y_hat',
              'LeNet5', 'train_ds', 'my_split.test', 'Adam', 'examples.mnist', 'torch.nn.Linear', [], [None],
              ['y_hat'], [1, 2, 3], {}, {'class': 'Adam'}, {'name': 'x'}, {'group': 'models'}]


# ---- a JSON tree and its paths ----------------------------------------------------------------------

def all_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from all_paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from all_paths(item, path + (index,))


def at(value, path):
    for key in path:
        value = value[key]
    return value


def strings(value):
    return sorted({at(value, p) for p in all_paths(value) if isinstance(at(value, p), str)}
                  | {p[-1] for p in all_paths(value) if p and isinstance(p[-1], str)})


def typo(data, word):
    """`word` with one edit: a letter dropped, doubled, swapped with the next, changed, or its case changed."""
    if not word:
        return data.draw(st.sampled_from(['x', '_', 'name']))
    i = data.draw(st.integers(0, len(word) - 1))
    kind = data.draw(st.sampled_from(['drop', 'double', 'swap', 'change', 'case', 'plural']))
    if kind == 'drop':
        return word[:i] + word[i + 1:] or 'x'
    if kind == 'double':
        return word[:i] + word[i] + word[i:]
    if kind == 'swap' and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 'case':
        return word.swapcase()
    if kind == 'plural':
        return word[:-1] if word.endswith('s') else word + 's'
    return word[:i] + data.draw(st.sampled_from(string.ascii_letters + '_.')) + word[i + 1:]


# ---- mutations: each takes (data, spec) and changes the spec in place ----------------------------

def pick(data, spec, kind=object, root=False):
    """A path (never the root unless `root`) to a value of type `kind`, or None when there is none."""
    paths = [p for p in all_paths(spec) if (root or p) and isinstance(at(spec, p), kind)
             and not (kind is int and isinstance(at(spec, p), bool))]
    return data.draw(st.sampled_from(paths)) if paths else None


def delete(data, spec):
    path = pick(data, spec)
    if path:
        del at(spec, path[:-1])[path[-1]]


def retype(data, spec):
    path = pick(data, spec)
    if path:
        at(spec, path[:-1])[path[-1]] = copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES)))


def rename_key(data, spec):
    path = pick(data, spec, dict, root=True)
    if path is not None and at(spec, path):
        mapping = at(spec, path)
        key = data.draw(st.sampled_from(sorted(mapping)))
        mapping[typo(data, key)] = mapping.pop(key)


def swap_string(data, spec):
    """A string replaced by another string of the spec (a name, a class, a key...)."""
    path = pick(data, spec, str)
    if path:
        at(spec, path[:-1])[path[-1]] = data.draw(st.sampled_from(strings(spec)))


def misspell_string(data, spec):
    path = pick(data, spec, str)
    if path:
        at(spec, path[:-1])[path[-1]] = typo(data, at(spec, path))


def insert_key(data, spec):
    path = pick(data, spec, dict, root=True)
    if path is not None:
        mapping = at(spec, path)
        key = data.draw(st.one_of(st.sampled_from(strings(spec)), st.text(string.ascii_lowercase + '_', max_size=10)))
        mapping[key] = copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES)))


def resize_list(data, spec):
    path = pick(data, spec, list, root=True)
    if path is None:
        return
    items = at(spec, path)
    kind = data.draw(st.sampled_from(['duplicate', 'drop', 'append', 'empty', 'swap']))
    if kind == 'empty':
        items.clear()
    elif kind == 'append':
        items.append(copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES))))
    elif items:
        i = data.draw(st.integers(0, len(items) - 1))
        j = data.draw(st.integers(0, len(items) - 1))
        if kind == 'duplicate':
            items.insert(j, copy.deepcopy(items[i]))
        elif kind == 'drop':
            del items[i]
        else:
            items[i], items[j] = items[j], items[i]


def change_number(data, spec):
    path = pick(data, spec, (int, float))
    if path and not isinstance(at(spec, path), bool):
        at(spec, path[:-1])[path[-1]] = data.draw(st.sampled_from([0, -1, -0.5, 0.0, 2, 1.0, 1.000001, 10 ** 6, 2.5]))


def graft(data, spec):
    """A subtree copied over another one (a definition's spec into another group, a pipeline into a stage...)."""
    source, target = pick(data, spec), pick(data, spec)
    if source and target and target[:len(source)] != source:
        at(spec, target[:-1])[target[-1]] = copy.deepcopy(at(spec, source))


MUTATIONS = [delete, retype, rename_key, swap_string, misspell_string, insert_key, resize_list, change_number, graft]


# ---- the properties ------------------------------------------------------------------------------

def assert_reported_well(error, text):
    """Every problem names a line:column inside the file and says something; they come sorted."""
    assert error.problems, 'a SpecError lists at least one problem'
    lines = text.count('\n') + 1
    positions = []
    for problem in error.problems:
        shown = str(problem)
        match = LOCATED.match(shown)
        assert match, f'problem without a location: {shown!r}'
        line, column = int(match.group(1)), int(match.group(2))
        assert 1 <= line <= lines and column >= 1, shown
        message = getattr(problem, 'message', shown[match.end():])
        assert message.strip(), f'problem without a message: {shown!r}'
        positions.append((line, column))
    assert positions == sorted(positions), 'problems are sorted by position'
    assert error.message.startswith(f'{SPEC}: {len(error.problems)} problem')


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    return tmp_path


def test_the_bases_are_valid(in_tmp):
    for spec in BASES.values():
        Path(SPEC).write_text(json.dumps(spec, indent=2))
        commands.load_spec(SPEC, 'training')


def test_mutated_specs_give_spec_errors_only(in_tmp):
    @settings(FUZZ, max_examples=2500)
    @given(base=st.sampled_from(sorted(BASES)), data=st.data())
    def mutated(base, data):
        spec = copy.deepcopy(BASES[base])
        for mutation in data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
            mutation(data, spec)
        text = json.dumps(spec, indent=2)
        Path(SPEC).write_text(text)
        try:
            commands.load_spec(SPEC, 'training')
        except SpecError as error:
            assert_reported_well(error, text)

    mutated()


TEXT = json.dumps(EXAMPLE, indent=4).encode()
SIGNIFICANT = [c.encode() for c in '{}[],:"\'\\/#*\n\r\t -+.0123456789eEtrufalsn'] + \
    [b'\xff', b'\xc3', b'\xef\xbb\xbf', b'\x00', b'\xe2\x80\xa8', b'//', b'/*', b'NaN', b'1e999', b'9' * 5000]


@st.composite
def edited_text(draw):
    """The example's bytes with 1 to 6 edits: a byte sequence inserted, a range deleted or duplicated,
    a byte replaced, the end cut off."""
    text = TEXT
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(['insert', 'delete', 'replace', 'duplicate', 'truncate']))
        length = draw(st.integers(1, 40))
        piece = draw(st.one_of(st.sampled_from(SIGNIFICANT), st.binary(min_size=1, max_size=3)))
        if kind == 'insert':
            text = text[:i] + piece + text[i:]
        elif kind == 'delete':
            text = text[:i] + text[i + length:]
        elif kind == 'replace':
            text = text[:i] + piece + text[i + len(piece):]
        elif kind == 'duplicate':
            text = text[:i + length] + text[i:]
        else:
            text = text[:i]
    return text


@settings(FUZZ, max_examples=3000)
@given(edited_text())
@example(b'')
@example(b'{\n')
@example(b'[' * 50000)
@example(b'{"a": ' + b'1' * 5000 + b'}')
@example(b'\xef\xbb\xbf{"a": 1,}')
@example(b'{"a": "\\ud800"}')
@example(b'{"a": 1}\n// done\n')
def test_edited_text_gives_spec_errors_only(content):
    try:
        text = content.decode('utf-8')
    except UnicodeDecodeError:
        return   # undecodable files are refused by load_file before parsing (see the next test)
    try:
        document = loader.parse(text, SPEC)
    except SpecError as error:
        assert len(error.problems) == 1
        assert re.match(r'training\.json:\d+:\d+: invalid JSON: \S', error.problems[0]), error.problems[0]
        return
    # accepted: then it is JSON, read as the standard library reads it
    assert document.data == json.loads(text)


@settings(FUZZ, max_examples=500)
@given(edited_text())
@example(b'\xff\xfe{}')
def test_edited_files_give_spec_errors_only(in_tmp, content):
    Path(SPEC).write_bytes(content)
    try:
        loader.load_file(SPEC)
    except SpecError as error:
        assert error.problems and all(str(p).startswith(SPEC + ':') for p in error.problems)
