"""Overrides: an evaluation or inference spec's `initialize` block merged into the training spec.

- an object merges into the original key by key, recursively;
- a list replaces the original list;
- {"options": [...], "replace_strategy": "override", "override_key": [fields]} merges list items:
  an item whose override-key fields equal an original item's merges into it, others are appended;
- {"options": X, "replace_strategy": "replace"} replaces outright.
"""
import copy


class MergeError(Exception):
    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


def merge(original, override, path=()):
    if isinstance(override, dict) and 'replace_strategy' in override:
        strategy = override['replace_strategy']
        if 'options' not in override:
            raise MergeError(path, 'an override with "replace_strategy" needs "options"')
        if strategy == 'replace':
            return copy.deepcopy(override['options'])
        if strategy == 'override':
            return _merge_items(original, override, path)
        raise MergeError(path + ('replace_strategy',),
                         f'unknown replace_strategy "{strategy}"; use "override" or "replace"')
    if isinstance(override, dict) and isinstance(original, dict):
        merged = copy.deepcopy(original)
        for key, value in override.items():
            merged[key] = merge(original[key], value, path + (key,)) if key in original else \
                merge(None, value, path + (key,))
        return merged
    return copy.deepcopy(override)


def _merge_items(original, override, path):
    keys = override.get('override_key', ['name'])
    if isinstance(keys, str):
        keys = [keys]
    options = override['options']
    if not isinstance(options, list) or not isinstance(original, list):
        raise MergeError(path, '"replace_strategy": "override" merges lists: "options" and the original must be lists')
    merged = copy.deepcopy(original)
    for item in options:
        key = tuple(item.get(k) for k in keys) if isinstance(item, dict) else None
        target = next((i for i, o in enumerate(merged)
                       if key is not None and isinstance(o, dict) and tuple(o.get(k) for k in keys) == key), None)
        if target is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[target] = merge(merged[target], item, path)
    return merged
