"""`--set` overrides: change a loaded spec from the command line, located so errors name the override.

One argument each:
    PATH=VALUE     set a key or list item that exists
    +PATH=VALUE    add a key that does not exist yet (to a list: append, with the list's length as index)
    ~PATH          remove a key or a list item (the items after it move up)

PATH is dotted: object keys; list items by index (`train.stages.0.stop_condition`) or, for items with a
"name" (definitions), by that name (`initialize.definitions.optimizer.spec.kwargs.lr`). A definition may
also be named first, in short (`optimizer.spec.kwargs.lr`), wherever the spec keeps its definitions: the
list, the concise {"data", "computation"} parts, or an override block's "options". A top-level key of the
spec wins over a definition of the same name (the full path still reaches the definition); a name that
several definitions share (in different groups) is an error listing their full paths.

VALUE is JSON when it parses as JSON (`3e-4` a number, `[1, 2]`, `null`, `"fast"` a string), else the
text itself (`runs/a`); a VALUE that starts like JSON (`{`, `[`, `"`) but does not parse is an error.

`apply_overrides` returns an `OverriddenDocument`: its `data` is the new spec, and a value an override
wrote is located at that override, so validation reports `--set optimizer.spec.kwargs.lr="fast" ...`
where it would report `spec.json:12:9 ...`.
"""
import copy
import shlex
from dataclasses import dataclass

from torchassistant.core.errors import UsageError
from torchassistant.core.resolve import suggest
from torchassistant.spec.loader import Document, format_path, parse_json_value

_SHOWN_KEYS = 20        # an error lists at most this many of the keys that exist


@dataclass(frozen=True)
class Override:
    """One `--set` argument: `text` as given, `action` "set", "add" or "remove", `path` its dotted
    parts as written (strings), `value` the parsed VALUE (None for "remove")."""
    text: str
    action: str
    path: tuple
    value: object = None

    def __str__(self):
        return f'--set {self.text}'


class OverrideError(UsageError):
    """Bad `--set` arguments (exit 2). `problems`: (argument, reason) pairs, one per bad argument."""

    def __init__(self, problems):
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f'--set {problems[0][0]}: {problems[0][1]}')
        else:
            lines = '\n'.join(f'  - --set {text}: {reason}' for text, reason in problems)
            super().__init__(f'{len(problems)} --set arguments are wrong:\n{lines}')


class _Bad(Exception):
    """The reason one argument is wrong; becomes part of an OverrideError."""


# ---- grammar -------------------------------------------------------------------------------------

def parse_override(text):
    """One `--set` argument as an Override; OverrideError when it is not PATH=VALUE, +PATH=VALUE or ~PATH."""
    try:
        return _parse(text)
    except _Bad as e:
        raise OverrideError([(text, str(e))]) from None


def parse_overrides(texts):
    """Every argument parsed (Override objects pass through); one OverrideError lists every bad one."""
    parsed, problems = [], []
    for text in texts:
        try:
            parsed.append(text if isinstance(text, Override) else _parse(text))
        except _Bad as e:
            problems.append((text, str(e)))
    if problems:
        raise OverrideError(problems)
    return parsed


def _parse(text):
    if not isinstance(text, str):
        raise _Bad(f'an override is a string such as "PATH=VALUE", not {type(text).__name__}')
    if text.startswith('~'):
        action, path_text, value = 'remove', text[1:], None
        if '=' in path_text:
            raise _Bad(f'~PATH removes a key and takes no value: write ~{path_text.partition("=")[0]}')
    else:
        action, body = ('add', text[1:]) if text.startswith('+') else ('set', text)
        path_text, equals, value_text = body.partition('=')
        if not equals:
            raise _Bad('expected PATH=VALUE (or +PATH=VALUE to add a key, ~PATH to remove one), '
                       'e.g. optimizer.spec.kwargs.lr=3e-4')
        value = parse_value(value_text)
    parts = tuple(path_text.split('.'))
    if not path_text:
        raise _Bad('the PATH before "=" is empty' if action != 'remove' else 'the PATH after "~" is empty')
    if '' in parts:
        raise _Bad(f'the path "{path_text}" has an empty part (two dots, or a dot at an end)')
    return Override(text, action, parts, value)


def parse_value(text):
    """VALUE as JSON, else as the string itself; a VALUE that starts like JSON must be JSON."""
    try:
        return parse_json_value(text)
    except ValueError as e:
        if text.lstrip()[:1] in ('{', '[', '"'):
            raise _Bad(f'the value {text} starts like JSON but is not valid JSON: {e}; to pass it as a '
                       f'string, write it as a JSON string') from None
        return text


# ---- where a path leads --------------------------------------------------------------------------

def definition_paths(data):
    """{name: [full path, ...]} of every definition of a spec, wherever the format keeps them."""
    found = {}
    for base, items in _definition_lists(data):
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get('name'), str):
                found.setdefault(item['name'], []).append(base + (i,))
    return found


def _definition_lists(data):
    initialize = data.get('initialize') if isinstance(data, dict) else None
    definitions = initialize.get('definitions') if isinstance(initialize, dict) else None
    base = ('initialize', 'definitions')
    if isinstance(definitions, list):
        return [(base, definitions)]
    if isinstance(definitions, dict):
        return [(base + (key,), definitions[key]) for key in ('data', 'computation', 'options')
                if isinstance(definitions.get(key), list)]
    return []


def resolve_path(data, override):
    """The full path (keys and indices) `override` (an Override or its text) names in `data`; for
    "add", the path of the key it creates. OverrideError with did-you-mean when it leads nowhere."""
    override = parse_override(override) if isinstance(override, str) else override
    try:
        return _resolve(data, override)
    except _Bad as e:
        raise OverrideError([(override.text, str(e))]) from None


def _resolve(data, override):
    parts, path, node = override.path, (), data
    names = definition_paths(data)
    if not (isinstance(data, dict) and parts[0] in data) and parts[0] in names:
        if len(names[parts[0]]) > 1:
            raise _Bad(_ambiguous(data, parts[0], names[parts[0]], parts[1:]))
        path = names[parts[0]][0]
        node, parts = _get(data, path), parts[1:]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        try:
            path = path + _step(data, node, path, part, override.action if last else 'walk', override)
        except _Bad as e:
            shadowed = path[:1] == (override.path[0],) and override.path[0] in names
            raise _Bad(str(e) + (f' ("{override.path[0]}" is also a definition; the top-level key wins: '
                                 f'write initialize.definitions.{override.path[0]}... for the definition)'
                                 if shadowed else '')) from None
        node = _get(data, path) if not last else None
    if override.action == 'add' and _exists(data, path):
        raise _Bad(f'{format_path(path, data)} exists already. To change it, drop the +: {override.text[1:]}')
    return path


def _step(data, node, path, part, action, override):
    """The keys and indices that `part` leads to from `node` (at `path`), as a tuple: one, or two for a
    definition named inside concise parts. `action` is the override's for its last part ("add": it may
    be new), "walk" for the others."""
    where = format_path(path, data) or 'the top level of the spec'
    if isinstance(node, dict):
        if part in node or action == 'add':
            return (part,)
        if path == ('initialize', 'definitions'):
            found = definition_paths(data).get(part, [])
            if len(found) == 1:
                return found[0][len(path):]
            if found:
                _fail(_ambiguous(data, part, found, ()))
        candidates = list(node) + (list(definition_paths(data)) if not path else [])
        what = 'neither a top-level key nor a definition' if not path else f'not a key of {where}'
        _fail(f'"{part}" is {what}{suggest(part, candidates)}',
              f'Keys there: {_listing(node)}' if node else f'{where} is empty',
              f'Definitions: {_listing(definition_paths(data))}' if not path and definition_paths(data) else '',
              f'To add it, write +{override.text}' if action == 'set' else '')
    if isinstance(node, list):
        if part.isdigit():
            index = int(part)
            if (index < len(node) and action != 'add') or (index == len(node) and action == 'add'):
                return (index,)
            if action == 'add' and index < len(node):
                _fail(f'{where} has an item {index} already', 'To replace it, drop the +; to append one, '
                      f'use the index {len(node)}')
            _fail(f'{where} has {len(node)} item{"s" if len(node) != 1 else ""}, so there is no item {index}'
                  + (f' (indices 0..{len(node) - 1})' if node else ''),
                  {'set': f'To append an item, write +PATH=VALUE with the index {len(node)}',
                   'add': f'To append an item, use the index {len(node)}'}.get(action, ''))
        named = [i for i, item in enumerate(node) if isinstance(item, dict) and item.get('name') == part]
        if len(named) == 1 and action != 'add':
            return (named[0],)
        names = [item['name'] for item in node if isinstance(item, dict) and isinstance(item.get('name'), str)]
        if len(named) > 1:
            _fail(f'{len(named)} items of {where} are named "{part}" (indices {", ".join(map(str, named))})',
                  'Choose one by its index')
        if action == 'add' and named:
            _fail(f'{where} has an item named "{part}" already', 'To change it, drop the +')
        if names:
            _fail(f'{where} has no item named "{part}"{suggest(part, names)}',
                  f'Items: {_listing(names)}; or choose one by its index 0..{len(node) - 1}')
        _fail(f'{where} is a list: choose an item by its index'
              + (f' 0..{len(node) - 1}' if node else ' (it is empty)'))
    kind = 'null' if node is None else f'{_KINDS.get(type(node), type(node).__name__)} ({_short(node)})'
    _fail(f'{where} is {kind}: there is no "{part}" inside it')


_KINDS = {str: 'a string', bool: 'true/false', int: 'a number', float: 'a number'}


def _fail(*sentences):
    """Raise _Bad with the non-empty `sentences` (the first may end in a did-you-mean '?') as one text."""
    text = ''
    for sentence in filter(None, sentences):
        text += ('' if not text else ' ' if text.endswith(('?', '.')) else '. ') + sentence
    raise _Bad(text)


def _ambiguous(data, name, paths, rest):
    shown = ' and '.join(f'{format_path(p, data)} ({_get(data, p).get("group", "?")})' for p in paths)
    full = ' or '.join('.'.join(map(str, p + rest)) for p in paths)
    return f'"{name}" names {len(paths)} definitions, {shown}: write the full path of the one you mean, {full}'


def _listing(keys):
    keys = list(keys)
    shown = ', '.join(map(str, keys[:_SHOWN_KEYS]))
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > _SHOWN_KEYS else '')


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + '...'


def _get(data, path):
    for key in path:
        data = data[key]
    return data


def _exists(data, path):
    parent, key = _get(data, path[:-1]), path[-1]
    return key in parent if isinstance(parent, dict) else key < len(parent)


# ---- applying them -------------------------------------------------------------------------------

class OverriddenDocument(Document):
    """A spec with overrides applied. A value an override wrote is located at the override (source
    `--set TEXT`, no line), the rest where `base` has it; a problem at an object an override changed
    something in says so: `spec.json:30:9 train.stages[0].stop_condition (after --set ~...)`.
    `applied`: (Override, full path) in order."""

    def __init__(self, base):
        super().__init__(copy.deepcopy(base.data), base.source, base.text, base.positions)
        self.base = base
        self.origins = {(): ()}     # path here -> the path in `base` it comes from, or the Override that wrote it
        self.changed = {}           # path here -> the Overrides that set, added or removed keys or items in it
        self.applied = []

    def origin(self, path):
        """The Override that wrote the value at `path`, or its path in `base`."""
        path = tuple(path)
        for length in range(len(path), -1, -1):
            if path[:length] in self.origins:
                found = self.origins[path[:length]]
                return found if isinstance(found, Override) else found + path[length:]
        return path

    def position(self, path):
        origin = self.origin(path)
        return (0, 0) if isinstance(origin, Override) else self.base.position(origin)

    def source_of(self, path):
        origin = self.origin(path)
        return str(origin) if isinstance(origin, Override) else self.base.source_of(origin)

    def describe(self, path):
        """As Document.describe; a value not written by an override, inside which (or inside one of
        whose values) an override set, added or removed something, names those overrides."""
        path = tuple(path)
        if isinstance(self.origin(path), Override):
            return super().describe(path)
        # a definition (or deeper) names every override inside it: a builder's error about a
        # definition whose kwargs an override changed points at the override too
        depth = len(path) + 1 if len(path) < 3 else None
        inside = {id(o) for key, found in self.changed.items() if key[:len(path)] == path
                  and (depth is None or len(key) <= depth) for o in found}
        notes = [o for o, _ in self.applied if id(o) in inside]
        return super().describe(path) + (f' (after {", ".join(map(str, notes))})' if notes else '')

    def apply(self, override):
        """Apply one Override (OverrideError when its path leads nowhere); returns its full path."""
        path = resolve_path(self.data, override)
        parent, key = _get(self.data, path[:-1]), path[-1]
        if override.action == 'remove':
            if isinstance(parent, list):
                self._shift_after(path, -1)
                parent.pop(key)
            else:
                del parent[key]
                self._forget(path)
            self.changed.setdefault(path[:-1], []).append(override)
        else:
            if isinstance(parent, list) and key == len(parent):
                parent.append(None)
            self.changed.setdefault(path[:-1], []).append(override)
            parent[key] = copy.deepcopy(override.value)
            self._forget(path)
            self.origins[path] = override
        self.applied.append((override, path))
        return path

    def _forget(self, path):
        """Drop what is recorded at `path` and below it."""
        for table in (self.origins, self.changed):
            for key in [k for k in table if k[:len(path)] == path]:
                del table[key]

    def _shift_after(self, path, delta):
        """List item `path` is removed: the items after it move up, and so do their records."""
        items, index = path[:-1], path[-1]
        for later in range(index + 1, len(_get(self.data, items))):
            self.origins.setdefault(items + (later,), self.origin(items + (later,)))
        self._forget(path)
        for table in (self.origins, self.changed):
            moved = {k: table.pop(k) for k in list(table)
                     if len(k) > len(items) and k[:len(items)] == items and k[len(items)] > index}
            table.update({k[:len(items)] + (k[len(items)] + delta,) + k[len(items) + 1:]: v for k, v in moved.items()})


def apply_overrides(document, overrides):
    """`document` (a Document) with `overrides` (Overrides or their texts) applied in order, as an
    OverriddenDocument whose `data` is the new spec; `document` is left as it was. Every bad argument
    is reported at once, in one OverrideError (exit 2)."""
    overrides = parse_overrides(overrides)
    result, problems = OverriddenDocument(document), []
    for override in overrides:
        try:
            result.apply(override)
        except OverrideError as e:
            problems.extend(e.problems)
    if problems:
        raise OverrideError(problems)
    return result


def apply_to_data(data, overrides):
    """Plain data with `overrides` applied (a copy; `data` is left as it was)."""
    return apply_overrides(Document(data, '<spec>'), overrides).data


# ---- showing and storing them --------------------------------------------------------------------

def render(overrides):
    """The overrides as a command line fragment a shell takes back: `--set optimizer.spec.kwargs.lr=0.01
    --set '~train.loggers'` (for `status`)."""
    return ' '.join(f'--set {shlex.quote(o.text if isinstance(o, Override) else o)}' for o in overrides)


def to_plain(overrides):
    """What a session stores: the arguments as given, a list of strings."""
    return [o.text if isinstance(o, Override) else o for o in overrides]


def from_plain(texts):
    """Stored overrides back as Overrides (parsed again, so a stored list is checked like a command line)."""
    return parse_overrides(list(texts))


# ---- what `train SESSION --set` may change ---------------------------------------------------------

# Options read only while training runs: changing them leaves what init built (definitions, learned
# state, checkpoints' contents) as it is. `train SESSION --set` may change these and nothing else.
RUNTIME_KEYS = ('device', 'precision', 'compile')
TRAIN_OPTIONS = ('checkpoint_every', 'keep_checkpoints', 'best_metric', 'non_finite', 'loggers',
                 'accumulate', 'clip_grad_norm')
STOP_CONDITION_ARGUMENTS = ('args', 'kwargs')


def changes_build(path):
    """Whether changing the value at full `path` changes what init built (a definition, a pipeline,
    the stages' structure, the seed...) rather than only how training goes on from the checkpoints."""
    path = tuple(path)
    if path[:1] and path[0] in RUNTIME_KEYS:
        return False
    if len(path) >= 2 and path[0] == 'train' and path[1] in TRAIN_OPTIONS:
        return False
    return not (len(path) >= 5 and path[:2] == ('train', 'stages') and isinstance(path[2], int)
                and path[3] == 'stop_condition' and path[4] in STOP_CONDITION_ARGUMENTS)


def paths_that_change_build(overrides, data):
    """The overrides (as Overrides, in order) that would change what init built from `data`, each with
    its full path: [(Override, path)]. [] means `train SESSION --set ...` may go ahead."""
    applied = apply_overrides(Document(data, '<spec>'), overrides).applied
    return [(override, path) for override, path in applied if changes_build(path)]
