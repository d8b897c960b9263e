"""YAML specs (located like JSON ones) and the `--set` override grammar (torchassistant.spec.overrides)."""
import copy
import json
import os
import shlex

import pytest
import yaml

from torchassistant.core.errors import EXIT_USAGE, SpecError, UsageError
from torchassistant.spec import loader, validate
from torchassistant.spec import overrides as ov
from torchassistant.spec.loader import Document

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(REPO, 'examples', 'mnist', 'training.json')
CONCISE = os.path.join(REPO, 'examples', 'mnist-concise', 'training.json')

NESTED = """\
session_dir: runs/a
initialize:
  definitions:
    - group: models
      name: net
      spec:
        class: torch.nn.Linear
        args: [4, 2]
    - {group: optimizers, name: opt, spec: {class: Adam, model: net, kwargs: {lr: 1e-4}}}
"""


def tutorial():
    return loader.load_file(TUTORIAL)


def problem_of(callable_, *args):
    with pytest.raises(ov.OverrideError) as info:
        callable_(*args)
    return str(info.value)


# ---- YAML ----------------------------------------------------------------------------------------

def test_yaml_locations_of_nested_values():
    document = loader.parse_yaml(NESTED, 'spec.yaml')
    assert document.position(('session_dir',)) == (1, 14)
    assert document.position(('initialize', 'definitions', 0)) == (4, 7)
    assert document.position(('initialize', 'definitions', 0, 'spec', 'class')) == (7, 16)
    assert document.position(('initialize', 'definitions', 0, 'spec', 'args', 1)) == (8, 19)
    flow = NESTED.splitlines()[8]
    assert document.position(('initialize', 'definitions', 1, 'spec', 'kwargs', 'lr')) == (9, flow.index('1e-4') + 1)
    assert document.describe(('initialize', 'definitions', 1, 'spec', 'model')) == \
        f'spec.yaml:9:{flow.index("net") + 1} initialize.definitions[1] "opt" spec.model'
    assert document.data['initialize']['definitions'][1]['spec']['kwargs']['lr'] == 0.0001


def test_yaml_syntax_error_is_one_located_paragraph():
    with pytest.raises(SpecError) as info:
        loader.parse_yaml('session_dir: a\ninitialize:\n  definitions: [1, 2\n', 'spec.yaml')
    message = str(info.value)
    assert info.value.exit_code == EXIT_USAGE
    assert 'spec.yaml:4:1: invalid YAML: ' in message and 'flow sequence at line 3, column 16' in message
    with pytest.raises(SpecError) as info:
        loader.parse_yaml('a: 1\n\tb: 2\n', 'spec.yaml')
    assert 'spec.yaml:2:1: invalid YAML:' in str(info.value) and 'spaces, not tabs' in str(info.value)
    assert str(info.value).endswith('\tb: 2\n      ^')


@pytest.mark.parametrize('text, where, says', [
    ('a: 1\nb: 2\na: 3\n', '3:1', 'duplicate key "a"'),
    ('a: !!binary aGk=\n', '1:4', 'the tag !!binary is not allowed'),
    ('a: !!python/object:os.system x\n', '1:4', 'the tag !!python/object:os.system is not allowed'),
    ('a: !!set {x}\n', '1:4', 'the tag !!set is not allowed'),
    ('b: &x {c: 1}\na: {<<: *x}\n', '2:5', 'merge keys (<<) are not supported'),
    ('a: .inf\n', '1:4', 'JSON has no infinities or NaN'),
    ('a: &x [*x]\n', '1:4', 'a cycle'),
    ('a: 1\n---\nb: 2\n', '2:1', 'expected a single document'),
    ('', '1:1', 'the file is empty'),
    ('a: !!int abc\n', '1:4', '"abc" is not a valid int'),
    ('? [1]\n: 2\n', '1:3', 'a key must be a string'),
    ('a: "\x07"\n', '1:5', "the character '\\x07' cannot appear"),
])
def test_yaml_refusals_are_located(text, where, says):
    with pytest.raises(SpecError) as info:
        loader.parse_yaml(text, 'spec.yaml')
    assert f'spec.yaml:{where}: ' in str(info.value) and says in str(info.value)


def test_yaml_values_mean_what_json_would():
    data = loader.parse_yaml('a: 1e-4\nb: "1e-4"\nc: !!str 1e-4\nd: 1.0e4\ne: 2024-01-01\nf: yes\ng: null\n'
                             'h: ~\n1: key\nx: &v {k: [1]}\ny: *v\n', 's.yaml').data
    assert data == {'a': 0.0001, 'b': '1e-4', 'c': '1e-4', 'd': 10000.0, 'e': '2024-01-01', 'f': True, 'g': None,
                    'h': None, '1': 'key', 'x': {'k': [1]}, 'y': {'k': [1]}}
    data['y']['k'].append(2)
    assert data['x'] == {'k': [1]}          # an alias is a copy


@pytest.mark.parametrize('flow', [False, None])
def test_tutorial_spec_as_yaml_loads_to_the_same_data(tmp_path, flow):
    with open(TUTORIAL) as f:
        expected = json.load(f)
    for suffix in ('.yaml', '.yml'):
        path = tmp_path / ('training' + suffix)
        path.write_text(yaml.safe_dump(expected, default_flow_style=flow, sort_keys=False))
        document = loader.load_file(str(path))
        assert document.data == expected and document.source == str(path)
        assert all(line > 0 for line, _ in document.positions.values())


def test_yaml_spec_problem_is_located_at_its_yaml_line(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    with open(TUTORIAL) as f:
        spec = json.load(f)
    spec['initialize']['definitions'][6]['spec']['class'] = 'Adamm'
    path = tmp_path / 'training.yaml'
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    document = loader.load_file(str(path))
    line = path.read_text().splitlines().index('    spec:', [i for i, t in enumerate(path.read_text().splitlines())
                                                            if 'name: optimizer' in t][0]) + 2
    problems = [str(p) for p in validate.check_training(document)]
    assert problems == [f'{path}:{line}:14 initialize.definitions[6] "optimizer" spec.class: "Adamm" was not '
                        "found in torch.optim; did you mean 'Adam' or 'RAdam' or 'NAdam'?"]


def test_edited_yaml_gives_spec_errors_only():
    import random
    with open(TUTORIAL) as f:
        text = yaml.safe_dump(json.load(f), sort_keys=False)
    rng, characters = random.Random(17), list(':-[]{}&*!|>"\'#%@`\t\n ,?<=~0e.\r') + ['\x00', '\u2028']
    for _ in range(400):
        edited = list(text)
        for _ in range(rng.randint(1, 3)):
            edited.insert(rng.randrange(len(edited)), rng.choice(characters))
        try:
            loader.parse_yaml(''.join(edited), 'spec.yaml')
        except SpecError as e:
            assert str(e).count('spec.yaml:') == 2        # the header and one located problem


# ---- the grammar ---------------------------------------------------------------------------------

@pytest.mark.parametrize('text, value', [
    ('lr=3e-4', 0.0003), ('session_dir=runs/a', 'runs/a'), ('x="fast"', 'fast'), ('x=[1,2]', [1, 2]),
    ('x=null', None), ('x=true', True), ('x={"a": {"b": 1}}', {'a': {'b': 1}}), ('x=', ''), ('x=a=b', 'a=b'),
    ('x=fast lane', 'fast lane'), ('x= 5', 5), ('x=NaN', 'NaN'), ('x=01', '01'),
])
def test_values_are_json_else_strings(text, value):
    override = ov.parse_override(text)
    assert (override.action, override.path, override.value) == ('set', ('x',) if text[0] == 'x' else
                                                                (text.split('=')[0],), value)


def test_the_three_forms():
    assert ov.parse_override('+a.b.0=1') == ov.Override('+a.b.0=1', 'add', ('a', 'b', '0'), 1)
    assert ov.parse_override('~a.b') == ov.Override('~a.b', 'remove', ('a', 'b'), None)
    assert ov.parse_override('a.b=1').action == 'set'


@pytest.mark.parametrize('text, says', [
    ('lr', 'expected PATH=VALUE (or +PATH=VALUE to add a key, ~PATH to remove one)'),
    ('=3', 'the PATH before "=" is empty'),
    ('~', 'the PATH after "~" is empty'),
    ('a..b=1', 'the path "a..b" has an empty part'),
    ('a.=1', 'has an empty part'),
    ('~a.b=1', '~PATH removes a key and takes no value: write ~a.b'),
    ('x=[1,2', 'the value [1,2 starts like JSON but is not valid JSON: the value ends inside a list'),
    ('x={"a": 1,}', 'trailing comma'),
    ('x="fast', 'starts like JSON'),
])
def test_parse_errors_name_the_argument(text, says):
    message = problem_of(ov.parse_override, text)
    assert message.startswith(f'--set {text}: ') and says in message and '\n' not in message


def test_all_bad_arguments_are_reported_at_once():
    with pytest.raises(ov.OverrideError) as info:
        ov.apply_overrides(tutorial(), ['lr', 'optimizer.spec.kwargs.lr=0.1', 'nope.x=1', 'a..b=2'])
    assert isinstance(info.value, UsageError) and info.value.exit_code == EXIT_USAGE
    assert [text for text, _ in info.value.problems] == ['lr', 'a..b=2']    # parsing fails before applying
    with pytest.raises(ov.OverrideError) as info:
        ov.apply_overrides(tutorial(), ['nope.x=1', 'optimizer.spec.kwargs.lr=0.1', 'train.stages.2=1'])
    assert str(info.value).startswith('2 --set arguments are wrong:\n  - --set nope.x=1: "nope" is neither')
    assert '\n  - --set train.stages.2=1: train.stages has 1 item' in str(info.value)


# ---- paths ---------------------------------------------------------------------------------------

OPT_LR = ('initialize', 'definitions', 6, 'spec', 'kwargs', 'lr')


@pytest.mark.parametrize('path', ['initialize.definitions.6.spec.kwargs.lr',
                                  'initialize.definitions.optimizer.spec.kwargs.lr', 'optimizer.spec.kwargs.lr'])
def test_set_by_index_full_name_and_short_form(path):
    document = tutorial()
    result = ov.apply_overrides(document, [f'{path}=3e-4'])
    assert result.applied == [(ov.parse_override(f'{path}=3e-4'), OPT_LR)]
    expected = copy.deepcopy(document.data)
    expected['initialize']['definitions'][6]['spec']['kwargs']['lr'] = 0.0003
    assert result.data == expected
    assert document.data['initialize']['definitions'][6]['spec']['kwargs']['lr'] == 0.001    # left as it was


def test_concise_spec_paths():
    document = loader.load_file(CONCISE)
    computation = ('initialize', 'definitions', 'computation', 1, 'spec', 'kwargs', 'lr')
    for path in ('optimizer.spec.kwargs.lr', 'initialize.definitions.optimizer.spec.kwargs.lr',
                 'initialize.definitions.computation.optimizer.spec.kwargs.lr',
                 'initialize.definitions.computation.1.spec.kwargs.lr'):
        assert ov.resolve_path(document.data, f'{path}=1') == computation
    assert ov.resolve_path(document.data, 'train_ds.spec.kwargs.train=1') == \
        ('initialize', 'definitions', 'data', 0, 'spec', 'kwargs', 'train')
    result = ov.apply_overrides(document, ['~test_ds', '+train={"stages": []}'])
    assert [d['name'] for d in result.data['initialize']['definitions']['data']] == ['train_ds']
    assert result.data['train'] == {'stages': []}
    assert 'Keys there: data, computation' in problem_of(ov.resolve_path, document.data, 'initialize.definitions.x.y=1')


def test_list_items_by_index_and_their_errors():
    data = tutorial().data
    assert ov.resolve_path(data, 'train.stages.0.stop_condition.kwargs.num_epochs=9') == \
        ('train', 'stages', 0, 'stop_condition', 'kwargs', 'num_epochs')
    assert problem_of(ov.resolve_path, data, 'train.stages.1.stop_condition=1') == \
        '--set train.stages.1.stop_condition=1: train.stages has 1 item, so there is no item 1 (indices 0..0)'
    assert problem_of(ov.resolve_path, data, 'train.stages.3=1').endswith(
        'there is no item 3 (indices 0..0). To append an item, write +PATH=VALUE with the index 1')
    assert 'train.stages is a list: choose an item by its index 0..0' in \
        problem_of(ov.resolve_path, data, 'train.stages.first=1')
    assert 'train.stages[0].stop_condition.kwargs.num_epochs is a number (5): there is no "x" inside it' in \
        problem_of(ov.resolve_path, data, 'train.stages.0.stop_condition.kwargs.num_epochs.x=1')


def test_missing_path_did_you_mean_and_existing_keys():
    data = tutorial().data
    assert problem_of(ov.resolve_path, data, 'optimizer.spec.kwarg.lr=1') == (
        '--set optimizer.spec.kwarg.lr=1: "kwarg" is not a key of initialize.definitions[6] "optimizer" spec; '
        "did you mean 'kwargs'? Keys there: class, kwargs, model")
    message = problem_of(ov.resolve_path, data, 'optimzer.spec.kwargs.lr=1')
    assert message.startswith('--set optimzer.spec.kwargs.lr=1: "optimzer" is neither a top-level key nor a '
                              "definition; did you mean 'optimizer'? Keys there: session_dir, seed, initialize, "
                              'train. Definitions: train_ds, test_ds, my_collator,')
    message = problem_of(ov.resolve_path, data, 'initialize.definitions.LeNet6.spec.class=X')
    assert 'initialize.definitions has no item named "LeNet6"; did you mean \'LeNet5\'? Items: train_ds,' in message
    assert message.endswith('; or choose one by its index 0..8')
    assert problem_of(ov.resolve_path, data, 'optimizer.spec.kwargs.momentum=0.9').endswith(
        'spec.kwargs. Keys there: lr. To add it, write +optimizer.spec.kwargs.momentum=0.9')
    assert 'To add it' not in problem_of(ov.resolve_path, data, 'train.nope.x=1')


def test_add_a_key_and_append_an_item():
    result = ov.apply_overrides(tutorial(), ['+optimizer.spec.kwargs.weight_decay=0.01', '+train.loggers=["csv"]',
                                             '+train.stages.1={"training_pipelines": ["training_pipeline"]}'])
    assert result.data['initialize']['definitions'][6]['spec']['kwargs'] == {'lr': 0.001, 'weight_decay': 0.01}
    assert result.data['train']['loggers'] == ['csv'] and len(result.data['train']['stages']) == 2
    assert problem_of(ov.resolve_path, tutorial().data, '+optimizer.spec.kwargs.lr=1') == (
        '--set +optimizer.spec.kwargs.lr=1: initialize.definitions[6] "optimizer" spec.kwargs.lr exists already. '
        'To change it, drop the +: optimizer.spec.kwargs.lr=1')
    assert 'train.stages has an item 0 already. To replace it, drop the +; to append one, use the index 1' in \
        problem_of(ov.resolve_path, tutorial().data, '+train.stages.0={}')
    assert '"nope" is not a key of train' in problem_of(ov.resolve_path, tutorial().data, '+train.nope.x=1')
    assert 'exists already' in problem_of(ov.resolve_path, tutorial().data, '+optimizer={}')


def test_remove_keys_items_and_definitions():
    result = ov.apply_overrides(tutorial(), ['~seed', '~accuracy', '~train.stages.0.validation_pipelines.0'])
    assert 'seed' not in result.data
    assert [d['name'] for d in result.data['initialize']['definitions']][-2:] == ['optimizer', 'cross_entropy']
    assert result.data['train']['stages'][0]['validation_pipelines'] == ['evaluation_pipeline']
    assert 'did you mean \'seed\'' in problem_of(ov.apply_overrides, tutorial(), ['~sead'])
    assert 'there is no item 1' in problem_of(ov.apply_overrides, tutorial(), ['~train.stages.1'])


def test_short_form_ambiguity_and_top_level_precedence():
    data = {'session_dir': 's', 'seed': 1, 'initialize': {'definitions': [
        {'group': 'datasets', 'name': 'mnist', 'spec': {'class': 'A'}},
        {'group': 'models', 'name': 'mnist', 'spec': {'class': 'B'}},
        {'group': 'models', 'name': 'seed', 'spec': {'class': 'C'}}]}}
    assert problem_of(ov.resolve_path, data, 'mnist.spec.class=X') == (
        '--set mnist.spec.class=X: "mnist" names 2 definitions, initialize.definitions[0] "mnist" (datasets) and '
        'initialize.definitions[1] "mnist" (models): write the full path of the one you mean, '
        'initialize.definitions.0.spec.class or initialize.definitions.1.spec.class')
    assert 'Choose one by its index' in problem_of(ov.resolve_path, data, 'initialize.definitions.mnist.spec=1')
    assert ov.resolve_path(data, 'seed=5') == ('seed',)                      # the top-level key wins
    assert ov.resolve_path(data, 'initialize.definitions.seed.spec.class=X') == \
        ('initialize', 'definitions', 2, 'spec', 'class')
    assert '"seed" is also a definition; the top-level key wins' in problem_of(ov.resolve_path, data, 'seed.spec=1')
    concise = {'initialize': {'definitions': {'data': [{'group': 'datasets', 'name': 'x'}],
                                              'computation': [{'group': 'models', 'name': 'x'}]}}}
    assert 'the one you mean, initialize.definitions.data.0 or initialize.definitions.computation.0' in \
        problem_of(ov.resolve_path, concise, 'initialize.definitions.x.spec=1')


# ---- locations -----------------------------------------------------------------------------------

def test_validator_names_the_override(monkeypatch):
    monkeypatch.chdir(REPO)
    result = ov.apply_overrides(tutorial(), ['optimizer.spec.class="Adamm"', '+train.keep_checkpoints=fast',
                                             '~train.stages.0.stop_condition.kwargs.num_epochs'])
    problems = sorted(validate.check_training(result), key=lambda p: p.sort_key())
    assert [str(p) for p in problems] == [
        '--set +train.keep_checkpoints=fast train.keep_checkpoints: must be an integer, not a string (\'fast\')',
        '--set optimizer.spec.class="Adamm" initialize.definitions[6] "optimizer" spec.class: "Adamm" was not found '
        "in torch.optim; did you mean 'Adam' or 'RAdam' or 'NAdam'?",
        f'{TUTORIAL}:159:35 train.stages[0].stop_condition (after --set ~train.stages.0.stop_condition.kwargs'
        ".num_epochs): the arguments do not match EpochsCompleted(num_epochs): missing a required argument: "
        "'num_epochs'"]
    with pytest.raises(SpecError) as info:
        validate.raise_for_problems(problems, result.source)
    assert str(info.value).startswith(f'{TUTORIAL}: 3 problems found:\n  - --set +train.keep_checkpoints=fast')


def test_values_an_override_did_not_write_keep_their_file_positions():
    document = tutorial()
    result = ov.apply_overrides(document, ['~train_ds', 'test_ds.spec.kwargs={"train": false}',
                                           '+initialize.definitions.8={"group": "metrics", "name": "m"}'])
    definitions = ('initialize', 'definitions')
    assert result.position(definitions + (1, 'name')) == document.position(definitions + (2, 'name'))
    assert result.source_of(definitions + (1, 'name')) == TUTORIAL
    assert result.describe(definitions + (0, 'spec', 'kwargs', 'train')) == \
        '--set test_ds.spec.kwargs={"train": false} initialize.definitions[0] "test_ds" spec.kwargs.train'
    assert result.describe(definitions + (0, 'spec')) == \
        f'{TUTORIAL}:23:25 initialize.definitions[0] "test_ds" spec (after --set test_ds.spec.kwargs=' \
        '{"train": false})'
    assert result.describe(definitions + (0, 'spec', 'class')) == \
        f'{TUTORIAL}:24:30 initialize.definitions[0] "test_ds" spec.class'
    assert result.source_of(definitions + (8, 'name')) == '--set +initialize.definitions.8={"group": "metrics", ' \
                                                          '"name": "m"}'
    assert result.position(definitions + (8,)) == (0, 0)
    assert result.describe(definitions) .endswith('(after --set ~train_ds, --set +initialize.definitions.8={"group": '
                                                  '"metrics", "name": "m"})')
    assert result.describe(('train',)) == f'{TUTORIAL}:149:14 train'


# ---- showing, storing, classifying -------------------------------------------------------------------

def test_render_and_plain_form_round_trip():
    texts = ['optimizer.spec.kwargs.lr=0.01', 'x="fast"', '~train.loggers', '+a.b=[1, 2]']
    parsed = ov.parse_overrides(texts)
    assert ov.to_plain(parsed) == texts and ov.from_plain(ov.to_plain(parsed)) == parsed
    rendered = ov.render(parsed)
    assert rendered.startswith('--set optimizer.spec.kwargs.lr=0.01 --set \'x="fast"\'')
    assert shlex.split(rendered)[1::2] == texts and ov.render([]) == ''
    assert json.loads(json.dumps(ov.to_plain(parsed))) == texts
    assert str(parsed[2]) == '--set ~train.loggers'


def test_which_overrides_change_what_init_built():
    data = tutorial().data
    fine = ['train.stages.0.stop_condition.kwargs.num_epochs=30', '+train.checkpoint_every={"iterations": 5}',
            '+train.loggers=["csv", "plots"]', '+train.non_finite=skip', '+train.keep_checkpoints=2',
            '+train.best_metric={"name": "val loss"}', '+device=cpu', '+precision=bf16-mixed',
            '+train.stages.0.stop_condition.args=[]']
    assert ov.paths_that_change_build(fine, data) == []
    changing = ['+LeNet5.spec.kwargs={"width": 8}', 'training_loader.spec.kwargs.batch_size=64', 'seed=1',
                'train.stages.0.stop_condition.class=EarlyStopping', 'train.stages.0.training_pipelines=[]',
                'optimizer.spec.kwargs.lr=0.1', '+train.stages.1={}', 'train={"stages": []}']
    found = ov.paths_that_change_build(fine + changing, data)
    assert [o.text for o, _ in found] == changing
    assert found[0][1] == ('initialize', 'definitions', 5, 'spec', 'kwargs')
    assert 'no item 4' in problem_of(ov.paths_that_change_build, ['train.stages.4.x=1'], data)
    assert not ov.changes_build(('train', 'stages', 0, 'stop_condition', 'kwargs', 'patience'))
    assert ov.changes_build(('train', 'stages', 0, 'stop_condition')) and ov.changes_build(('train', 'stages'))


def test_plain_data_and_a_bare_document():
    data = {'a': {'b': [1, 2, 3]}}
    assert ov.apply_to_data(data, ['~a.b.0', 'a.b.0=9']) == {'a': {'b': [9, 3]}}
    assert data == {'a': {'b': [1, 2, 3]}}
    result = ov.apply_overrides(Document(data, '<spec>'), [])
    assert result.data == data and result.applied == []


def test_the_references_yaml_tutorial_spec_is_the_tutorials_json(tmp_path):
    """docs/spec-reference.md shows examples/mnist/training.json once in YAML: the loader reads it as that spec."""
    import re
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, 'docs', 'spec-reference.md')) as f:
        shown = re.search(r'```yaml\n(.*?)```', f.read(), re.S).group(1)
    (tmp_path / 'training.yaml').write_text(shown)
    with open(os.path.join(repo, 'examples', 'mnist', 'training.json')) as f:
        assert loader.load_file(str(tmp_path / 'training.yaml')).data == json.load(f)
