"""Rules of the format live once (spec/rules.py, the group list in spec/schema.py): what other modules
keep per group follows the one list, and the defaults everyone uses are the rules' own."""
import pytest

from torchassistant.assembly import build
from torchassistant.core import resolve
from torchassistant.run import trainer
from torchassistant.session.store import SessionStore
from torchassistant.spec import concise, rules, schema, validate

pytestmark = pytest.mark.unit


def test_everything_kept_per_group_follows_the_one_list():
    assert schema.DATA_GROUPS + schema.COMPUTATION_GROUPS == schema.GROUPS
    assert concise.DATA_GROUPS is schema.DATA_GROUPS and concise.COMPUTATION_GROUPS is schema.COMPUTATION_GROUPS
    assert list(build._BUILDERS) == list(schema.GROUPS), 'a builder per group, in building order'
    assert list(schema.GROUP_SPECS) == list(schema.GROUPS), 'a schema per group'
    assert all(hasattr(validate._Semantics, f'check_{group}') for group in schema.GROUPS)
    fields = {'lr_scheduler', 'stop_condition', 'output_adapter'}      # homes of fields, not groups
    assert set(resolve.HOMES) - fields <= set(schema.GROUPS)
    assert [schema.singular(g) for g in ('losses', 'data_loaders', 'batch_graphs', 'splits')] == \
        ['loss', 'data loader', 'batch graph', 'split']


def test_display_names_default_to_the_definitions_name():
    pipeline = {'losses': [{'loss_name': 'ce'}, {'loss_name': 'ce', 'loss_display_name': 'val loss'}],
                'metrics': [{'metric_name': 'accuracy'}, {'metric_name': 'accuracy', 'display_name': 'acc'}]}
    assert rules.display_names(pipeline) == ['accuracy', 'acc', 'ce', 'val loss']
    assert validate.display_names is rules.display_names


def test_the_only_port_and_node_are_the_defaults():
    assert rules.default_port(['input']) == 'input' and rules.default_port(['a', 'b']) is None
    assert rules.default_node(['m']) == 'm' and rules.default_node(['a', 'b']) is None
    assert rules.LONE_MODEL_INPUT == rules.default_variable(1) == 'input_1'
    assert rules.is_default_variable('input_12') and not rules.is_default_variable('input_0')


def test_which_epoch_is_best():
    rows = [{'val loss': 0.5}, {'val loss': 0.3}, {'val loss': float('nan')}, {'val loss': 0.3}]
    assert rules.best_epoch(rows) == (2, 'val loss', 0.3), 'lower is better for a loss; the earlier of a tie'
    assert rules.best_epoch(rows, 'val loss', 'max') == (1, 'val loss', 0.5)
    assert rules.best_epoch([{'acc': 0.1}, {'acc': 0.9}]) == (2, 'acc', 0.9)
    assert rules.best_epoch([{'d acc': 0.1}], pipelines=2) is None
    assert not rules.better(0.3, 0.3, 'min') and rules.better(0.2, 0.3, 'min') and not rules.better(float('nan'), 1, 'max')


def test_training_defaults_are_the_rules():
    assert SessionStore('nowhere').keep_checkpoints == rules.KEEP_CHECKPOINTS
    every = trainer.Trainer(None, [], None, None, None).checkpoint_every
    assert every.seconds == rules.CHECKPOINT_EVERY['minutes'] * 60 and every.iterations is None
    described = schema.SCHEMAS['training']['properties']['train']['properties']
    assert f'default {rules.KEEP_CHECKPOINTS})' in described['keep_checkpoints']['description']
