"""JSON that every reader parses, for what TorchAssistant writes as JSON for programs: `--json`
(infer, status) and what serve answers.

Python's json module writes NaN and Infinity, which are not JSON (RFC 8259): `jq`, JavaScript's
JSON.parse and most other readers refuse them. Here a float that is not finite is written as null.
"""
import json
import math


def finite(value):
    """`value` with every NaN or infinite float in it (through dicts, lists and tuples) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(value, **kwargs):
    """json.dumps of `finite(value)`: standard JSON only."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
