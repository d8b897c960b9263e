"""Command lines of init, train, evaluate and infer, and the one place errors become exit codes.

Exit codes: 0 success, 1 failure while running (user code, I/O), 2 bad spec or usage, 130 interrupted.
"""
import argparse
import sys
import traceback

from torchassistant import commands, errors

EPILOG = 'exit codes: 0 ok, 1 failure while running, 2 bad spec or usage, 130 interrupted'


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise errors.UsageError(f'{self.prog}: {message}\n{self.format_usage().strip()}')


def _parser(prog, description):
    parser = _Parser(prog=prog, description=description, epilog=EPILOG)
    parser.add_argument('--debug', action='store_true', help='show full Python tracebacks on errors')
    return parser


def _run(parser, action, argv):
    debug = '--debug' in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        result = action(args)
        return 0 if result in (None, True) else 1 if result is False else 0
    except errors.TorchAssistantError as e:
        if debug:
            traceback.print_exc()
        print(f'error: {e.message}', file=sys.stderr)
        return e.exit_code
    except OSError as e:      # our own reading and writing; user code's errors are wrapped above
        if debug:
            traceback.print_exc()
        print(f'error: {e.filename or "a file"}: {e.strerror or e}', file=sys.stderr)
        return errors.EXIT_FAILURE
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print('\ninterrupted; what was saved stays saved (train.py resumes from the last finished epoch)',
              file=sys.stderr)
        return errors.EXIT_INTERRUPTED


def init_main(argv=None):
    parser = _parser('init.py', 'Create a training session folder from a training spec.')
    parser.add_argument('spec', help='training spec (.json)')
    parser.add_argument('--force', action='store_true', help='replace an existing session folder with a fresh one')
    parser.add_argument('--check', action='store_true',
                        help='dry run: validate, build, run one batch through every pipeline; write nothing')
    return _run(parser, lambda a: commands.check(a.spec) if a.check else commands.init(a.spec, a.force), argv)


def train_main(argv=None):
    parser = _parser('train.py', 'Train a session stage by stage; run again to resume.')
    parser.add_argument('session_dir', help='session folder created by init.py')
    return _run(parser, lambda a: commands.train(a.session_dir), argv)


def evaluate_main(argv=None):
    parser = _parser('evaluate.py', 'Print the metrics of the latest checkpoint on chosen pipelines.')
    parser.add_argument('spec', help='evaluation spec (.json)')
    return _run(parser, lambda a: commands.evaluate(a.spec), argv)


def infer_main(argv=None):
    parser = _parser('infer.py', 'Run a pipeline forward on raw inputs through input converters.')
    parser.add_argument('spec', help='inference spec (.json)')
    parser.add_argument('inputs', nargs='*', help='raw inputs, one per example (or one per inputs_meta entry)')
    return _run(parser, lambda a: commands.infer(a.spec, a.inputs), argv)
