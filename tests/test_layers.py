"""The package's layers: imports go one way only, downward, with no cycles, lazy imports included.

Reads every module's imports with `ast` (function-level imports too) and fails on an import of a
higher layer or on a cycle between modules."""
import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'torchassistant'

# bottom -> top; a module may import its own layer or any below it
LAYERS = ['core', 'spec', 'session', 'run', 'library', 'assembly', 'report', 'ship', 'experiment', 'cli']
# the user-facing built-ins at the package's top level, and the package itself
LIBRARY = {'collators', 'stop_conditions', 'preprocessors', 'transforms', 'metrics', 'output_devices',
           'loss_functions', 'output_adapters', 'utils', 'adapters', 'datasets', 'postprocessors'}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def layer_of(module):
    parts = module.split('.')
    if len(parts) == 1:
        return 'core'                       # torchassistant/__init__.py: the version only
    if parts[1] in ('__main__', 'schema'):     # entry points, like the root scripts
        return 'cli'
    if parts[1] in LAYERS:
        return parts[1]
    if parts[1] in LIBRARY or len(parts) == 2:
        return 'library'
    raise AssertionError(f'{module}: in no layer')


def imports_of(path):
    """The torchassistant modules `path` imports anywhere in it (as module names)."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split('.')[0] == 'torchassistant')
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split('.')[0] == 'torchassistant':
            for alias in node.names:      # `from torchassistant.run import trainer` imports a module
                candidate = f'{node.module}.{alias.name}'
                found.add(candidate if MODULES.get(candidate) else node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob('*.py')}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def test_every_module_is_in_a_layer():
    for name in MODULES:
        assert layer_of(name) in LAYERS


def test_imports_go_downward_only():
    upward = []
    for name, imported in GRAPH.items():
        for target in imported:
            if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(name)):
                upward.append(f'{name} ({layer_of(name)}) imports {target} ({layer_of(target)})')
    assert not upward, 'upward imports:\n' + '\n'.join(sorted(upward))


def test_no_import_cycles():
    # a module importing its own package's __init__ is not a cycle worth reporting unless it closes one
    edges = {name: {t for t in targets if t in MODULES and t != name} for name, targets in GRAPH.items()}
    state, cycles = {}, []

    def visit(node, trail):
        state[node] = 'open'
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 'open':
                cycles.append(' -> '.join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 'done'

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, 'import cycles:\n' + '\n'.join(cycles)


def test_the_checker_sees_upward_and_lazy_imports(tmp_path):
    """The test above can fail: a lazy upward import in a function body is found."""
    source = tmp_path / 'x.py'
    source.write_text('def f():\n    from torchassistant.cli import commands\n')
    assert 'torchassistant.cli.commands' in imports_of(source)
    assert LAYERS.index(layer_of('torchassistant.cli.commands')) > LAYERS.index(layer_of('torchassistant.spec.loader'))
