"""What code a spec makes run: every class and function it names, found by reading the spec, never by
importing anything.

A config-driven tool runs what its spec names: opening a session imports and calls each "class",
"factory_fn" and "transform" of its spec (and of an evaluation or inference spec that overrides it),
with the folder the command runs in first on sys.path. `names(spec)` lists them, so that a user can see
what a session will run before anything runs (`torchassistant status SESSION`). A bare name is looked
up in its field's home modules (`Adam` in torch.optim), as `torchassistant.core.resolve` does.
"""
from dataclasses import dataclass

from torchassistant.core.resolve import HOMES

CALLABLE_KEYS = ('class', 'factory_fn', 'transform')
_HOME_OF_PARENT = {'lr_scheduler': 'lr_scheduler', 'stop_condition': 'stop_condition',
                   'input_adapter': 'input_adapter', 'output_adapter': 'output_adapter'}


@dataclass
class Named:
    """A class or function the spec names: `name` as written, `modules` it is imported from (several:
    the first of them that has it), `where` in the spec (a path)."""
    name: str
    modules: list
    where: tuple

    @property
    def qualified(self):
        """The dotted name: as written, or "home.Name" (with "|" between several homes)."""
        if '.' in self.name:
            return self.name
        return '|'.join(f'{module}.{self.name}' for module in self.modules) or self.name


def names(spec):
    """Every class and function a (training, evaluation or inference) spec names, in the spec's order."""
    found = []
    _walk(spec, (), None, found)
    return found


def modules(named):
    """The modules importing `named` (names()'s) loads, each once, in order; for a bare name every home."""
    return list(dict.fromkeys(module for n in named for module in n.modules))


def _walk(value, path, home, found):
    if isinstance(value, dict):
        for key, item in value.items():
            if key in CALLABLE_KEYS and isinstance(item, str) and item:
                found.append(_named(item, home if key == 'class' else None, path + (key,)))
            else:
                _walk(item, path + (key,), _home(value, key, home), found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, path + (index,), home, found)


def _home(parent, key, home):
    """The home group of the names under `parent[key]`: a definition's group for its "spec", a field's own."""
    if key == 'spec' and isinstance(parent.get('group'), str):
        return parent['group']
    return _HOME_OF_PARENT.get(key, home)


def _named(name, home, where):
    if '.' in name:
        return Named(name, [name.rpartition('.')[0]], where)
    return Named(name, list(HOMES.get(home, ())), where)
