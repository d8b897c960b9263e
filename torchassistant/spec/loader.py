"""Load a JSON or YAML spec and remember where every value came from.

`json` from the standard library gives no positions, so JSON goes through a small recursive-descent
parser (strings and numbers are delegated to `json`'s own scanners); YAML (`.yaml`/`.yml`) through
PyYAML's safe composer, whose nodes carry marks. Either way the result is a `Document`: plain JSON data
plus a table from path (a tuple of keys and indices) to (line, column).
"""
import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Optional

from torchassistant.core.errors import SpecError

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
    document: Optional['Document'] = None

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


YAML_SUFFIXES = ('.yaml', '.yml')


def load_file(path):
    """Read and parse a spec file (YAML when it ends in .yaml/.yml, else JSON); raise SpecError with
    line:column on any syntax error."""
    try:
        with open(path, encoding='utf-8-sig') as f:   # -sig: a byte order mark is not JSON
            text = f.read()
    except UnicodeDecodeError as e:
        raise SpecError(path, [f'{path}: not a UTF-8 text file ({e.reason} at byte {e.start})']) from None
    if str(path).lower().endswith(YAML_SUFFIXES):
        return parse_yaml(text, str(path))
    return parse(text, str(path))


def parse(text, source='<spec>'):
    """A JSON spec's text as a Document."""
    parser = _Parser(text, source)
    try:
        return Document(parser.parse_document(), source, text, parser.positions)
    except _SyntaxError as e:
        raise SpecError(source, [parser.describe_error(e.pos, e.message)]) from None


def parse_json_value(text):
    """One JSON value (a `--set` VALUE); ValueError('message at character N') when `text` is not one."""
    parser = _Parser(text, '')
    try:
        return parser.parse_document()
    except _SyntaxError as e:
        message = e.message.replace('the file', 'the value')
        raise ValueError(f'{message} (at character {min(e.pos, len(text)) + 1})') from None


def describe_syntax_error(text, source, line, column, message):
    """'file:line:column: message', then the line itself and a caret under the column."""
    lines = text.split('\n')
    shown = lines[line - 1].rstrip('\r') if 0 < line <= len(lines) else ''
    shown = ''.join(c if c.isprintable() or c == '\t' else ' ' for c in shown)
    cut = max(0, column - 1 - _SHOWN // 2) if len(shown) > _SHOWN else 0
    excerpt = ('...' if cut else '') + shown[cut:cut + _SHOWN] + ('...' if len(shown) > cut + _SHOWN else '')
    caret = ('   ' if cut else '') + ''.join(c if c == '\t' else ' ' for c in shown[cut:column - 1])
    return f'{source}:{line}:{column}: {message}\n      {excerpt}\n      {caret}^'


def number_value(number):
    """The int or float a JSON number's text means; ValueError when it is too large or too long."""
    if any(c in number for c in '.eE'):
        value = float(number)
        if value in (float('inf'), float('-inf')):
            raise ValueError(f'the number {number} is too large')
        return value
    if len(number.lstrip('-')) > _MAX_DIGITS:
        raise ValueError(f'the number {number[:20]}... has {len(number)} digits; at most {_MAX_DIGITS} are allowed')
    return int(number)


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
        pos = self._skip(0)
        if pos == len(self.text):
            raise _SyntaxError(pos, 'the file is empty; a spec is a JSON object such as {"session_dir": ...}')
        value, pos = self._value(pos, ())
        pos = self._skip(pos)
        if pos != len(self.text):
            raise _SyntaxError(pos, 'unexpected text after the end of the JSON value')
        return value

    def describe_error(self, pos, message):
        """'file:line:column: invalid JSON: message' with the line and a caret. An error at the end of
        the file points just after its last visible character."""
        if pos >= len(self.text):
            pos = len(self.text.rstrip())
        line, column = self.line_column(pos)
        return describe_syntax_error(self.text, self.source, line, column, 'invalid JSON: ' + message)

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
        try:
            return number_value(number)
        except ValueError as e:
            raise _SyntaxError(pos, str(e)) from None

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


# ---- YAML ----------------------------------------------------------------------------------------

_YAML = 'tag:yaml.org,2002:'
_YAML_SCALARS = {_YAML + t for t in ('str', 'int', 'float', 'bool', 'null')}
_JSON_NUMBER_TAG = 'tag:torchassistant,2024:json-number'
_MAX_VALUES = 1_000_000   # aliases may repeat a value; this keeps "billion laughs" out


def parse_yaml(text, source='<spec>'):
    """A YAML spec's text as a Document holding the same data a JSON spec would.

    Values are read as PyYAML's safe loader reads them (YAML 1.1: `yes`/`no` are true/false), and
    every plain scalar that is a JSON number is a number (`1e-4`, which YAML 1.1 leaves a string).
    Anchors and aliases work (an alias is a copy, located at its anchor); dates stay text; keys are
    strings as written (`1:` is the key "1"). Refused, at their line: duplicate keys, merge keys
    (`<<`), tags other than the JSON-like ones (!!str, !!int, !!float, !!bool, !!null, !!map, !!seq),
    .inf and .nan, and several documents in one file.
    """
    try:
        return _parse_yaml(text, source)
    except _YamlError as e:
        line, column = e.where
        raise SpecError(source, [describe_syntax_error(text, source, line, column, e.message)]) from None


def _parse_yaml(text, source):
    import yaml
    try:
        loader = _yaml_loader_class()(text)
    except yaml.reader.ReaderError as e:
        character = chr(e.character) if isinstance(e.character, int) else e.character
        raise _YamlError(None, f'invalid YAML: the character {character!r} cannot appear in a YAML file',
                         _line_column(text, e.position)) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise _YamlError(None, 'the file is empty; a spec is a mapping such as "session_dir: ..."', (1, 1))
        builder = _YamlBuilder(loader)
        return Document(builder.value(node, ()), source, text, builder.positions)
    except yaml.MarkedYAMLError as e:
        raise _YamlError(e.problem_mark or e.context_mark, _yaml_problem(e)) from None
    except RecursionError:
        raise _YamlError(None, f'lists and mappings are nested more than {_MAX_DEPTH} levels deep', (1, 1)) from None
    finally:
        loader.dispose()


def _line_column(text, index):
    return text.count('\n', 0, index) + 1, index - (text.rfind('\n', 0, index) + 1) + 1


def _yaml_problem(error):
    """'invalid YAML: <problem> (<context> at line L, column C)', with a hint for tabs."""
    message = f'invalid YAML: {error.problem or error.context}'
    if error.context and error.problem and error.context_mark:
        mark = error.context_mark
        message += f' ({error.context} at line {mark.line + 1}, column {mark.column + 1})'
    if '\\t' in message:
        message += '; YAML indents with spaces, not tabs'
    return message


class _YamlError(Exception):
    def __init__(self, mark, message, where=None):
        self.where = where or (mark.line + 1, mark.column + 1)
        self.message = message


@functools.lru_cache(maxsize=None)
def _yaml_loader_class():
    """SafeLoader plus one implicit resolver: a plain scalar that is a JSON number (and that YAML 1.1
    takes for a string, such as 1e-4) is tagged as a number. Built once, when YAML is first read."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(_JSON_NUMBER_TAG, re.compile('^' + _NUMBER.pattern + '$'), list('-0123456789'))
    return Loader


class _YamlBuilder:
    """Composed YAML nodes -> plain JSON data, recording each value's (line, column)."""

    def __init__(self, loader):
        self.loader = loader
        self.positions = {}
        self.open = set()       # ids of the collections being built: an alias inside itself is a cycle
        self.count = 0

    def value(self, node, path):
        import yaml
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.count += 1
        if self.count > _MAX_VALUES:
            raise _YamlError(node.start_mark, f'aliases expand this file to more than {_MAX_VALUES} values')
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if len(path) >= _MAX_DEPTH:
            raise _YamlError(node.start_mark, f'lists and mappings are nested more than {_MAX_DEPTH} levels deep')
        if id(node) in self.open:
            raise _YamlError(node.start_mark, 'an alias refers to the value it is inside of (a cycle)')
        expected = _YAML + ('map' if isinstance(node, yaml.MappingNode) else 'seq')
        if node.tag != expected:
            raise _YamlError(node.start_mark, self.refused(node.tag))
        self.open.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            result = [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        else:
            result = {}
            for key_node, value_node in node.value:
                key = self.key(key_node)
                if key in result:
                    raise _YamlError(key_node.start_mark, f'duplicate key "{key}" in the same mapping')
                result[key] = self.value(value_node, path + (key,))
        self.open.discard(id(node))
        return result

    def key(self, node):
        import yaml
        if node.tag == _YAML + 'merge':
            raise _YamlError(node.start_mark, 'merge keys (<<) are not supported: write the keys out, or put '
                                              'an anchor (&name) on a whole value and repeat it with *name')
        if not isinstance(node, yaml.ScalarNode):
            raise _YamlError(node.start_mark, 'a key must be a string, not a list or a mapping')
        if node.tag not in _YAML_SCALARS | {_JSON_NUMBER_TAG, _YAML + 'timestamp'}:
            raise _YamlError(node.start_mark, self.refused(node.tag))
        return node.value

    def scalar(self, node):
        if node.tag == _JSON_NUMBER_TAG:
            try:
                return number_value(node.value)
            except ValueError as e:
                raise _YamlError(node.start_mark, str(e)) from None
        if node.tag == _YAML + 'timestamp':
            return node.value                 # JSON has no dates: the text as written
        if node.tag not in _YAML_SCALARS:
            raise _YamlError(node.start_mark, self.refused(node.tag))
        try:
            value = self.loader.construct_object(node)
        except Exception as e:               # !!int abc, !!bool maybe, 5000 digits
            shown = node.value if len(node.value) <= 40 else node.value[:20] + '...'
            raise _YamlError(node.start_mark, f'"{shown}" is not a valid {node.tag.rsplit(":", 1)[-1]}'
                                              f' ({type(e).__name__}: {e})') from None
        if isinstance(value, float) and not math.isfinite(value):
            raise _YamlError(node.start_mark, f'{node.value} is not a number a spec can hold (JSON has no '
                                              'infinities or NaN)')
        return value

    @staticmethod
    def refused(tag):
        shown = '!!' + tag[len(_YAML):] if tag.startswith(_YAML) else tag
        return f'the tag {shown} is not allowed: a spec holds only mappings, lists, strings, numbers, ' \
               'true/false and null'
