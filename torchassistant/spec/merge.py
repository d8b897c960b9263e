"""Overrides: an evaluation or inference spec's `initialize` block merged into the training spec.

- an object merges into the original key by key, recursively; an object that names a `class` replaces
  the original's `factory_fn` and the other way round (its `args` and `kwargs` still merge);
- a list replaces the original list;
- {"options": [...], "replace_strategy": "override", "override_key": [fields]} merges list items:
  an item whose override-key fields equal an original item's merges into it, others are appended;
- {"options": X, "replace_strategy": "replace"} replaces outright.

`merged_document` also remembers where each overridden value came from, so a problem found in the
merged spec is located in the file that holds the culprit.
"""
import copy

from torchassistant.spec.loader import Document

BUILT_BY = ('class', 'factory_fn')


class MergeError(Exception):
    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


def merge(original, override, path=(), origins=None, at=()):
    """`original` with `override` merged in. `path` is where `override` sits in its own file (for
    errors); when `origins` is given it receives {path in the result: path in the override file}
    for every value the override supplied (`at` is where the result goes)."""
    origins = {} if origins is None else origins
    if isinstance(override, dict) and 'replace_strategy' in override:
        strategy = override['replace_strategy']
        if 'options' not in override:
            raise MergeError(path, 'an override with "replace_strategy" needs "options"')
        if strategy == 'replace':
            origins[at] = path + ('options',)
            return copy.deepcopy(override['options'])
        if strategy == 'override':
            return _merge_items(original, override, path, origins, at)
        raise MergeError(path + ('replace_strategy',),
                         f'unknown replace_strategy "{strategy}"; use "override" or "replace"')
    if isinstance(override, dict) and isinstance(original, dict):
        merged = copy.deepcopy(original)
        for either, other in (BUILT_BY, BUILT_BY[::-1]):
            if either in override and other not in override:
                merged.pop(other, None)       # "class" and "factory_fn" are alternatives: the override's is used
        for key, value in override.items():
            merged[key] = merge(original.get(key), value, path + (key,), origins, at + (key,))
        return merged
    origins[at] = path
    return copy.deepcopy(override)


def _merge_items(original, override, path, origins, at):
    keys = override.get('override_key', ['name'])
    if isinstance(keys, str):
        keys = [keys]
    options = override['options']
    if not isinstance(options, list) or not isinstance(original, list):
        raise MergeError(path, '"replace_strategy": "override" merges lists: "options" and the original must be lists')
    merged = copy.deepcopy(original)
    for i, item in enumerate(options):
        key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else None
        target = next((j for j, o in enumerate(merged)
                       if key is not None and isinstance(o, dict) and tuple(o.get(k) for k in keys) == key), None)
        if target is None:
            origins[at + (len(merged),)] = path + ('options', i)
            merged.append(copy.deepcopy(item))
        else:
            merged[target] = merge(merged[target], item, path + ('options', i), origins, at + (target,))
    return merged


def merged_document(document, overrides_document, key='initialize'):
    """The training spec `document` with `overrides_document.data[key]` merged into its `key`.
    Locations inside overridden values point into the overrides file; MergeError paths start at `key`."""
    origins = {}
    merged = merge(document.data.get(key), overrides_document.data[key], (key,), origins, (key,))
    return MergedDocument({**document.data, key: merged}, document, overrides_document, origins)


class MergedDocument(Document):
    """A training spec with overrides merged in: data of the merge, locations from either file."""

    def __init__(self, data, base, overrides, origins):
        super().__init__(data, f'{base.source} (with the overrides of {overrides.source})', base.text, base.positions)
        self.base, self.overrides, self.origins = base, overrides, origins

    def origin(self, path):
        """Where the value at `path` is in the overrides file, or None when it is the base file's."""
        path = tuple(path)
        for length in range(len(path), -1, -1):
            if path[:length] in self.origins:
                return self.origins[path[:length]] + path[length:]
        return None

    def source_of(self, path):
        return self.overrides.source if self.origin(path) is not None else self.base.source

    def position(self, path):
        origin = self.origin(path)
        return self.overrides.position(origin) if origin is not None else self.base.position(path)
