"""How the user runs TorchAssistant right now, so suggested commands read the same way.

`torchassistant train pretrained` from the console command, `python train.py pretrained` from the root
scripts (`python -m torchassistant status ...` for commands that have no script). Lower layers return
`core.hints.Hint`s; this is the one place that knows how to render them.
"""
from torchassistant.core.hints import Hint

_SCRIPTS = {'init': 'python init.py', 'check': 'python init.py --check', 'train': 'python train.py',
            'evaluate': 'python evaluate.py', 'infer': 'python infer.py'}
_console = None      # the console command's name while it runs ("torchassistant"); None: the root scripts


def use_console(name):
    """Set by the entry points: the console command's name, or None for the root scripts."""
    global _console
    _console = name


def prefix_of(command):
    if _console:
        return f'{_console} {command}'
    return _SCRIPTS.get(command, f'python -m torchassistant {command}')


def command_hint(command, *args):
    """`command` with `args` (shell-quoted), in the form the user ran this program with."""
    return Hint(command, *args).render(prefix_of)
