"""`torchassistant serve`, started for real in a subprocess on a free 127.0.0.1 port and called over HTTP:
200 requests from 16 threads at once, each answered what `infer --json` prints for its image; ten
kinds of bad request, each a 4xx, the server answering after each; a request naming a server path
reads no file; SIGTERM with requests in flight answers them; schemathesis against the server's own
OpenAPI finds no 5xx. And the pieces under it in-process: the audit-hook guard and input kinds."""
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import forked
import pytest
import torch

from torchassistant.ship import serve

pytestmark = pytest.mark.e2e

MAX_BODY = 200_000


class Server:
    """`torchassistant serve SPEC --port 0 ARGS` in a subprocess; its port, read from what it prints."""

    def __init__(self, shipped, spec, *args):
        env = dict(shipped.env, PYTHONUNBUFFERED='1')
        self.process = forked.Popen([sys.executable, '-m', 'torchassistant', 'serve', spec, '--port', '0', *args],
                                        cwd=shipped.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stdout], daemon=True).start()
        try:
            first = self.lines.get(timeout=120)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f'the server printed nothing in 120 s: {self.process.stderr.read()}') from None
        found = re.search(r' at http://127\.0\.0\.1:(\d+)$', first.strip())
        assert found, first + self.process.stderr.read()
        self.port = int(found.group(1))

    def request(self, method, path, body=None, headers=None, connection=None):
        """(status, JSON answer) of one request (on `connection` when given, else a new one)."""
        own = connection is None
        connection = connection or http.client.HTTPConnection('127.0.0.1', self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        finally:
            if own:
                connection.close()
        return response.status, json.loads(data) if data and data[:1] in b'{[' else data

    def predict_files(self, files, connection=None):
        body, headers = multipart([('file', name, data) for name, data in files])
        return self.request('POST', '/predict', body, headers, connection)

    def predict_json(self, payload, connection=None):
        return self.request('POST', '/predict', json.dumps(payload), {'Content-Type': 'application/json'}, connection)

    def stop(self):
        """SIGTERM; (exit status, what it printed after the first line)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return code, ''.join(rest) + self.process.stdout.read() + self.process.stderr.read()


def multipart(fields):
    """(body, headers) of a multipart/form-data request; fields: (name, file name or None for text, bytes)."""
    boundary = uuid.uuid4().hex
    body = b''
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else '')
        body += f'--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n'.encode() + data + b'\r\n'
    return body + f'--{boundary}--\r\n'.encode(), {'Content-Type': f'multipart/form-data; boundary={boundary}'}


def same(got, want, path='answer'):
    """Assert two answers equal, floats within 1e-5 (y_hat) or 2e-4 (rounded probabilities)."""
    if isinstance(want, float):
        limit = 1e-5 if 'y_hat' in path else 2e-4
        assert isinstance(got, (int, float)) and abs(got - want) <= limit, (path, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (path, got, want)
        for key in want:
            same(got[key], want[key], f'{path}.{key}')
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (a, b) in enumerate(zip(got, want)):
            same(a, b, f'{path}[{i}]')
    else:
        assert got == want, (path, got, want)


def image(shipped, index):
    with open(os.path.join(shipped.root, shipped.images[index]), 'rb') as f:
        return f.read()


@pytest.fixture(scope='module')
def server(shipped):
    """The server of the tutorial session's classify.json (Classification, raw scores kept)."""
    running = Server(shipped, shipped.classify, '--max-body', str(MAX_BODY))
    yield running
    code, printed = running.stop()
    assert code == 0 and 'Stopped by SIGTERM' in printed and 'Traceback' not in printed, printed


def test_200_requests_from_16_threads_are_each_answered_what_infer_json_prints(server, shipped):
    start, failures, lock = threading.Barrier(16), [], threading.Lock()

    def client(number):
        connection = http.client.HTTPConnection('127.0.0.1', server.port, timeout=60)     # keep-alive, as clients do
        start.wait()
        try:
            for index in range(number, 200, 16):
                status, answer = server.predict_files([(shipped.images[index], image(shipped, index))], connection)
                assert status == 200, answer
                same(answer, {'predictions': [shipped.answers[index]]})
        except Exception as e:          # the assertion is made in the test's thread
            with lock:
                failures.append(repr(e))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    status, health = server.request('GET', '/health')
    assert status == 200 and health['in_flight'] == 0 and health['answered'] >= 200, health
    assert health['batches'] < health['examples'], health       # concurrent requests were run together
    status, several = server.predict_files([(shipped.images[i], image(shipped, i)) for i in (3, 4, 5)])
    assert status == 200
    same(several, {'predictions': shipped.answers[3:6]})


def test_fifteen_kinds_of_bad_request_get_a_4xx_and_the_server_goes_on(server, shipped):
    png = image(shipped, 0)
    text_file = multipart([('file', 'notes.txt', b'not an image at all')])
    wrong_field = multipart([('image', 'a.png', png)])
    as_text = multipart([('file', None, b'digits/test_0.png')])
    empty_file = multipart([('file', 'empty.png', b'')])
    too_large = multipart([('file', 'big.png', b'\0' * (MAX_BODY + 1))])
    cut = multipart([('file', 'a.png', png)])
    json_type = {'Content-Type': 'application/json'}
    cases = [
        ('malformed JSON', 'POST', '/predict', b'{"inputs": [', json_type, 400, 'not valid JSON'),
        ('a JSON list', 'POST', '/predict', b'["a.png"]', json_type, 400, 'must be a JSON object'),
        ('a wrong JSON field', 'POST', '/predict', b'{"images": ["a"]}', json_type, 400, 'unknown field "images"'),
        ('no examples', 'POST', '/predict', b'{"inputs": []}', json_type, 400, 'non-empty list'),
        ('not an image', 'POST', '/predict', *text_file, 422, 'UnidentifiedImageError'),
        ('an empty upload', 'POST', '/predict', *empty_file, 422, 'input_converter failed on upload "empty.png"'),
        ('a wrong form field', 'POST', '/predict', *wrong_field, 400, 'unknown form field "image"'),
        ('a file name as text', 'POST', '/predict', *as_text, 400, 'must be a file upload, not text'),
        ('a broken multipart body', 'POST', '/predict', b'--x\r\ngarbage', {'Content-Type': 'multipart/form-data'},
         400, 'multipart/form-data body cannot be read'),
        ('a multipart body cut before its end', 'POST', '/predict', cut[0][:-30], cut[1], 400,
         'ends before its closing boundary'),
        ('a part without a field name', 'POST', '/predict', b'--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n',
         {'Content-Type': 'multipart/form-data; boundary=b'}, 400, 'form-data; name='),
        ('too large', 'POST', '/predict', *too_large, 413, f'--max-body {MAX_BODY}'),
        ('another content type', 'POST', '/predict', b'digits/test_0.png', {'Content-Type': 'text/plain'}, 415,
         'application/json or multipart/form-data'),
        ('a GET of /predict', 'GET', '/predict', None, {}, 405, 'Method Not Allowed'),
        ('an unknown route', 'POST', '/predictions', b'{}', json_type, 404, 'Not Found'),
    ]
    for what, method, path, body, headers, status, says in cases:
        got, answer = server.request(method, path, body, headers)
        assert got == status and isinstance(answer, dict) and says in answer['error'], (what, got, answer)
        assert server.request('GET', '/health')[0] == 200, what
    status, answer = server.predict_files([(shipped.images[0], png)])
    assert status == 200
    same(answer, {'predictions': [shipped.answers[0]]})


def test_a_request_naming_a_server_path_reads_no_file(server, shipped, tmp_path):
    """The paths named: a FIFO, whose opening for reading would release the writer blocked on it, and a
    real image (which would give a prediction)."""
    fifo = str(tmp_path / 'secret.png')
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer():
        with open(fifo, 'wb'):          # blocks until someone opens the FIFO for reading
            opened.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    real = os.path.join(shipped.root, shipped.images[0])
    for payload in ({'inputs': [fifo]}, {'input': fifo}, {'inputs': [real]}, {'input': shipped.images[0]}):
        status, answer = server.predict_json(payload)
        assert status == 400 and 'never opens a path a client names; nothing was read' in answer['error'], answer
    body, headers = multipart([('file', None, fifo.encode())])
    status, answer = server.request('POST', '/predict', body, headers)
    assert status == 400 and 'never opens a path a client names' in answer['error'], answer
    time.sleep(0.5)
    assert not opened.is_set() and thread.is_alive()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))      # release the writer ourselves
    thread.join(10)
    assert opened.is_set()


def test_metadata_docs_and_openapi(server):
    status, about = server.request('GET', '/metadata')
    assert status == 200
    assert (about['session'], about['pipeline'], about['epoch'], about['checkpoint'], about['device']) == \
        ('pretrained', 'evaluation_pipeline', 1, 'latest', 'cpu')
    assert [(i['field'], i['kind']) for i in about['inputs']] == [('file', 'file')]
    assert about['post_processor'] == 'torchassistant.postprocessors.Classification' and about['max_body'] == MAX_BODY
    status, schema = server.request('GET', '/openapi.json')
    assert status == 200 and set(schema['paths']['/predict']['post']['requestBody']['content']) == \
        {'application/json', 'multipart/form-data'}
    assert server.request('GET', '/docs')[0] == 200


def test_schemathesis_finds_no_server_error(server, tmp_path):
    done = forked.run([sys.executable, '-m', 'schemathesis.cli', 'run',
                           f'http://127.0.0.1:{server.port}/openapi.json', '--checks', 'not_a_server_error',
                           '--max-examples', '25', '--seed', '1', '--generation-database', 'none', '--no-color',
                           '--workers', '1', '--request-timeout', '30', '--report-dir', str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r'\d+ generated, \d+ passed', done.stdout), done.stdout[-2000:]
    assert server.request('GET', '/health')[0] == 200


def test_sigterm_lets_the_requests_in_flight_finish(shipped):
    """Six requests wait in a batch (--max-wait-ms 3000) when SIGTERM comes: each is answered, then exit 0."""
    running = Server(shipped, shipped.spec, '--max-wait-ms', '3000')
    answers = {}

    def client(index):
        answers[index] = running.predict_files([(shipped.images[index], image(shipped, index))])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while running.request('GET', '/health')[1]['in_flight'] < 6:
            assert time.monotonic() < deadline, 'the six requests never were in flight together'
            time.sleep(0.05)
    finally:
        code, printed = running.stop()
    for thread in threads:
        thread.join(30)
    assert code == 0, printed
    assert 'Stopped by SIGTERM: 6 prediction request(s) answered, 6 example(s) in 1 batch(es); none was left ' \
           'unanswered' in printed, printed
    for index in range(6):
        status, answer = answers[index]
        assert status == 200, answer
        same(answer['predictions'][0]['y_hat'], shipped.answers[index]['y_hat'], 'y_hat')
        assert answer['predictions'][0].keys() == {'input', 'y_hat'}


def test_infer_json_prints_readable_predictions_with_the_datasets_class_names(shipped):
    """The shared session's classify.json (`"classes": "test_ds"`, raw scores kept): what infer --json printed."""
    names = [f'{d} - {w}' for d, w in enumerate('zero one two three four five six seven eight nine'.split())]
    for answer in shipped.answers[:20]:
        assert list(answer) == ['input', 'y_hat', 'label', 'probability', 'top']
        scores = torch.tensor(answer['y_hat'])
        probabilities = scores.softmax(0)
        best = int(scores.argmax())
        assert answer['label'] == names[best] == answer['top'][0]['label']
        assert answer['probability'] == round(probabilities[best].item(), 4)
        assert [t['label'] for t in answer['top']] == [names[i] for i in probabilities.topk(3).indices.tolist()]
    with open(os.path.join(shipped.root, shipped.classify)) as f:
        assert json.load(f)['post_processor']['kwargs'] == {'top_k': 3, 'classes': 'test_ds', 'raw': True}


# ---- in-process: the guard and the input kinds ------------------------------------------------------

def test_the_guard_refuses_a_named_path_and_sees_what_is_opened(tmp_path):
    named, other = tmp_path / 'named.txt', tmp_path / 'other.txt'
    named.write_text('secret')
    other.write_text('fine')
    with serve._Guard.forbidding(['x', [str(tmp_path / '.' / 'named.txt')]]):
        with pytest.raises(PermissionError, match='does not open paths that a client names'):
            open(named)
        with pytest.raises(PermissionError):
            os.open(str(named), os.O_RDONLY)
        assert other.read_text() == 'fine'
    assert named.read_text() == 'secret'         # outside the block nothing is refused
    with serve._Guard.watching(other) as seen:
        pass
    assert seen[1] is False
    with serve._Guard.watching(other) as seen:
        other.read_text()
    assert seen[1] is True


class _Runner:
    def __init__(self, *converters):
        self.converters = converters


def test_input_kinds_are_found_by_whether_a_converter_opens_its_input():
    def opens(path):
        with open(path, 'rb') as f:
            return f.read(), None

    def pil(path):
        from PIL import Image
        return Image.open(path).copy(), None     # an empty file is no image: raises, after opening it

    def words(text):
        return text.split(), None

    assert serve.input_kinds(_Runner(opens, pil, words, lambda text: int(text))) == ['file', 'file', 'value', 'value']


def test_settings_are_checked():
    with pytest.raises(Exception, match='--port must be a port number from 0 to 65535, not 70000; --max-batch must be at '
                                        'least 1, not 0'):
        serve.Settings(port=70000, max_batch=0).check()



def test_multipart_parts_keep_names_file_names_bytes_and_text_charsets():
    body, headers = multipart([('file', 'a b.png', b'\x89PNG\r\n--not-a-boundary\r\n\x00'), ('input_2', None, b'caf\xc3\xa9')])
    latin = b'--B\r\nContent-Disposition: form-data; name="t"\r\nContent-Type: text/plain; charset=latin-1\r\n\r\n' \
            b'caf\xe9\r\n--B--\r\n'
    parts = serve._parts(headers['Content-Type'], body) + serve._parts('multipart/form-data; boundary=B', latin)
    assert [(p.name, p.filename, p.data) for p in parts] == [
        ('file', 'a b.png', b'\x89PNG\r\n--not-a-boundary\r\n\x00'), ('input_2', None, b'caf\xc3\xa9'), ('t', None, b'caf\xe9')]
    assert [serve._text(p.name, p) for p in parts[1:]] == ['café', 'café']
    with pytest.raises(serve.Problem, match='has no boundary'):
        serve._parts('multipart/form-data', body)
