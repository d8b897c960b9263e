"""Sweep specs: a training spec, a search space of override paths, an objective and a study.

    {"sweep_dir": "sweeps/lr", "training_spec": "training.json", "trials": 20,
     "objective": {"metric": "val acc", "direction": "maximize"},
     "parameters": {"optimizer.spec.kwargs.lr": {"float": [1e-4, 1e-1], "log": true},
                    "training_loader.spec.kwargs.batch_size": {"choices": [32, 64, 128]}},
     "sampler": "tpe", "pruner": "median", "storage": null}

`load` checks everything before a trial runs, and reports every problem at once, located in the sweep
file: the structure (the "sweep" JSON Schema), each parameter's path in the training spec (the grammar
and errors of `--set`), each bound and choice against the training spec's own validation, the objective
against the display names the stages' pipelines show, and the storage (reachable, or a folder that can
hold the default SQLite file). Nothing is created until it passes.
"""
import math
import os
from dataclasses import dataclass
from typing import Optional

from torchassistant.core.errors import SpecError, UsageError
from torchassistant.core.resolve import suggest
from torchassistant.spec import loader, overrides, validate
from torchassistant.spec.rules import lower_is_better

DB_FILE = 'study.db'              # the default storage, in the sweep folder
DEFAULT_SAMPLER = 'tpe'
DEFAULT_PRUNER = 'median'


@dataclass
class Parameter:
    path: str                    # an override path, as in --set
    kind: str                    # "float", "int" or "choices"
    low: object = None
    high: object = None
    log: bool = False
    step: object = None
    choices: tuple = ()

    def suggest(self, trial):
        """The value of this parameter for an Optuna trial (the stored one when the trial has it)."""
        if self.kind == 'choices':
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == 'int':
            return trial.suggest_int(self.path, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)

    def candidates(self):
        """The values validated before any trial: the bounds, or every choice."""
        return list(self.choices) if self.kind == 'choices' else [self.low, self.high]

    def grid(self):
        """Every value, for the grid sampler; None when the space is continuous."""
        if self.kind == 'choices':
            return list(self.choices)
        if self.step is None and self.kind == 'float':
            return None
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) for v in values] if self.kind == 'int' else values


@dataclass
class Sweep:
    source: str                  # the sweep file
    sweep_dir: str
    training_spec: str           # the training spec's path (resolved against the sweep file's folder)
    trials: int
    metric: str
    direction: str
    parameters: list
    sampler: str = DEFAULT_SAMPLER
    pruner: str = DEFAULT_PRUNER
    storage: Optional[str] = None    # as given; None: the SQLite file in sweep_dir
    study_name: Optional[str] = None
    seed: Optional[int] = None

    @property
    def storage_url(self):
        return self.storage or f'sqlite:///{os.path.abspath(os.path.join(self.sweep_dir, DB_FILE))}'

    @property
    def name(self):
        return self.study_name or os.path.basename(os.path.normpath(self.sweep_dir))

    def trial_dir(self, number):
        return os.path.join(self.sweep_dir, 'trials', f'{number:04d}')

    def overrides_of(self, params, number):
        """The `--set` arguments that make trial `number`'s session from the training spec."""
        texts = [f'{path}={_value_text(value)}' for path, value in params.items()]
        return texts + [f'session_dir={_value_text(self.trial_dir(number))}']

    def describe_params(self, params):
        return ' '.join(f'{_short_path(p)}={_shown(v)}' for p, v in params.items())


def load(path, expand=None):
    """The Sweep of sweep file `path` (JSON or YAML), or a SpecError listing every problem.

    `expand(document)`: the training spec's filled-in document (a concise spec's pipelines are only
    known once its data is probed), for the objective check; None: checked on the spec as written."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UsageError(f'"{path}" is a folder; expected a sweep spec file (.json, .yaml)')
    if not os.path.isfile(path):
        raise UsageError(f'sweep spec "{path}" does not exist')
    document = loader.load_file(path)
    if not isinstance(document.data, dict):
        raise SpecError(path, [document.problem((), 'a sweep spec must be an object {...}')])
    validate.raise_for_problems(validate.structure(document, 'sweep'), path)
    data = document.data
    problems = []
    training_path = os.path.join(os.path.dirname(path), data['training_spec'])
    parameters = [_parameter(key, value) for key, value in data['parameters'].items()]
    for parameter in parameters:
        problems += _bound_problems(document, parameter)
    sweep = Sweep(path, data['sweep_dir'], training_path, data['trials'], data['objective']['metric'],
                  data['objective'].get('direction', 'minimize' if lower_is_better(data['objective']['metric'])
                                        else 'maximize'),
                  parameters, data.get('sampler', DEFAULT_SAMPLER), data.get('pruner', DEFAULT_PRUNER),
                  data.get('storage'), data.get('study_name'), data.get('seed'))
    if sweep.sampler == 'grid':
        for parameter in parameters:
            if parameter.grid() is None:
                problems.append(document.problem(('parameters', parameter.path), 'the grid sampler needs every '
                                                 'parameter to be a list of choices, an int range or a float range '
                                                 'with a "step"'))
    if not os.path.isfile(training_path):
        problems.append(document.problem(('training_spec',), f'the training spec "{training_path}" does not '
                                         f'exist (training_spec is relative to the sweep file)'))
    else:
        problems += _training_problems(document, sweep, expand)
    problems += _storage_problems(document, sweep)
    validate.raise_for_problems(problems, path)
    return sweep


def _parameter(path, spec):
    if 'choices' in spec:
        return Parameter(path, 'choices', choices=tuple(spec['choices']))
    kind = 'int' if 'int' in spec else 'float'
    low, high = spec[kind]
    return Parameter(path, kind, low, high, bool(spec.get('log', False)), spec.get('step'))


def _bound_problems(document, parameter):
    where = ('parameters', parameter.path)
    if parameter.kind == 'choices':
        return []
    out = []
    if parameter.low > parameter.high:
        out.append(document.problem(where + (parameter.kind,), f'low {parameter.low} is above high {parameter.high}'))
    if parameter.log and parameter.low <= 0:
        out.append(document.problem(where + ('log',), f'a log scale needs low > 0, not {parameter.low}'))
    if parameter.log and parameter.step not in (None, 1) :
        out.append(document.problem(where + ('step',), 'a log scale takes no "step" (Optuna draws either)'))
    return out


def _training_problems(document, sweep, expand):
    """Each parameter's path, and each of its candidate values, against the training spec."""
    problems = []
    try:
        training = loader.load_file(sweep.training_spec)
    except SpecError as e:
        return [document.problem(('training_spec',), f'the training spec has problems: {e.message}')]
    base = validate.check(training, 'training')
    if base:
        return [document.problem(('training_spec',), 'the training spec has problems of its own: '
                                 + '; '.join(map(str, base[:5])))]
    for parameter in sweep.parameters:
        where = ('parameters', parameter.path)
        for value in parameter.candidates():
            text = f'{parameter.path}={_json(value)}'
            try:
                changed = overrides.apply_overrides(training, [text])
            except UsageError as e:
                reason = e.message.split(': ', 1)[-1]
                problems.append(document.problem(where, f'not a path in the training spec: {reason}'))
                break
            found = validate.check(changed, 'training')
            if found:
                problems.append(document.problem(where, f'with {_shown(value)} the training spec is invalid: '
                                                 + '; '.join(p.message for p in found[:3])))
    names = _objective_names(training, expand)
    if names is not None and sweep.metric not in names:
        problems.append(document.problem(('objective', 'metric'), f'no pipeline of the training spec shows '
                                         f'"{sweep.metric}"' + suggest(sweep.metric, names)
                                         + f'; shown: {", ".join(names) or "nothing"}'))
    return problems


def _objective_names(training, expand):
    """The display names the stages' validation pipelines show (training ones where a stage validates
    nothing), or None when they cannot be known without building."""
    document = expand(training) if expand is not None else training
    data = document.data
    try:
        pipelines = data['initialize']['pipelines']
        stages = data['train']['stages']
    except (KeyError, TypeError):
        return None
    names = []
    for stage in stages:
        shown = stage.get('validation_pipelines') or stage.get('training_pipelines', [])
        for name in shown:
            for display in validate.display_names(pipelines.get(name, {})):
                if display not in names:
                    names.append(display)
    return names


def _storage_problems(document, sweep):
    if sweep.storage is None:
        folder = os.path.abspath(sweep.sweep_dir)
        while not os.path.exists(folder):
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            return [document.problem(('sweep_dir',), f'cannot create the sweep folder "{sweep.sweep_dir}" '
                                     f'({folder} is not a writable folder)')]
        return []
    try:
        import sqlalchemy
        engine = sqlalchemy.create_engine(sweep.storage, **_connect_args(sweep.storage))
        with engine.connect():
            pass
        engine.dispose()
    except Exception as e:          # any driver's error: the URL, the driver, the server
        reason = str(e).strip().splitlines()[0][:300]
        return [document.problem(('storage',), f'cannot reach the storage: {type(e).__name__}: {reason}')]
    return []


def _connect_args(url):
    if url.startswith('postgresql'):
        return {'connect_args': {'connect_timeout': 10}}
    return {}


def _value_text(value):
    """VALUE as --set reads it back: a string as it is where --set reads it as that string, else JSON."""
    if isinstance(value, str):
        try:
            if overrides.parse_value(value) == value:
                return value
        except Exception:         # it starts like JSON: written as a JSON string below
            pass
    return _json(value)


def _json(value):
    import json
    return json.dumps(value)


def _shown(value):
    return f'{value:.4g}' if isinstance(value, float) else str(value)


def _short_path(path):
    """The last two parts of an override path: enough to tell parameters apart in a line."""
    parts = path.split('.')
    return '.'.join(parts[-1:]) if len(parts) < 3 else parts[-1]
