"""Every test file names its tier (pytest.ini: unit, e2e, slow) in a module-level `pytestmark`, so
`-m unit` is the quick loop and `python -m pytest -q` still runs everything. Read with ast: nothing is
imported or run."""
import ast
import configparser
import os

import pytest

pytestmark = pytest.mark.unit

TESTS = os.path.dirname(os.path.abspath(__file__))
TIERS = {'unit', 'e2e', 'slow'}


def module_marks(path):
    """The marker names of the module-level `pytestmark = pytest.mark.X` (or a list of them) in `path`."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'pytestmark' for t in node.targets):
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            return {v.attr for v in values if isinstance(v, ast.Attribute)
                    and isinstance(v.value, ast.Attribute) and v.value.attr == 'mark'}
    return set()


def test_every_test_file_names_its_tier():
    files = sorted(name for name in os.listdir(TESTS) if name.startswith('test_') and name.endswith('.py'))
    unmarked = [name for name in files if not module_marks(os.path.join(TESTS, name)) & TIERS]
    assert not unmarked, f'add `pytestmark = pytest.mark.unit` (or e2e, or [e2e, slow]) to: {", ".join(unmarked)}'
    slow = [name for name in files if 'slow' in module_marks(os.path.join(TESTS, name))]
    assert all('e2e' in module_marks(os.path.join(TESTS, name)) for name in slow), 'a slow file is e2e too'


def test_the_tiers_are_registered_and_strict():
    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(TESTS), 'pytest.ini'))
    registered = {line.split(':')[0].strip() for line in config['pytest']['markers'].strip().splitlines()}
    assert TIERS <= registered and '--strict-markers' in config['pytest']['addopts']
