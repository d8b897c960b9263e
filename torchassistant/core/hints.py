"""A command the user can run next, kept as data until it is shown.

A lower layer knows *which* command to suggest (`Hint("train", path)`); only the command-line layer
knows how the user runs TorchAssistant (`torchassistant train ...` or `python train.py ...`), so it
renders the hint with its own `prefix_of`. Arguments are shell-quoted, so a hint can be pasted.
"""
import shlex


def console_prefix(command):
    return f'torchassistant {command}'


class Hint:
    def __init__(self, command, *args):
        self.command = command
        self.args = tuple(str(a) for a in args)

    def render(self, prefix_of=None):
        return ' '.join([(prefix_of or console_prefix)(self.command), *map(shlex.quote, self.args)])

    def __str__(self):
        return self.render()

    def __repr__(self):
        return f'Hint({self.command!r}, *{self.args!r})'


def render(parts, prefix_of=None):
    """Text made of strings and Hints, each Hint rendered with `prefix_of`."""
    return ''.join(p.render(prefix_of) if isinstance(p, Hint) else str(p) for p in parts)
