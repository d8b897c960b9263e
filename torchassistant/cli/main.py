"""Command lines: the `torchassistant` console command (also `python -m torchassistant`), the root
scripts init.py, train.py, evaluate.py and infer.py, and the one place errors become exit codes.

Both forms share one argument definition per command (`_ARGUMENTS`). The commands themselves live in
`torchassistant.commands`, imported only when a command runs, so `--help` and `--version` stay fast.

Exit codes: 0 success, 1 failure while running (user code, I/O), 2 bad spec or usage, 130 interrupted
(SIGINT, Ctrl+C), 143 stopped by SIGTERM.
"""
import argparse
import json
import os
import sys
import textwrap
import traceback

from torchassistant import version
from torchassistant.cli import hints
from torchassistant.cli.hints import command_hint
from torchassistant.core import errors
from torchassistant.core.hints import Hint

EXIT_CODES = 'exit codes: 0 ok, 1 failure while running, 2 bad spec or usage, 130 interrupted (Ctrl+C), 143 SIGTERM'

# ---- how the user runs a command -----------------------------------------------------------------

# ---- the commands' arguments (shared by both forms) ----------------------------------------------

def _commands():
    from torchassistant.cli import commands  # imports torch: only when a command runs
    return commands


def _set_option(parser, what):
    parser.add_argument('--set', dest='overrides', action='append', default=[], metavar='PATH=VALUE',
                        help=f'{what} (repeatable): PATH=VALUE sets a value that exists, +PATH=VALUE adds a key, '
                             f'~PATH removes one. PATH is dotted (train.stages.0.stop_condition), a definition by '
                             f'its name (optimizer.spec.kwargs.lr); VALUE is JSON, else a string')


def _init(parser):
    parser.add_argument('spec', help='training spec (.json, .yaml)')
    _set_option(parser, 'override a value of the spec; the session records it')
    parser.add_argument('--force', action='store_true', help='replace an existing session folder with a fresh one')
    parser.add_argument('--check', action='store_true',
                        help='dry run: validate, build, run one batch through every pipeline; write nothing')
    _expanded_option(parser, 'with --check: ')

    def action(a):
        if a.expanded and not a.check:
            raise errors.UsageError(f'--expanded goes with --check: {command_hint("check", "--expanded", a.spec)}')
        return _check_action(a) if a.check else _commands().init(a.spec, a.force, overrides=a.overrides)
    return action


def _check(parser):
    parser.add_argument('spec', help='training spec (.json, .yaml)')
    _set_option(parser, 'override a value of the spec')
    _expanded_option(parser)
    return _check_action


def _expanded_option(parser, prefix=''):
    parser.add_argument('--expanded', action='store_true',
                        help=f'{prefix}print only the explicit spec a concise spec is filled in to (JSON on stdout, '
                             f'what was filled in on stderr)')


def _check_action(a):
    return _commands().check(a.spec, debug=a.debug, expanded=a.expanded, overrides=a.overrides)


def _run_options(parser, quiet=False):
    """--device and --precision (they override the spec's), and --quiet where there is progress to quiet."""
    from torchassistant.spec.schema import RUNTIME
    parser.add_argument('--device', help='where to compute: auto, cpu, cuda, cuda:N, mps. Overrides the spec\'s '
                                         '"device"; with neither, the environment variable TORCHASSISTANT_DEVICE, '
                                         'else auto (CUDA if present, else MPS, else CPU)')
    parser.add_argument('--precision', choices=RUNTIME['precision']['enum'],
                        help='autocast precision (overrides the spec\'s "precision")')
    if quiet:
        parser.add_argument('--quiet', action='store_true', help='no progress lines; only the summary at the end')
    return lambda a: _commands().RunOptions(device=a.device, precision=a.precision, quiet=getattr(a, 'quiet', False))


def _train(parser):
    parser.add_argument('session_dir', help='session folder created by init')
    _set_option(parser, 'change what does not change what init built: a stop condition\'s arguments (more '
                        'epochs: train.stages.0.stop_condition.kwargs.num_epochs=30) or a train option '
                        '(checkpoint_every, loggers, non_finite...); the session records it')
    options = _run_options(parser, quiet=True)
    return lambda a: _commands().train(a.session_dir, options=options(a), overrides=a.overrides)


def _evaluate(parser):
    parser.add_argument('spec', help='evaluation spec (.json)')
    options = _run_options(parser)
    return lambda a: _commands().evaluate(a.spec, options=options(a))


def _infer(parser):
    parser.add_argument('spec', help='inference spec (.json)')
    parser.add_argument('inputs', nargs='*', help='raw inputs, one per example (or one per inputs_meta entry)')
    parser.add_argument('--from', dest='from_file', metavar='FILE',
                        help='read the inputs from FILE, one example per line (its inputs separated by tabs '
                             'when inputs_meta has several entries; "-" reads standard input); runs in batches '
                             'of the data loader\'s batch size, printing each batch\'s results as it finishes')
    parser.add_argument('--json', dest='json_lines', action='store_true',
                        help='print one JSON object per example on stdout and nothing else: '
                             '{"input": ..., "<result>": value, ...}, tensors as lists')
    options = _run_options(parser)
    return lambda a: _commands().infer(a.spec, a.inputs, json_lines=a.json_lines, from_file=a.from_file,
                                       options=options(a))


def _status(parser):
    parser.add_argument('session_dir', help='session folder, or a sweep folder (its trials by objective)')
    parser.add_argument('--json', dest='as_json', action='store_true', help='print the status as one JSON object')
    return lambda a: _experiments().sweep_status(a.session_dir, a.as_json) if _is_sweep(a.session_dir) \
        else _commands().status(a.session_dir, as_json=a.as_json)


def _is_sweep(path):
    return os.path.isfile(os.path.join(path, 'sweep.json'))


def _experiments():
    from torchassistant.cli import experiments  # imports optuna: only when a command runs
    return experiments


def _sweep(parser):
    parser.add_argument('spec', help='sweep spec (.json, .yaml)')
    parser.add_argument('--jobs', type=int, default=1, metavar='N',
                        help='run N trials at once, in N processes (default 1); the same command on another '
                             'machine with the same "storage" joins the same study')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    return lambda a: _experiments().sweep(a.spec, jobs=a.jobs, worker=a.worker)


def _compare(parser):
    parser.add_argument('sessions', nargs='+', metavar='SESSION', help='session folders, or a sweep folder')
    parser.add_argument('--metric', help='the display name that decides "best" (default: each session\'s own)')
    parser.add_argument('--out', metavar='PNG', help='the learning curves of all of them on one figure here')
    return lambda a: _experiments().compare(a.sessions, metric=a.metric, out=a.out)


def _plot(parser):
    parser.add_argument('session_dir', help='session folder, or a sweep folder (the objective by trial and parameter)')
    parser.add_argument('--out', metavar='DIR', help='where the PNG files go (default: SESSION/plots)')
    return lambda a: _experiments().plot_sweep(a.session_dir, a.out) if _is_sweep(a.session_dir) \
        else _commands().plot(a.session_dir, a.out)


def _trust(parser):
    parser.add_argument('session_dir', help='session folder')
    return lambda a: _commands().trust(a.session_dir)


def _deploy():
    from torchassistant.cli import deploy  # imports torch: only when a command runs
    return deploy


def _checkpoint_option(parser, what):
    def checkpoint(text):
        if text in ('latest', 'best') or text.isdigit():
            return int(text) if text.isdigit() else text
        raise argparse.ArgumentTypeError(f'"latest", "best" or an epoch number, not {text!r}')
    parser.add_argument('--checkpoint', type=checkpoint, metavar='best|latest|N',
                        help=f'which checkpoint\'s weights {what} (overrides the spec\'s "checkpoint"; default latest)')


def _export(parser):
    parser.add_argument('spec', help='inference spec (.json): its session and pipeline')
    parser.add_argument('--format', dest='fmt', required=True, choices=['safetensors', 'torch-export', 'onnx'],
                        help='safetensors: the weights with metadata; torch-export: a torch.export program (.pt2); '
                             'onnx: ONNX (torch.onnx.export, dynamo). Each file is checked against the pipeline on '
                             'a few hundred examples of its data before it is written')
    _checkpoint_option(parser, 'to export')
    parser.add_argument('--out', metavar='PATH',
                        help='the file to write (one model), or a folder for one file per model '
                             '(default: SESSION/exports/MODEL.safetensors|.pt2|.onnx)')
    return lambda a: _deploy().export(a.spec, a.fmt, checkpoint=a.checkpoint, out=a.out)


def _serve(parser):
    parser.add_argument('spec', help='inference spec (.json): its session, pipeline and input converters')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default 127.0.0.1: this machine '
                                                           'only; 0.0.0.0 for every interface)')
    parser.add_argument('--port', type=int, default=8000, help='port to listen on (default 8000; 0: any free one, '
                                                               'printed)')
    parser.add_argument('--max-batch', type=int, default=64,
                        help='the most examples run as one batch; concurrent requests are batched (default 64)')
    parser.add_argument('--max-wait-ms', type=float, default=5.0,
                        help='how long a request waits for others to batch with (default 5 ms)')
    parser.add_argument('--max-body', type=int, metavar='BYTES',
                        help='the largest request body accepted; larger ones get 413 (default 16 MiB)')
    _checkpoint_option(parser, 'to serve')
    options = _run_options(parser)
    return lambda a: _deploy().serve(a.spec, host=a.host, port=a.port, max_batch=a.max_batch,
                                     max_wait_ms=a.max_wait_ms, max_body=a.max_body, checkpoint=a.checkpoint,
                                     options=options(a))


def _schema(parser):
    from torchassistant.spec.schema import SCHEMAS
    parser.add_argument('kind', choices=sorted(SCHEMAS), help='which spec format')
    return lambda a: _print_schema(SCHEMAS[a.kind])


def _print_schema(schema):
    json.dump(schema, sys.stdout, indent=2)
    print()


# name -> (how its arguments are added, one-line description, example arguments)
_ARGUMENTS = {
    'init': (_init, 'Create a training session folder from a training spec.',
             ['examples/mnist/training.json', '--force examples/mnist/training.json',
              '--set optimizer.spec.kwargs.lr=3e-4 --set session_dir=runs/lr3e-4 examples/mnist/training.json']),
    'train': (_train, 'Train a session stage by stage; run again to resume.',
              ['pretrained', 'pretrained --set train.stages.0.stop_condition.kwargs.num_epochs=30']),
    'evaluate': (_evaluate, 'Print the metrics of the latest checkpoint on chosen pipelines.',
                 ['examples/mnist/evaluation.json']),
    'infer': (_infer, 'Run a pipeline forward on raw inputs through input converters.',
              ['examples/mnist/inference.json examples/mnist/digit_2.png',
               '--json --from images.txt examples/mnist/inference.json > predictions.jsonl']),
    'check': (_check, 'Validate a training spec, build it and run one batch through every pipeline '
                      '(no optimizer step); writes nothing.', ['examples/mnist/training.json']),
    'status': (_status, 'Where a session stands: stage, epoch, last and best metrics, checkpoints, '
                        'whether it is complete or training now. Reads only.', ['pretrained']),
    'trust': (_trust, 'Show the modules and callables a session\'s spec imports and calls (importing nothing), and '
                      'accept its spec as it is now: train, evaluate and infer refuse a spec changed since init '
                      'until then.', ['pretrained']),
    'plot': (_plot, 'Draw learning curves as PNG files, one per stage.', ['pretrained', 'pretrained --out curves']),
    'export': (_export, 'Export the inference pipeline\'s models as safetensors, torch.export (.pt2) or ONNX, '
                        'each checked against the pipeline before it is written.',
               ['examples/mnist/inference.json --format onnx',
                'examples/mnist/inference.json --format torch-export --checkpoint best --out lenet5.pt2']),
    'serve': (_serve, 'Answer predictions over HTTP (POST /predict, as infer --json answers; /docs): concurrent '
                      'requests are batched. SIGTERM or Ctrl+C: the requests in flight are answered, then it exits 0.',
              ['examples/mnist/inference.json',
               'examples/mnist/inference.json --port 8080 --max-batch 32']),
    'sweep': (_sweep, 'Search hyperparameters on Optuna: each trial a session made with --set overrides; '
                      'killed, it resumes where it stopped.', ['sweep.json', '--jobs 2 sweep.json']),
    'compare': (_compare, 'One table of sessions (overrides, best metric, epochs, time), their learning curves '
                          'on one figure.', ['runs/a runs/b --out curves.png', 'sweeps/lr']),
    'schema': (_schema, 'Print the JSON Schema of a spec format, for editors.',
               ['training > training.schema.json']),
}


def _epilog(name):
    examples = '\n'.join(f'  {hints.prefix_of(name)} {args}' for args in _ARGUMENTS[name][2])
    return f'example{"s" if len(_ARGUMENTS[name][2]) > 1 else ""}:\n{examples}\n\n{EXIT_CODES}'


def _configure(parser, name):
    """Add `name`'s arguments and --debug to `parser`; the action to run is stored in its defaults."""
    parser.add_argument('--debug', action='store_true', help='show full Python tracebacks on errors')
    parser.set_defaults(action=_ARGUMENTS[name][0](parser), command=name)
    return parser


class _Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message):
        raise errors.UsageError(f'{self.prog}: {message}\n{self.format_usage().strip()}')


# ---- entry points --------------------------------------------------------------------------------

def main(argv=None, prog='torchassistant'):
    """The console command: `torchassistant COMMAND ...` (`prog` is the name its hints use)."""
    hints.use_console(prog)
    parser = _Parser(prog=prog, description='Config-driven training on top of PyTorch: a JSON spec in, '
                                            'a trained session folder out.',
                     epilog=f'{prog} COMMAND --help shows a command\'s arguments and an example.\n\n{EXIT_CODES}')
    parser.add_argument('--version', action='version', version=f'torchassistant {version}')
    parser.add_argument('--debug', action='store_true', help='show full Python tracebacks on errors')
    subparsers = parser.add_subparsers(metavar='COMMAND', required=True)
    for name, (_, description, _) in _ARGUMENTS.items():
        _configure(subparsers.add_parser(name, help=description, description=textwrap.fill(description, 90),
                                         epilog=_epilog(name)), name)
    return _run(parser, argv)


def _script(name, prog, argv):
    hints.use_console(None)
    return _run(_configure(_Parser(prog=prog, description=_ARGUMENTS[name][1], epilog=_epilog(name)), name), argv)


def init_main(argv=None):
    return _script('init', 'init.py', argv)


def train_main(argv=None):
    return _script('train', 'train.py', argv)


def evaluate_main(argv=None):
    return _script('evaluate', 'evaluate.py', argv)


def infer_main(argv=None):
    return _script('infer', 'infer.py', argv)


def schema_main(argv=None):
    """`python -m torchassistant.schema KIND`."""
    return _script('schema', 'python -m torchassistant.schema', argv)


# ---- the one place errors become exit codes ------------------------------------------------------

def _run(parser, argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = '--debug' in argv
    command, session = None, 'SESSION'
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:           # --help, --version
            return e.code if isinstance(e.code, int) else 0
        args.debug, command = debug, args.command
        session = getattr(args, 'session_dir', session)
        result = args.action(args)
        sys.stdout.flush()                # a closed pipe shows here, not at interpreter exit
        return errors.EXIT_FAILURE if result is False else 0
    except errors.Interrupted as e:       # SIGINT/SIGTERM while training: where it stopped, how to go on
        _traceback(debug)
        resume = getattr(e, 'resume', None) or Hint('train', session)      # a sweep resumes as a sweep
        print(f'\n{e.render(hints.prefix_of)}. Resume with: {resume.render(hints.prefix_of)}', file=sys.stderr)
        return e.exit_code
    except errors.TorchAssistantError as e:
        _traceback(debug)
        print(f'error: {e.render(hints.prefix_of)}', file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:               # `torchassistant schema training | head`: the reader has enough
        _traceback(debug)
        _discard_stdout()
        return errors.EXIT_FAILURE
    except OSError as e:                  # our own reading and writing; user code's errors are wrapped
        _traceback(debug)
        print(f'error: {e.filename or "a file"}: {e.strerror or e}', file=sys.stderr)
        return errors.EXIT_FAILURE
    except KeyboardInterrupt:
        _traceback(debug)
        resume = f' (resume from the last checkpoint with: {command_hint("train", session)})' \
            if command == 'train' else ''
        print(f'\ninterrupted; what was saved stays saved{resume}', file=sys.stderr)
        return errors.EXIT_INTERRUPTED


def _traceback(debug):
    if debug:
        traceback.print_exc()


def _discard_stdout():
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
