"""`torchassistant serve`: an inference pipeline's predictions over HTTP (FastAPI on uvicorn).

    POST /predict   {"inputs": [example, ...]} or {"input": example} as JSON, or multipart/form-data
                    uploads (field "file", repeated for several examples; "input_1", "input_2", ... when
                    the spec has several inputs_meta entries) -> {"predictions": [...]}, each what
                    `infer --json` prints for that example
    GET /health     {"status": "ok"} and counts: requests in flight and answered, batches (by size), examples
    GET /metadata   session, pipeline, checkpoint, device, precision, the inputs and their kinds, limits
    GET /docs       the OpenAPI documentation (the schema at /openapi.json)

The model is loaded once, before the server listens. One thread, the batcher, runs all user code
(input converters, collator, models, post-processor) on what the requests bring: it takes the first
waiting request, then any others that arrive within --max-wait-ms, up to --max-batch examples, and
runs them as one batch in inference mode on the session's device and precision (what infer does,
through the same `Inference`); each request is answered with its own examples' results. A request
whose inputs fail is answered with its error and the rest of its batch is run without it.

Paths: the server never opens a file a client names. An input converter that opens its input as a
file (the tutorial's takes an image path) is a "file" input: it takes uploads only, each written to
a temporary file whose path the converter gets; a JSON string for it is refused unread. Which
converters open files is found at start, by giving each an empty temporary file and watching (a
Python audit hook) whether it is opened. Other converters get the JSON values as they are, and
while their batch runs, opening any path equal to a value a client sent is refused.

Answers to bad requests are JSON, {"error": message}: 400 a malformed request or a wrong field, 404
and 405 an unknown route or method, 413 a body over --max-body, 415 a content type other than JSON
and multipart, 422 user code failing on the request's inputs (its message, as infer prints it); 500
is a fault of the server itself, whose traceback goes to the server's stderr.

SIGTERM or Ctrl+C: no new connections are taken, the requests in flight are answered (their batches
run), then the command exits 0.
"""
import asyncio
import collections
import concurrent.futures
import contextlib
import importlib.util
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass

from torchassistant import version
from torchassistant.assembly.inference import Example
from torchassistant.core import errors
from torchassistant.core.errors import UsageError

DEFAULT_MAX_BODY = 16 * 2 ** 20
GRACEFUL_SECONDS = 30          # the longest SIGTERM waits for requests in flight


@dataclass
class Settings:
    host: str = '127.0.0.1'
    port: int = 8000
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_body: int = DEFAULT_MAX_BODY

    def check(self):
        problems = [f'--{name} must be {rule}, not {value!r}' for name, value, rule, ok in (
            ('port', self.port, 'a port number from 0 to 65535', 0 <= self.port <= 65535),
            ('max-batch', self.max_batch, 'at least 1', self.max_batch >= 1),
            ('max-wait-ms', self.max_wait_ms, 'at least 0', self.max_wait_ms >= 0),
            ('max-body', self.max_body, 'at least 1 byte', self.max_body >= 1)) if not ok]
        if problems:
            raise UsageError('; '.join(problems))


def check_installed():
    missing = [package for module, package in (('fastapi', 'fastapi'), ('uvicorn', 'uvicorn'),
                                               ('python_multipart', 'python-multipart'))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(f'serve needs {", ".join(missing)}, which is not installed: pip install "torchassistant[serve]"')


class Problem(Exception):
    """A request the server answers with `status` and {"error": message}."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


# ---- which paths user code may open ---------------------------------------------------------------

class _Guard:
    """Python's "open" audit events (every open() and os.open() of the process) seen per thread: a path
    being watched is noted; a forbidden one is refused with PermissionError. The hook is installed once
    and cannot be removed (Python has no way to); outside `watching` and `forbidding` it returns at once."""
    _local = threading.local()
    _installed = False

    @classmethod
    def install(cls):
        if not cls._installed:
            sys.addaudithook(cls._hook)
            cls._installed = True

    @staticmethod
    def _hook(event, args):
        if event != 'open':
            return
        local = _Guard._local
        watched, forbidden = getattr(local, 'watched', None), getattr(local, 'forbidden', None)
        if (watched is None and not forbidden) or getattr(local, 'busy', False) or \
                not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        local.busy = True
        try:
            path = _canonical(args[0])
        finally:
            local.busy = False
        if watched is not None and path == watched[0]:
            watched[1] = True
        if forbidden and path in forbidden:
            raise PermissionError(f'the server does not open paths that a client names ({os.fsdecode(args[0])})')

    @classmethod
    @contextlib.contextmanager
    def watching(cls, path):
        """A list [path, opened?]: whether the block opened `path` in this thread."""
        cls.install()
        seen = [_canonical(path), False]
        cls._local.watched = seen
        try:
            yield seen
        finally:
            cls._local.watched = None

    @classmethod
    @contextlib.contextmanager
    def forbidding(cls, values):
        """While the block runs in this thread, no file whose path is one of the strings in `values` opens."""
        cls.install()
        cls._local.forbidden = {_canonical(v) for v in _strings(values) if 0 < len(v) < 4096 and '\0' not in v}
        try:
            yield
        finally:
            cls._local.forbidden = None


def _canonical(path):
    try:
        return os.path.realpath(os.fsdecode(path))
    except (ValueError, OSError):
        return os.fsdecode(path)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def input_kinds(runner):
    """"file" or "value" per inputs_meta entry: whether its converter opens an empty file it is given."""
    kinds = []
    folder = tempfile.mkdtemp(prefix='ta-serve-probe-')
    try:
        for index, converter in enumerate(runner.converters):
            probe = os.path.join(folder, f'probe_{index}.bin')
            open(probe, 'wb').close()
            with _Guard.watching(probe) as seen, contextlib.redirect_stdout(sys.stderr):
                try:
                    converter(probe)
                except Exception:      # an empty file is no valid input; whether it was opened is the answer
                    pass
            kinds.append('file' if seen[1] else 'value')
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return kinds


# ---- batching -------------------------------------------------------------------------------------

class _Received(Example):
    """An example from a request: the inputs its converters get, and what its answer shows as "input"
    (an upload's file name instead of the temporary file)."""

    def __init__(self, inputs, shown=None, where=None):
        super().__init__(inputs, where)
        self._shown = shown

    def shown(self):
        return super().shown() if self._shown is None else self._shown


class _Job:
    def __init__(self, examples, values):
        self.examples, self.values = examples, values       # values: what the client sent, never opened
        self.converted = None
        self.future = concurrent.futures.Future()


_STOP = object()


class Batcher:
    """The thread that runs every request's examples: see the module's docstring."""

    def __init__(self, runner, max_batch, max_wait_ms):
        self.runner, self.max_batch, self.max_wait = runner, max_batch, max_wait_ms / 1000
        self.queue = queue.Queue()
        self.batches = self.examples = 0
        self.sizes = collections.Counter()       # batch size -> how many batches of it ran
        self.thread = threading.Thread(target=self._loop, name='torchassistant-batcher', daemon=True)
        self.thread.start()

    def submit(self, examples, values):
        job = _Job(examples, values)
        self.queue.put(job)
        return job.future

    def stop(self):
        """Run what is queued, then end the thread."""
        self.queue.put(_STOP)
        self.thread.join()

    def _loop(self):
        waiting = None
        while True:
            job = waiting if waiting is not None else self.queue.get()
            waiting = None
            if job is _STOP:
                return
            jobs, count = [job], len(job.examples)
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    more = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP or count + len(more.examples) > self.max_batch:
                    waiting = more
                    break
                jobs.append(more)
                count += len(more.examples)
            self._run(jobs)

    def _run(self, jobs):
        ready = []
        for job in jobs:
            try:
                with _Guard.forbidding(job.values), contextlib.redirect_stdout(sys.stderr):
                    job.converted = self.runner.convert(job.examples)
                ready.append(job)
            except Exception as e:
                job.future.set_exception(e)
        if ready:
            self._predict(ready)

    def _predict(self, jobs):
        """Run the jobs as one batch (a job larger than max_batch alone, in chunks); a failure is retried
        job by job, so that it is answered to the request that caused it only."""
        examples = [example for job in jobs for example in job.examples]
        converted = [elements for job in jobs for elements in job.converted]
        try:
            answers = []
            with _Guard.forbidding([job.values for job in jobs]), contextlib.redirect_stdout(sys.stderr):
                for start in range(0, len(examples), self.max_batch):
                    part = slice(start, start + self.max_batch)
                    results = self.runner.predict_converted(examples[part], converted[part])
                    answers += self.runner.json_objects(examples[part], results)
                    self.batches += 1
                    self.sizes[len(examples[part])] += 1
        except Exception as e:
            if len(jobs) > 1:
                for job in jobs:
                    self._predict([job])
            else:
                jobs[0].future.set_exception(e)
            return
        self.examples += len(examples)
        start = 0
        for job in jobs:
            job.future.set_result(answers[start:start + len(job.examples)])
            start += len(job.examples)


# ---- the served pipeline ------------------------------------------------------------------------------

class Served:
    """The pipeline as the server sees it: the Inference, its inputs' kinds and fields, the batcher."""

    def __init__(self, runner, about, settings):
        self.runner, self.about, self.settings = runner, about, settings
        self.kinds = input_kinds(runner)
        count = len(self.kinds)
        self.fields = ['file'] if count == 1 else [f'input_{i + 1}' for i in range(count)]
        self.in_flight = self.answered = 0
        self.batcher = self.uploads = None
        self.counter = itertools.count()

    def start(self):
        """The batcher thread, and the folder for uploads (in memory, /dev/shm, where there is one)."""
        memory = '/dev/shm' if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK) else None
        self.uploads = tempfile.mkdtemp(prefix='ta-serve-', dir=memory)
        self.batcher = Batcher(self.runner, self.settings.max_batch, self.settings.max_wait_ms)

    def stop(self):
        if self.batcher is not None:
            self.batcher.stop()
        if self.uploads is not None:
            shutil.rmtree(self.uploads, ignore_errors=True)

    def metadata(self):
        inputs = [{'field': field, 'kind': kind, 'port': port,
                   'converter': _described(converter),
                   'send': 'a multipart/form-data upload (the server never opens a path a client names)'
                   if kind == 'file' else 'a JSON value, or a multipart/form-data text field'}
                  for field, kind, port, converter in zip(self.fields, self.kinds, self.runner.ports,
                                                          self.runner.converters)]
        return {**self.about, 'inputs': inputs, 'results': list(self.runner.names),
                'post_processor': _described(self.runner.post) if self.runner.post is not None else None,
                'max_batch': self.settings.max_batch, 'max_wait_ms': self.settings.max_wait_ms,
                'max_body': self.settings.max_body, 'torchassistant': version}

    # ---- requests -> examples ------------------------------------------------------------------
    def from_json(self, payload):
        """(examples, the values the client sent) of a JSON body."""
        if not isinstance(payload, dict):
            raise Problem(400, f'the body must be a JSON object, {{"inputs": [example, ...]}} or {{"input": '
                               f'example}}; it is {_json_type(payload)}')
        unknown = sorted(set(payload) - {'inputs', 'input'})
        if unknown:
            raise Problem(400, f'unknown field{"s" if len(unknown) > 1 else ""} {", ".join(map(json.dumps, unknown))}; '
                               f'the body has "inputs" (a list of examples) or "input" (one example)')
        if ('inputs' in payload) == ('input' in payload):
            raise Problem(400, 'give either "inputs" (a list of examples) or "input" (one example)')
        values = payload['inputs'] if 'inputs' in payload else [payload['input']]
        if not isinstance(values, list) or not values:
            raise Problem(400, f'"inputs" must be a non-empty list of examples; it is {_json_type(values)}')
        examples = []
        for number, value in enumerate(values):
            where = f'"inputs"[{number}]' if 'inputs' in payload else '"input"'
            parts = [value] if len(self.kinds) == 1 else value
            if len(self.kinds) > 1 and (not isinstance(value, list) or len(value) != len(self.kinds)):
                raise Problem(400, f'{where}: the pipeline takes {len(self.kinds)} inputs per example '
                                   f'({", ".join(self.fields)}), so each example is a list of {len(self.kinds)} '
                                   f'values; this one is {_json_type(value)}')
            for field, kind, part in zip(self.fields, self.kinds, parts):
                if kind == 'file':
                    raise Problem(400, f'{where}: input "{field}" is a file (its input converter opens what it '
                                       f'is given as a file): upload it as multipart/form-data field "{field}". '
                                       f'The server never opens a path a client names; nothing was read')
                if part is None:
                    raise Problem(400, f'{where}: input "{field}" is null; give a value')
            examples.append(_Received(list(parts)))
        return examples, values

    def from_form(self, parts, written):
        """(examples, the text values) of a multipart form's parts; the uploads' temporary files are added to
        `written`."""
        names = list(dict.fromkeys(part.name for part in parts))
        accepted = set(self.fields) | ({'input_1'} if len(self.fields) == 1 else set())
        unknown = [name for name in names if name not in accepted]
        if unknown:
            raise Problem(400, f'unknown form field{"s" if len(unknown) > 1 else ""} '
                               f'{", ".join(map(json.dumps, unknown))}; the fields are: '
                               f'{", ".join(map(json.dumps, self.fields))}')
        columns = []
        for field in self.fields:
            items = [part for part in parts if part.name == field or (field == 'file' and part.name == 'input_1')]
            if not items:
                raise Problem(400, f'form field "{field}" is missing (one per example; the fields are: '
                                   f'{", ".join(map(json.dumps, self.fields))})')
            columns.append(items)
        if len({len(items) for items in columns}) > 1:
            raise Problem(400, 'the form fields ' + ', '.join(f'"{f}" ({len(c)})' for f, c in zip(self.fields, columns))
                          + ' must each be given once per example')
        examples, values = [], []
        for number in range(len(columns[0])):
            inputs, shown = [], []
            for index, (field, kind) in enumerate(zip(self.fields, self.kinds)):
                item = columns[index][number]
                if kind == 'file':
                    if item.filename is None:
                        raise Problem(400, f'form field "{field}" must be a file upload, not text: its input '
                                           f'converter opens what it is given as a file, and the server never opens '
                                           f'a path a client names; nothing was read')
                    path = os.path.join(self.uploads, f'{next(self.counter)}{_suffix(item.filename)}')
                    written.append(path)
                    with open(path, 'xb') as f:
                        f.write(item.data)
                    inputs.append(path)
                    shown.append(item.filename or field)
                else:
                    text = _text(field, item)
                    inputs.append(text)
                    shown.append(text)
                    values.append(text)
            uploads = [f'"{name}"' for name, kind in zip(shown, self.kinds) if kind == 'file']
            examples.append(_Received(inputs, shown[0] if len(shown) == 1 else shown,
                                      f'upload {", ".join(uploads)}' if uploads else None))
        return examples, values

    async def predict(self, examples, values):
        self.in_flight += 1
        try:
            answers = await asyncio.wrap_future(self.batcher.submit(examples, values))
        except errors.UsageError as e:
            raise Problem(400, e.message) from e
        except errors.TorchAssistantError as e:
            raise Problem(422, e.message) from e
        finally:
            self.in_flight -= 1
        self.answered += 1
        return answers


def _described(obj):
    return f'{type(obj).__module__}.{type(obj).__qualname__}'


def _json_type(value):
    return {dict: 'an object', list: 'a list' if value else 'an empty list', str: 'a string', bool: 'a boolean',
            type(None): 'null'}.get(type(value), 'a number')


def _suffix(filename):
    extension = os.path.splitext(os.path.basename(filename or ''))[1]
    return extension if re.fullmatch(r'\.[A-Za-z0-9]{1,10}', extension) else ''


def _text(field, part):
    if part.filename is None:
        try:
            return part.data.decode(part.charset)
        except (UnicodeDecodeError, LookupError):
            raise Problem(400, f'form field "{field}" is not text in its charset ({part.charset})') from None
    try:
        return part.data.decode('utf-8')
    except UnicodeDecodeError:
        raise Problem(400, f'form field "{field}" takes text (its input converter takes values, not files), and '
                           f'the upload "{part.filename}" is not UTF-8 text') from None


# ---- the HTTP application ---------------------------------------------------------------------------

def create_app(served: "Served"):
    """The FastAPI application answering for `served` (started and stopped with the app's lifespan)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel
    from starlette.exceptions import HTTPException

    class Predictions(BaseModel):
        predictions: list

    class Error(BaseModel):
        error: str

    @contextlib.asynccontextmanager
    async def lifespan(app):
        served.start()
        try:
            yield
        finally:
            served.stop()

    about = served.about
    app = FastAPI(title='TorchAssistant serve', version=version, lifespan=lifespan,
                  description=f'Predictions of pipeline "{about["pipeline"]}" of session "{about["session"]}" '
                              f'(epoch {about["epoch"]}): POST /predict answers what `torchassistant infer --json` '
                              f'prints for the same inputs.')

    def problem(status, message):
        return JSONResponse({'error': message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        return problem(400, '; '.join(str(e.get('msg', e)) for e in exc.errors()) or 'invalid request')

    @app.get('/health', summary='Whether the server answers')
    async def health():
        batcher = served.batcher
        return {'status': 'ok', 'in_flight': served.in_flight, 'answered': served.answered,
                'batches': batcher.batches if batcher else 0, 'examples': batcher.examples if batcher else 0,
                'batch_sizes': {str(size): count for size, count in sorted(batcher.sizes.items())} if batcher else {}}

    @app.get('/metadata', summary='What is served: session, pipeline, checkpoint, device, inputs, limits')
    async def metadata():
        return served.metadata()

    errors_shown: dict = {status: {'model': Error, 'description': text} for status, text in (
        (400, 'a malformed request, a wrong field, or a path where a file upload is expected'),
        (413, 'the body is larger than --max-body'), (415, 'neither JSON nor multipart/form-data'),
        (422, 'user code (a converter, the collator, a model, the post-processor) failed on the inputs'))}

    @app.post('/predict', summary='Predictions for one example or several', response_model=Predictions,
              responses=errors_shown, openapi_extra={'requestBody': _request_schema(served)})
    async def predict(request: Request):
        status, payload = await answer(served, request.scope, request.receive)
        return JSONResponse(payload, status_code=status)

    return _Predict(app, served)


class _Predict:
    """The ASGI application served: POST /predict answered here, directly (FastAPI's middleware, routing
    and dependency code cost more per request than the tutorial model's forward pass on a batch); every
    other request goes to the FastAPI `app`, which also documents /predict, with the same `answer`."""

    def __init__(self, app, served):
        self.app, self.served = app, served

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http' or scope['path'] != '/predict' or scope['method'] != 'POST':
            return await self.app(scope, receive, send)
        try:
            status, payload = await answer(self.served, scope, receive)
        except _Disconnected:
            return
        except Exception:
            traceback.print_exc()
            status, payload = 500, {'error': 'the server failed (a bug in torchassistant serve; its log has the traceback)'}
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(',', ':')).encode()   # as JSONResponse
        await send({'type': 'http.response.start', 'status': status,
                    'headers': [(b'content-type', b'application/json'), (b'content-length', str(len(body)).encode())]})
        await send({'type': 'http.response.body', 'body': body})


class _Disconnected(Exception):
    """The client went away before its request's body came."""


async def answer(served, scope, receive):
    """(status, JSON payload) for a POST /predict request: {"predictions": [...]} or {"error": message}."""
    written: list = []
    headers = {name.decode('latin-1'): value.decode('latin-1') for name, value in scope['headers']}
    try:
        body = await _read_body(headers.get('content-length'), receive, served.settings.max_body)
        content_type = headers.get('content-type', '')
        kind = content_type.split(';')[0].strip().lower()
        if kind == 'application/json' or (kind.startswith('application/') and kind.endswith('+json')):
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as e:
                raise Problem(400, f'the body is not valid JSON: {e}') from None
            examples, values = served.from_json(payload)
        elif kind == 'multipart/form-data':
            examples, values = served.from_form(_parts(content_type, body), written)
        else:
            raise Problem(415, f'the body must be application/json or multipart/form-data, not '
                               f'{json.dumps(kind or "(no content type)")}')
        return 200, {'predictions': await served.predict(examples, values)}
    except Problem as e:
        return e.status, {'error': e.message}
    finally:
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)


async def _read_body(declared, receive, limit):
    if declared is not None:
        if not declared.strip().isdigit():
            raise Problem(400, f'Content-Length {declared!r} is not a number')
        if int(declared) > limit:
            raise Problem(413, f'the body ({int(declared)} bytes) is larger than the server takes (--max-body {limit})')
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message['type'] == 'http.disconnect':
            raise _Disconnected
        chunk = message.get('body', b'')
        size += len(chunk)
        if size > limit:
            raise Problem(413, f'the body is larger than the server takes (--max-body {limit} bytes)')
        chunks.append(chunk)
        more = message.get('more_body', False)
    return b''.join(chunks)


@dataclass
class _Part:
    """One part of a multipart/form-data body: its field name, its file name (None for a text field), its bytes."""
    name: str
    filename: "str | None"
    data: bytes
    charset: str = 'utf-8'


MAX_PARTS = 10000


def _parts(content_type, body):
    """The parts of a multipart/form-data `body` (already read, within the limit), parsed by python-multipart."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

    def broken(detail):
        return Problem(400, f'the multipart/form-data body cannot be read: {detail}')

    options = parse_options_header(content_type)[1]
    boundary = options.get(b'boundary')
    if not boundary:
        raise broken('its Content-Type has no boundary')
    parts = []
    chunks = []
    header = {}
    field = [b'', b'']

    def on_header_field(data, start, end):
        field[0] += data[start:end]

    def on_header_value(data, start, end):
        field[1] += data[start:end]

    def on_header_end():
        header[field[0].decode('latin-1').lower()] = field[1]
        field[0] = field[1] = b''

    def on_part_data(data, start, end):
        chunks.append(data[start:end])

    def on_part_end():
        disposition, params = parse_options_header(header.get('content-disposition', b''))
        if disposition != b'form-data' or b'name' not in params:
            raise broken('a part has no Content-Disposition: form-data; name="..." header')
        if len(parts) >= MAX_PARTS:
            raise broken(f'it has more than {MAX_PARTS} parts')
        charset = parse_options_header(header.get('content-type', b''))[1].get(b'charset', b'utf-8')
        filename = params.get(b'filename')
        parts.append(_Part(params[b'name'].decode('utf-8', 'replace'),
                           None if filename is None else filename.decode('utf-8', 'replace'),
                           b''.join(chunks), charset.decode('latin-1')))
        chunks.clear()
        header.clear()

    parser = MultipartParser(boundary, {'on_header_field': on_header_field, 'on_header_value': on_header_value,
                                        'on_header_end': on_header_end, 'on_part_data': on_part_data,
                                        'on_part_end': on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise broken(str(e) or type(e).__name__) from None
    if parser.state != MultipartState.END:
        raise broken(f'it ends before its closing boundary (--{boundary.decode("latin-1")}--)')
    return parts


def _request_schema(served):
    """The OpenAPI requestBody of POST /predict: JSON values or multipart fields, as the inputs' kinds allow."""
    values = [field for field, kind in zip(served.fields, served.kinds) if kind == 'value']
    example = {} if len(served.kinds) == 1 else {'type': 'array', 'minItems': len(served.kinds),
                                                 'maxItems': len(served.kinds)}
    form = {field: {'type': 'array', 'items': {'type': 'string', 'format': 'binary'} if kind == 'file'
                    else {'type': 'string'}} for field, kind in zip(served.fields, served.kinds)}
    json_note = ('examples as JSON values' if len(values) == len(served.kinds) else
                 'inputs that are files must be uploads (multipart/form-data); a JSON string for them is refused')
    return {'required': True, 'content': {
        'application/json': {'schema': {'type': 'object', 'additionalProperties': False, 'description': json_note,
                                        'properties': {'inputs': {'type': 'array', 'minItems': 1, 'items': example},
                                                       'input': example}}},
        'multipart/form-data': {'schema': {'type': 'object', 'properties': form}}}}


# ---- running ------------------------------------------------------------------------------------------

def serve(runner, about, settings, stream=None):
    """Serve `runner` (an assembly.inference.Inference, weights loaded) until SIGTERM or SIGINT; `about`:
    session, pipeline, epoch, checkpoint, device, precision (for /metadata). Returns the number of
    requests answered."""
    check_installed()
    import uvicorn

    stream = stream or sys.stdout
    served = Served(runner, about, settings)
    sock = _listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f'[{host}]' if ':' in host else host
    inputs = ', '.join(f'{field} ({kind})' for field, kind in zip(served.fields, served.kinds))

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if not self.should_exit:
                print(f'Serving pipeline "{about["pipeline"]}" of session "{about["session"]}" (epoch {about["epoch"]}, '
                      f'{about["checkpoint"]} checkpoint) on {about["device"]} at http://{shown}:{port}\n'
                      f'  POST /predict (inputs: {inputs}), GET /health, GET /metadata, docs at /docs; '
                      f'batches of up to {settings.max_batch} examples, waiting up to {settings.max_wait_ms:g} ms. '
                      f'SIGTERM or Ctrl+C stops it.', file=stream, flush=True)

    config = uvicorn.Config(create_app(served), log_level='warning', access_log=False, lifespan='on',
                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
    server = Server(config)
    received = []
    previous = {sig: signal.signal(sig, lambda number, frame: received.append(number))      # uvicorn raises the
                for sig in (signal.SIGINT, signal.SIGTERM)}                                # signal again at the end
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    why = f' by {signal.Signals(received[0]).name}' if received else ''
    batcher = served.batcher
    left = 'none was left unanswered' if not served.in_flight else \
        f'{served.in_flight} still in flight after {GRACEFUL_SECONDS} s were cancelled'
    print(f'Stopped{why}: {served.answered} prediction request(s) answered, {batcher.examples if batcher else 0} '
          f'example(s) in {batcher.batches if batcher else 0} batch(es); {left}', file=stream, flush=True)
    return served.answered


def _listen(host, port):
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)[0]
    except socket.gaierror as e:
        raise UsageError(f'--host {host}: not an address this machine can listen on ({e.strerror})') from None
    # proto IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they are TCP,
    # and with it on, a response's body waits for the client's delayed ACK of its headers (40 ms)
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f'cannot listen on {host}:{port}: {e.strerror}') from None
    sock.set_inheritable(True)
    return sock
