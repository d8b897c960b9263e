"""Errors the commands know how to report, and the exit codes they map to.

Every error here carries a complete, user-facing message. The root scripts turn them into one
paragraph on stderr and an exit code; anything else is a bug and shows a traceback.
"""
import select
import sys

from torchassistant.core.hints import render

EXIT_FAILURE = 1      # something failed while running (user code, I/O)
EXIT_USAGE = 2        # bad spec, bad command line, bad session folder
EXIT_INTERRUPTED = 130


class TorchAssistantError(Exception):
    """`parts`: the message, strings and `hints.Hint`s (commands to suggest, rendered by the CLI)."""
    exit_code = EXIT_FAILURE

    def __init__(self, *parts):
        self.parts = parts
        self.message = render(parts)
        super().__init__(self.message)

    def render(self, prefix_of=None):
        return render(self.parts, prefix_of)


class UsageError(TorchAssistantError):
    """A bad command line or a file/folder that is not what the command expects."""
    exit_code = EXIT_USAGE


class SpecError(TorchAssistantError):
    """One or more problems in a spec file, each naming its location."""
    exit_code = EXIT_USAGE

    def __init__(self, source, problems):
        self.source = source
        self.problems = problems
        count = len(problems)
        header = f"{source}: {count} problem{'s' if count != 1 else ''} found"
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in problems))


class Interrupted(TorchAssistantError):
    """Training stopped by SIGINT (exit 130) or SIGTERM (exit 143); `saved`: a checkpoint was just taken
    where it stopped. The message says where it stopped; the CLI adds the command that resumes."""

    def __init__(self, signum, where, saved):
        import signal
        self.signum = signum
        self.exit_code = 128 + int(signum)
        self.saved = saved
        name = signal.Signals(signum).name
        kept = 'a checkpoint was saved there' if saved else 'what was saved before stays saved'
        super().__init__(f'training stopped by {name} {where}; {kept}')


class UserCodeError(TorchAssistantError):
    """User code (a dataset, model, transform...) raised while the framework called it."""
    exit_code = EXIT_FAILURE

    def __init__(self, message, original):
        super().__init__(message)
        self.original = original


def closed_pipe(exc):
    """Whether `exc` is the reader of standard output (or error) having gone away, not a pipe or socket
    of the code that raised it."""
    if not isinstance(exc, BrokenPipeError):
        return False
    try:
        poller = select.poll()
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                poller.register(stream.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):    # no poll here, or no file descriptors: most likely
        return True


def user_frames(exc):
    """The traceback of `exc` reduced to frames in the user's own files (not the framework,
    the standard library or installed packages), formatted as Python prints them."""
    import os
    import sysconfig
    import traceback
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # torchassistant/
    libraries = {os.path.abspath(sysconfig.get_paths()[key]) for key in ('stdlib', 'platstdlib', 'purelib', 'platlib')}

    def is_user(filename):
        path = os.path.abspath(filename)
        return not filename.startswith('<') and not path.startswith(package) \
            and not any(path.startswith(lib) for lib in libraries)

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_user(f.filename)]
    return ''.join(traceback.format_list(frames)).rstrip()


def call_user_code(failure, function, *args, spec_arguments=False):
    """function(*args); an exception it raises becomes a UserCodeError that starts with `failure`.

    With `spec_arguments` (building a definition), an exception raised without any of the user's
    own code running can only come from the values the spec passes: that is a bad spec (exit 2)."""
    try:
        return function(*args)
    except TorchAssistantError:
        raise
    except Exception as e:
        if spec_arguments and not user_frames(e):
            error = user_code_error(failure, e, '\n  No code of yours ran: check the values this definition '
                                                '(its args and kwargs) passes.')
            error.exit_code = EXIT_USAGE
            raise error from e
        raise user_code_error(failure, e) from e


def user_code_error(message, exc, details=''):
    """A UserCodeError saying `message`, the user's exception, `details` (lines starting with
    newline) and the stack frames in the user's own files. A closed standard output (`infer ... | head
    -1`: the reader has what it wanted) is no failure of the code that printed: `exc` is raised again as
    it is, for the command line to end quietly."""
    if closed_pipe(exc):
        raise exc
    said = str(exc)
    if len(said) > 300 and '\n' in said:    # torch's overload listings run to pages
        said = said.splitlines()[0] + ' [...; --debug shows the whole message]'
    text = f'{message}: {type(exc).__name__}: {said}{details}'
    frames = user_frames(exc)
    if frames:
        text += '\n  In your code:\n' + frames
    return UserCodeError(text, exc)
