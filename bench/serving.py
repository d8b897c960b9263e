"""Benchmark 6, serve: `torchassistant serve` on a tutorial session under concurrent clients, against
the bare model (bench/run.py --only 6).

- framework, batched: `torchassistant serve inference.json` (--max-batch 64, --max-wait-ms 5), each
  request one test digit as a PNG multipart upload; `clients` threads, each with its own keep-alive
  connection, send `requests` requests in all as fast as answers come.
- framework, --max-batch 1: the same server and load, every request run alone.
- hand ("bare"): the session's LeNet5 called in this process under inference_mode on batches of
  exactly the sizes the batched server ran (its /health counts them), made of the same digits by the
  tutorial's collator (ToTensor, stack). Its "latency" is one batch's forward.
- for context, the in-process pipeline: `Inference.predict` (PNG decoding, collator, model) on the
  same batches, without HTTP; and the batched server with 16 images per request, which shares each
  request's HTTP cost among 16 examples.

The two servers run side by side (the idle one costs nothing) and each repeat measures every side
once, in turn, as the other benchmarks interleave their pairs.

Measures: examples per second (a request is one example) and latency p50 / p99 per request. Target:
batched serve >= 0.7 x the bare model's examples per second, i.e. its time per example <= 1/0.7 of
the bare model's. Each repeat measures every side once; medians over repeats are compared.
"""
import http.client
import io
import json
import os
import queue
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

from bench import workloads

TARGET = 0.7            # batched serve examples/s over the bare model's
PER_REQUEST = 16        # images per request in the variant that shows what HTTP costs per request


def digits(data, count):
    """(PNG bytes, the PIL image) of the first `count` test images of `data`."""
    dataset = data.dataset(train=False)
    out = []
    for index in range(min(count, len(dataset))):
        picture = dataset[index][0]
        buffer = io.BytesIO()
        picture.save(buffer, format='PNG')
        out.append((buffer.getvalue(), picture))
    return out


class Server:
    """`python -m torchassistant serve SPEC --port 0 ARGS` in a subprocess; `port` from its first line."""

    def __init__(self, spec, args, env, cwd):
        self.process = subprocess.Popen([sys.executable, '-m', 'torchassistant', 'serve', spec, '--port', '0', *args],
                                        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True).start()
        try:
            first = lines.get(timeout=180)
        except queue.Empty:
            self.process.kill()
            raise RuntimeError('the server printed nothing in 180 s') from None
        found = re.search(r' at http://127\.0\.0\.1:(\d+)$', first.strip())
        if not found:
            self.process.kill()
            raise RuntimeError(f'the server did not start: {first}{self.process.stdout.read()}')
        self.port = int(found.group(1))

    def health(self):
        connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=60)
        try:
            connection.request('GET', '/health')
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def connect(port):
    """A keep-alive connection with Nagle's algorithm off, as curl and urllib3 make them: http.client sends
    a request's headers and body in two writes, and the second would wait for the server's delayed ACK of
    the first (40 ms on Linux)."""
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=120)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


def _upload(pngs):
    boundary = uuid.uuid4().hex
    body = b''.join(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit_{i}.png"\r\n'
                    f'\r\n'.encode() + png + b'\r\n' for i, png in enumerate(pngs))
    return body + f'--{boundary}--\r\n'.encode(), {'Content-Type': f'multipart/form-data; boundary={boundary}'}


def load(port, pngs, clients, requests, per_request=1):
    """`requests` requests of `per_request` images each from `clients` threads at once: {examples_per_s, p50,
    p99, seconds}."""
    bodies = [_upload([pngs[(i + j) % len(pngs)] for j in range(per_request)]) for i in range(len(pngs))]
    latencies, failures, lock = [], [], threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(number):
        connection = connect(port)
        mine = []
        start.wait()
        try:
            for index in range(number, requests, clients):
                body, headers = bodies[index % len(bodies)]
                began = time.perf_counter()
                connection.request('POST', '/predict', body, headers)
                response = connection.getresponse()
                answer = response.read()
                mine.append(time.perf_counter() - began)
                if response.status != 200:
                    raise RuntimeError(f'status {response.status}: {answer[:300]!r}')
        except Exception as e:
            with lock:
                failures.append(repr(e))
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    if failures:
        raise RuntimeError(f'{len(failures)} client(s) failed: {failures[0]}')
    return {'examples_per_s': requests * per_request / seconds, 'seconds': seconds, **percentiles(latencies)}


def percentiles(values):
    ordered = sorted(values)

    def at(q):
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {'p50': at(0.50), 'p99': at(0.99)}


def bare(model, pictures, sizes, repeats=1):
    """The model alone on batches of `sizes` ({size: count}) of the digits: {examples_per_s, p50, p99}."""
    import torch
    from torchvision.transforms.functional import to_tensor
    tensors = torch.stack([to_tensor(p) for p in pictures])
    twice = torch.cat([tensors, tensors])          # a batch starting near the end wraps around
    batches = []
    for size, count in sizes.items():
        for _ in range(count):
            start = (len(batches) * size) % len(tensors)
            batches.append(twice[start:start + size])
    model.eval()
    times = []
    with torch.inference_mode():
        model(batches[0])                                  # warm the kernels
        began = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                t = time.perf_counter()
                model(batch)
                times.append(time.perf_counter() - t)
        seconds = time.perf_counter() - began
    examples = repeats * sum(len(b) for b in batches)
    return {'examples_per_s': examples / seconds, 'seconds': seconds, **percentiles(times)}


def pipeline(runner, pngs, sizes):
    """Inference.predict (PNG decoding in the converter, collator, model) on the same batch sizes, no HTTP."""
    import tempfile

    from torchassistant.assembly.inference import Example
    folder = tempfile.mkdtemp(prefix='ta-bench-serve-')
    paths = []
    for index, png in enumerate(pngs):
        path = os.path.join(folder, f'{index}.png')
        with open(path, 'wb') as f:
            f.write(png)
        paths.append(path)
    batches = [[Example([paths[(i * size + j) % len(paths)]]) for j in range(size)]
               for size, count in sizes.items() for i in range(count)]
    began = time.perf_counter()
    for batch in batches:
        runner.json_objects(batch, runner.predict(batch))
    seconds = time.perf_counter() - began
    return {'examples_per_s': sum(len(b) for b in batches) / seconds, 'seconds': seconds}


def run(bench, clients=16):
    """Benchmark 6 (see the module docstring); appends its verdict to bench.verdicts."""
    from bench.measure import Measure, Verdict
    from torchassistant.cli import commands
    args = bench.args
    requests = 160 if args.quick else 2000
    session = bench.session('serve', workloads.tutorial_spec('', bench.data, 1, 0))
    spec = workloads.write_json(os.path.join(bench.workdir, 'serve-inference.json'), workloads.inference_spec(session))
    pngs_and_pictures = digits(bench.data, 256)
    pngs = [png for png, _ in pngs_and_pictures]
    pictures = [picture for _, picture in pngs_and_pictures]
    bench.write(f'\n== 6. serve: torchassistant serve (the tutorial model, examples/mnist/inference.json) under '
                f'{clients} clients, {requests} requests of one PNG digit each (multipart), batched (--max-batch 64 '
                f'--max-wait-ms 5) and --max-batch 1, vs the bare LeNet5 in this process on the batches the '
                f'batched server ran; repeats {args.repeats}')
    runner = commands.open_inference(commands.load_spec(spec, 'inference'), commands.RunOptions(device='cpu'))[1]
    model = runner.pipeline.models[0]
    rows = {'batched': [], 'max-batch 1': [], 'bare': [], 'pipeline': [], f'batched, {PER_REQUEST} per request': []}
    batched = Server(spec, ['--max-batch', '64', '--max-wait-ms', '5'], bench.env, workloads.REPO)
    try:
        alone = Server(spec, ['--max-batch', '1'], bench.env, workloads.REPO)
    except BaseException:
        batched.stop()
        raise
    try:
        for server in (batched, alone):
            load(server.port, pngs, clients, min(requests, 4 * clients))            # warm-up, not counted
        for repeat in range(args.repeats):             # the sides interleaved, as the other benchmarks' pairs
            before = batched.health()
            rows['batched'].append(load(batched.port, pngs, clients, requests))
            after = batched.health()
            sizes = {int(k): v - before['batch_sizes'].get(k, 0) for k, v in after['batch_sizes'].items()}
            sizes = {k: v for k, v in sizes.items() if v > 0}
            rows['bare'].append(bare(model, pictures, sizes))
            rows['max-batch 1'].append(load(alone.port, pngs, clients, requests))
            rows['pipeline'].append(pipeline(runner, pngs, sizes))
            rows[f'batched, {PER_REQUEST} per request'].append(
                load(batched.port, pngs, clients, max(clients, requests // PER_REQUEST), PER_REQUEST))
            mean = sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
            bench.write(f'  repeat {repeat + 1}: batches the batched server ran, by size: {dict(sorted(sizes.items()))} '
                        f'(mean {mean:.1f})')
            for name, values in rows.items():
                bench.write(f'    {name:24s} {_row(values[-1])}')
        sanity(bench, batched.port, pngs[:8], model, pictures[:8])
    finally:
        batched.stop()
        alone.stop()
    medians = {name: {key: statistics.median(r[key] for r in values) for key in values[0]}
               for name, values in rows.items()}
    for name in rows:
        bench.write(f'  median {name:24s} {_row(medians[name])}')
    share = medians['batched']['examples_per_s'] / medians['bare']['examples_per_s']
    outcome = 'PASS' if share >= TARGET else 'FAIL'
    bench.write(f'    ratio batched serve / bare model (examples per second) {share:.3f}   target >= {TARGET}: {outcome}')
    rate = {name: row['examples_per_s'] for name, row in medians.items()}
    bench.write(f'    ratio --max-batch 1 / bare {rate["max-batch 1"] / rate["bare"]:.3f}; batched / --max-batch 1 '
                f'{rate["batched"] / rate["max-batch 1"]:.2f}; batched / in-process pipeline '
                f'{rate["batched"] / rate["pipeline"]:.3f}; {PER_REQUEST} per request / bare '
                f'{rate[f"batched, {PER_REQUEST} per request"] / rate["bare"]:.3f}')
    measure = Measure('per_example', f'time per example, {clients} clients', round(1 / TARGET, 3))
    bench.verdicts.append(Verdict('6 serve', measure, 1 / share, None, outcome))


def sanity(bench, port, pngs, model, pictures):
    """Print whether the server's y_hat for some digits is the bare model's (within 1e-5); bench.sane."""
    import torch
    from torchvision.transforms.functional import to_tensor
    connection = connect(port)
    try:
        body, headers = _upload(pngs)
        connection.request('POST', '/predict', body, headers)
        answers = json.loads(connection.getresponse().read())['predictions']
    finally:
        connection.close()
    with torch.inference_mode():
        expected = model(torch.stack([to_tensor(p) for p in pictures]))[0]
    gap = float((torch.tensor([a['y_hat'] for a in answers]) - expected).abs().max())
    same = gap <= 1e-5
    bench.write(f'  sanity (hand / framework, same digits): y_hat of {len(pngs)} digits from the server and the bare '
                f'model; largest gap {gap:.7f}: {"OK" if same else "MISMATCH"}')
    bench.sane = bench.sane and same


def _row(row):
    text = f'{row["examples_per_s"]:8.0f} examples/s'
    if 'p50' in row:
        text += f', latency p50 {row["p50"] * 1000:6.2f} ms, p99 {row["p99"] * 1000:6.2f} ms'
    return text
