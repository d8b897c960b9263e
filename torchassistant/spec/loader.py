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
_MAX_DEPTH = 100      # far beyond any spec; keeps the recursive parser clear of Python's recursion limit
_MAX_DIGITS = 4000    # int() refuses longer digit strings (sys.get_int_max_str_digits)
_SHOWN = 120          # at most this much of the offending line is shown


@dataclass
class Problem:
    """One thing wrong with a spec, at a path inside it."""
    path: tuple
    message: str
    document: 'Document' = None

    def sort_key(self):
        """File, then line and column: problems come in the order a reader meets them."""
        if not self.document:
            return '', 0, 0, self.message
        return (self.document.source_of(self.path),) + tuple(self.document.position(self.path)) + (self.message,)

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

    def source_of(self, path):
        """The file that holds the value at `path` (a merged document draws on two)."""
        return self.source

    def describe(self, path):
        """'file.json:12:9 initialize.definitions[5] "LeNet5" spec.class'"""
        line, column = self.position(path)
        source = self.source_of(path)
        where = f'{source}:{line}:{column}' if line else source
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
            if isinstance(node, dict) and isinstance(node.get('name'), str) and node['name']:
                out += f' "{node["name"]}"'
        else:
            out += ('.' if out and not out.endswith('"') else ' ' if out else '') + str(key)
            node = node.get(key) if isinstance(node, dict) else None
    return out


def load_file(path):
    """Read and parse a spec file; raise SpecError with line:column on any syntax error."""
    try:
        with open(path, encoding='utf-8-sig') as f:   # -sig: a byte order mark is not JSON
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
            raise SpecError(self.source, [self.describe_error(e.pos, e.message)]) from None

    def describe_error(self, pos, message):
        """'file:line:column: invalid JSON: message', then the line itself and a caret under the column.
        An error at the end of the file points just after its last visible character."""
        if pos >= len(self.text):
            pos = len(self.text.rstrip())
        line, column = self.line_column(pos)
        start = self._line_starts[line - 1]
        end = self.text.find('\n', start)
        shown = self.text[start:end if end >= 0 else len(self.text)].rstrip('\r')
        shown = ''.join(c if c.isprintable() or c == '\t' else ' ' for c in shown)
        cut = max(0, column - 1 - _SHOWN // 2) if len(shown) > _SHOWN else 0
        excerpt = ('...' if cut else '') + shown[cut:cut + _SHOWN] + ('...' if len(shown) > cut + _SHOWN else '')
        caret = ('   ' if cut else '') + ''.join(c if c == '\t' else ' ' for c in shown[cut:column - 1])
        return f'{self.source}:{line}:{column}: invalid JSON: {message}\n      {excerpt}\n      {caret}^'

    def _skip(self, pos):
        pos = _WHITESPACE.match(self.text, pos).end()
        if self.text.startswith(('//', '/*', '#'), pos):
            raise _SyntaxError(pos, 'comments are not allowed in JSON')
        return pos

    def _value(self, pos, path):
        self.positions[path] = self.line_column(pos)
        char = self.text[pos:pos + 1]
        if char in '{[' and len(path) >= _MAX_DEPTH:
            raise _SyntaxError(pos, f'objects and lists are nested more than {_MAX_DEPTH} levels deep')
        if char == '{':
            return self._object(pos + 1, path)
        if char == '[':
            return self._array(pos + 1, path)
        if char == '"':
            return self._string(pos)
        match = _NUMBER.match(self.text, pos)
        if match:
            return self._number(pos, match.group()), match.end()
        for word, value in _LITERALS.items():
            if self.text.startswith(word, pos):
                return value, pos + len(word)
        if char == "'":
            raise _SyntaxError(pos, 'strings must use double quotes (")')
        if not char:
            raise _SyntaxError(pos, 'the file ends before the JSON value is complete (unclosed { or [ ?)')
        raise _SyntaxError(pos, f'expected a value (object, list, string, number, true, false or null), found {char!r}')

    def _number(self, pos, number):
        if any(c in number for c in '.eE'):
            value = float(number)
            if value in (float('inf'), float('-inf')):
                raise _SyntaxError(pos, f'the number {number} is too large')
            return value
        if len(number.lstrip('-')) > _MAX_DIGITS:
            raise _SyntaxError(pos, f'the number {number[:20]}... has {len(number)} digits; '
                                    f'at most {_MAX_DIGITS} are allowed')
        return int(number)

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
            comma, pos = pos - 1, self._skip(pos)     # after the first round, pos - 1 is a comma
            char = self.text[pos:pos + 1]
            if char == '}':
                raise _SyntaxError(comma, 'trailing comma before "}"')
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
            comma, pos = pos - 1, self._skip(pos)     # after the first round, pos - 1 is a comma
            if self.text[pos:pos + 1] == ']':
                raise _SyntaxError(comma, 'trailing comma before "]"')
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
