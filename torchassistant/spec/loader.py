"""Load a JSON spec and remember where every value came from.

`json` from the standard library gives no positions, so this is a small recursive-descent parser
(strings and numbers are delegated to `json`'s own scanners). The result is a `Document`: the plain
Python value plus a table from JSON path (a tuple of keys and indices) to (line, column).
"""
import json
import re
from dataclasses import dataclass, field

from torchassistant.errors import SpecError

_NUMBER = re.compile(r'-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?')
_WHITESPACE = re.compile(r'[ \t\n\r]*')
_LITERALS = {'true': True, 'false': False, 'null': None}


@dataclass
class Problem:
    """One thing wrong with a spec, at a path inside it."""
    path: tuple
    message: str
    document: 'Document' = None

    def sort_key(self):
        line, column = self.document.position(self.path) if self.document else (0, 0)
        return line, column, self.message

    def __str__(self):
        return self.document.describe(self.path) + ': ' + self.message if self.document \
            else format_path(self.path) + ': ' + self.message


@dataclass
class Document:
    """A parsed spec file: `data` is plain JSON data, `positions` maps paths to (line, column)."""
    data: object
    source: str
    text: str = ''
    positions: dict = field(default_factory=dict)

    def position(self, path):
        """(line, column) of the value at `path`, or of its nearest ancestor that exists."""
        path = tuple(path)
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (0, 0))

    def describe(self, path):
        """'file.json:12:9 initialize.definitions[5] "LeNet5" spec.class'"""
        line, column = self.position(path)
        where = f'{self.source}:{line}:{column}' if line else self.source
        text = format_path(path, self.data)
        return f'{where} {text}' if text else where

    def problem(self, path, message):
        return Problem(tuple(path), message, self)


def format_path(path, data=None):
    """Render a JSON path; list items that have a "name" show it, as `definitions[5] "LeNet5"`."""
    out = ''
    node = data
    for key in path:
        if isinstance(key, int):
            out += f'[{key}]'
            node = node[key] if isinstance(node, list) and key < len(node) else None
            if isinstance(node, dict) and isinstance(node.get('name'), str):
                out += f' "{node["name"]}"'
        else:
            out += ('.' if out and not out.endswith('"') else ' ' if out else '') + str(key)
            node = node.get(key) if isinstance(node, dict) else None
    return out


def load_file(path):
    """Read and parse a spec file; raise SpecError with line:column on any syntax error."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise SpecError(path, [f'{path}: not a UTF-8 text file ({e.reason} at byte {e.start})'])
    return parse(text, str(path))


def parse(text, source='<spec>'):
    parser = _Parser(text, source)
    return Document(parser.parse_document(), source, text, parser.positions)


class _SyntaxError(Exception):
    def __init__(self, pos, message):
        self.pos = pos
        self.message = message


class _Parser:
    def __init__(self, text, source):
        self.text = text
        self.source = source
        self.positions = {}
        self._line_starts = [0] + [m.end() for m in re.finditer('\n', text)]

    def line_column(self, pos):
        import bisect
        line = bisect.bisect_right(self._line_starts, pos)
        return line, pos - self._line_starts[line - 1] + 1

    def parse_document(self):
        try:
            pos = self._skip(0)
            if pos == len(self.text):
                raise _SyntaxError(pos, 'the file is empty; a spec is a JSON object such as {"session_dir": ...}')
            value, pos = self._value(pos, ())
            pos = self._skip(pos)
            if pos != len(self.text):
                raise _SyntaxError(pos, 'unexpected text after the end of the JSON value')
            return value
        except _SyntaxError as e:
            line, column = self.line_column(e.pos)
            shown = self.text.splitlines()[line - 1] if self.text.splitlines() else ''
            message = (f'{self.source}:{line}:{column}: invalid JSON: {e.message}\n'
                       f'      {shown}\n      {" " * (column - 1)}^')
            raise SpecError(self.source, [message]) from None

    def _skip(self, pos):
        pos = _WHITESPACE.match(self.text, pos).end()
        if self.text.startswith(('//', '/*'), pos):
            raise _SyntaxError(pos, 'comments are not allowed in JSON')
        return pos

    def _value(self, pos, path):
        self.positions[path] = self.line_column(pos)
        char = self.text[pos:pos + 1]
        if char == '{':
            return self._object(pos + 1, path)
        if char == '[':
            return self._array(pos + 1, path)
        if char == '"':
            return self._string(pos)
        match = _NUMBER.match(self.text, pos)
        if match:
            number = match.group()
            return (float(number) if any(c in number for c in '.eE') else int(number)), match.end()
        for word, value in _LITERALS.items():
            if self.text.startswith(word, pos):
                return value, pos + len(word)
        if char == "'":
            raise _SyntaxError(pos, 'strings must use double quotes (")')
        if not char:
            raise _SyntaxError(pos, 'the file ends before the JSON value is complete (unclosed { or [ ?)')
        raise _SyntaxError(pos, f'expected a value (object, list, string, number, true, false or null), found {char!r}')

    def _string(self, pos):
        try:
            return json.decoder.scanstring(self.text, pos + 1)
        except json.JSONDecodeError as e:
            raise _SyntaxError(e.pos, e.msg.lower()) from None

    def _object(self, pos, path):
        result = {}
        pos = self._skip(pos)
        if self.text[pos:pos + 1] == '}':
            return result, pos + 1
        while True:
            pos = self._skip(pos)
            char = self.text[pos:pos + 1]
            if char == '}':
                raise _SyntaxError(pos, 'trailing comma before "}"')
            if char != '"':
                hint = 'the file ends inside an object (unclosed "{")' if not char else \
                    f'expected a key in double quotes, found {char!r}'
                raise _SyntaxError(pos, hint)
            key_pos = pos
            key, pos = self._string(pos)
            if key in result:
                raise _SyntaxError(key_pos, f'duplicate key "{key}" in the same object')
            pos = self._skip(pos)
            if self.text[pos:pos + 1] != ':':
                raise _SyntaxError(pos, f'expected ":" after the key "{key}"')
            pos = self._skip(pos + 1)
            result[key], pos = self._value(pos, path + (key,))
            pos = self._skip(pos)
            char = self.text[pos:pos + 1]
            if char == ',':
                pos += 1
            elif char == '}':
                return result, pos + 1
            else:
                raise _SyntaxError(pos, 'expected "," or "}" after a value in an object' if char
                                   else 'the file ends inside an object (unclosed "{")')

    def _array(self, pos, path):
        result = []
        pos = self._skip(pos)
        if self.text[pos:pos + 1] == ']':
            return result, pos + 1
        while True:
            pos = self._skip(pos)
            if self.text[pos:pos + 1] == ']':
                raise _SyntaxError(pos, 'trailing comma before "]"')
            value, pos = self._value(pos, path + (len(result),))
            result.append(value)
            pos = self._skip(pos)
            char = self.text[pos:pos + 1]
            if char == ',':
                pos += 1
            elif char == ']':
                return result, pos + 1
            else:
                raise _SyntaxError(pos, 'expected "," or "]" after a value in a list' if char
                                   else 'the file ends inside a list (unclosed "[")')
