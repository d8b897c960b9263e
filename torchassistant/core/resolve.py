"""Turn the names written in specs into Python objects, and check calls against signatures.

A bare name is looked up in its group's home modules (`Adam` in `torch.optim`); a dotted path is
imported with the current working directory first on `sys.path`. Failures raise `ResolveError`
with a "did you mean" drawn from the modules that were searched.
"""
import difflib
import importlib
import inspect
import os
import sys

# Where a bare (undotted) name is looked up, per group or field.
HOMES = {
    'optimizers': ('torch.optim',),
    'lr_scheduler': ('torch.optim.lr_scheduler',),
    'losses': ('torch.nn',),
    'metrics': ('torchassistant.metrics', 'torchmetrics.text', 'torchmetrics'),    # text metrics: their home, no warning
    'collators': ('torchassistant.collators',),
    'stop_condition': ('torchassistant.stop_conditions',),
    'preprocessors': ('torchassistant.preprocessors',),
    'output_adapter': ('torchassistant.output_adapters',),
}


class ResolveError(Exception):
    pass


def ensure_cwd_importable():
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)


def resolve(name, home=None):
    """The object named by `name`: a dotted path, or a bare name looked up in HOMES[home]."""
    ensure_cwd_importable()
    if '.' not in name:
        modules = HOMES.get(home, ())
        for module_name in modules:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                return getattr(module, name)
        candidates = list(dict.fromkeys(n for m in modules for n in dir(importlib.import_module(m))
                                        if not n.startswith('_')))
        if not modules:
            raise ResolveError(f'"{name}" is not a dotted path; write it as module.Name, '
                               f'e.g. "my_package.{name}" (imported relative to {os.getcwd()})')
        raise ResolveError(f'"{name}" was not found in {" or ".join(modules)}' + _suggest(name, candidates))
    module_name, _, attribute = name.rpartition('.')
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        if not (module_name + '.').startswith(missing + '.'):
            raise ResolveError(f'importing module "{module_name}" failed: it imports "{missing}", which is '
                               f'not installed' + _in_user_code(e)) from e
        hint = ' (paths are relative to the current directory, ' + os.getcwd() + ')' \
            if not missing.startswith(('torch', 'torchvision', 'torchmetrics')) else ''
        raise ResolveError(f'cannot import module "{module_name}": no module named "{missing}"{hint}') from None
    except Exception as e:
        raise ResolveError(f'importing module "{module_name}" failed: {type(e).__name__}: {e}'
                           + _in_user_code(e)) from e
    try:
        return getattr(module, attribute)
    except AttributeError:
        names = [n for n in dir(module) if not n.startswith('_')]
        raise ResolveError(f'module "{module_name}" has no attribute "{attribute}"'
                           + _suggest(attribute, names)) from None


def _in_user_code(exc):
    """The frames of the user's own files that `exc` passed through, indented to sit under a
    problem of a spec report, or ''."""
    import textwrap

    from torchassistant.core.errors import user_frames
    frames = user_frames(exc)
    return '\n    In your code:\n' + textwrap.indent(frames, '  ') if frames else ''


def _suggest(name, candidates):
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f'; did you mean {" or ".join(repr(c) for c in close)}?' if close else ''


def suggest(name, candidates):
    """'; did you mean ...?' or ''."""
    return _suggest(name, list(candidates))


def check_call(target, args, kwargs, leading=0):
    """Problems binding `target(<leading values>, *args, **kwargs)`, as messages; [] when it binds.

    `leading` counts arguments the framework passes first (the session of a factory function, the
    optimizer of a scheduler, the parameters of an optimizer).
    """
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []   # builtins and C extensions without signatures: nothing to check
    parameters = list(signature.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in parameters) and any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return []
    try:
        signature.bind(*([None] * leading), *args, **kwargs)
        return []
    except TypeError as e:
        message = str(e)
    given = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:leading]
    keywords = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in given]
    unknown = [k for k in kwargs if k not in keywords] \
        if not any(p.kind is p.VAR_KEYWORD for p in parameters) else [k for k in kwargs if k in given]
    if unknown:
        return [_unknown_keyword(k, keywords, given, target) for k in unknown]
    shown = ', '.join(p.name if p.default is p.empty else f'{p.name}=...' for p in parameters)
    return [f'the arguments do not match {_callable_name(target)}({shown}): {message}']


def _unknown_keyword(keyword, keywords, given, target):
    """Why `keyword` cannot be passed: TorchAssistant passes it itself, or no parameter has that name."""
    if keyword in given:
        return f'unknown keyword argument "{keyword}": TorchAssistant passes "{keyword}" itself; remove it'
    if not keywords:
        return f'unknown keyword argument "{keyword}": {_callable_name(target)} takes no keyword arguments'
    return f'unknown keyword argument "{keyword}"{_suggest(keyword, keywords)}; accepted: {", ".join(keywords)}'


def _callable_name(target):
    return getattr(target, '__qualname__', getattr(target, '__name__', repr(target)))


def qualified_name(obj):
    return f'{getattr(obj, "__module__", "?")}.{_callable_name(obj)}'
