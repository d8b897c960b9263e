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
- the floor: the same clients against bench/null_server.py, an HTTP server on the same uvicorn that
  answers every request with a stored answer and does nothing else. Its examples per second over the
  bare model's is the most any server could reach on this machine under these clients.
- the servers' CPU time per example (from /proc), to show where the time goes.
- where wrk is installed (a load generator in C, `apt-get install wrk`), the batched server and the
  null server under wrk's 16 connections for 5 s: what they answer when the clients cost little CPU.

The three servers run side by side (the idle ones cost nothing) and each repeat measures every side
once, in turn, as the other benchmarks interleave their pairs.

Measures: examples per second (a request is one example) and latency p50 / p99 per request. Target:
batched serve >= 0.7 x the bare model's examples per second, i.e. its time per example <= 1/0.7 of
the bare model's. Each repeat measures every side once; medians over repeats are compared.
"""
import contextlib
import http.client
import io
import json
import os
import queue
import re
import shutil
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

    def __init__(self, spec, args, env, cwd, command=None):
        command = command or [sys.executable, '-m', 'torchassistant', 'serve', spec, '--port', '0', *args]
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
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

    def cpu_seconds(self):
        """The server process's CPU time so far (user + system, all its threads), from /proc; None elsewhere."""
        try:
            with open(f'/proc/{self.process.pid}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def measured(server, run):
    """run() (a load's row) with the server's CPU time per example added as server_cpu_ms (not where /proc is not)."""
    before = server.cpu_seconds()
    row = run()
    after = server.cpu_seconds()
    if before is not None and after is not None:
        row['server_cpu_ms'] = (after - before) * 1000 / row['examples']
    return row


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
    return {'examples_per_s': requests * per_request / seconds, 'seconds': seconds, 'examples': requests * per_request,
            **percentiles(latencies)}


def wrk(port, png, clients, seconds, workdir):
    """The same load from wrk (a load generator in C: its clients cost the machine far less CPU than this
    process's threads), `clients` connections for `seconds`: {examples_per_s, p50, p99}; None without wrk."""
    program = shutil.which('wrk')
    if program is None:
        return None
    body, headers = _upload([png])
    script = os.path.join(workdir, 'wrk-post.lua')
    with open(script, 'w') as f:       # a Lua string of decimal escapes: any bytes
        f.write('wrk.method = "POST"\nwrk.body = "' + ''.join(f'\\{c:03d}' for c in body) + '"\n'
                f'wrk.headers["Content-Type"] = "{headers["Content-Type"]}"\n')
    out = subprocess.run([program, '-t1', f'-c{clients}', f'-d{seconds}s', '--latency', '-s', script,
                          f'http://127.0.0.1:{port}/predict'], capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = re.search(r'^Requests/sec:\s+([\d.]+)', out, re.M)
    if rate is None or re.search(r'Non-2xx|Socket errors', out):
        raise RuntimeError(f'wrk failed: {out}')
    latency = {q: re.search(rf'^\s+{q}%\s+([\d.]+)(us|ms|s)\b', out, re.M) for q in ('50', '99')}
    scale = {'us': 1e-6, 'ms': 1e-3, 's': 1}
    return {'examples_per_s': float(rate.group(1)),
            **{f'p{q}': float(m.group(1)) * scale[m.group(2)] for q, m in latency.items()}}


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
    rows = {'batched': [], 'max-batch 1': [], 'bare': [], 'pipeline': [], f'batched, {PER_REQUEST} per request': [],
            'null server': []}
    with contextlib.ExitStack() as servers:
        batched = Server(spec, ['--max-batch', '64', '--max-wait-ms', '5'], bench.env, workloads.REPO)
        servers.callback(batched.stop)
        alone = Server(spec, ['--max-batch', '1'], bench.env, workloads.REPO)
        servers.callback(alone.stop)
        answer = os.path.join(bench.workdir, 'serve-answer.json')      # what the null server answers: a real answer
        with open(answer, 'wb') as f:
            f.write(predict_once(batched.port, pngs[0]))
        null = Server(None, None, bench.env, workloads.REPO, [sys.executable, '-m', 'bench.null_server', answer])
        servers.callback(null.stop)
        for server in (batched, alone, null):
            load(server.port, pngs, clients, min(requests, 4 * clients))            # warm-up, not counted
        for repeat in range(args.repeats):             # the sides interleaved, as the other benchmarks' pairs
            before = batched.health()
            rows['batched'].append(measured(batched, lambda: load(batched.port, pngs, clients, requests)))
            after = batched.health()
            sizes = {int(k): v - before['batch_sizes'].get(k, 0) for k, v in after['batch_sizes'].items()}
            sizes = {k: v for k, v in sizes.items() if v > 0}
            rows['bare'].append(bare(model, pictures, sizes))
            rows['max-batch 1'].append(measured(alone, lambda: load(alone.port, pngs, clients, requests)))
            rows['pipeline'].append(pipeline(runner, pngs, sizes))
            rows[f'batched, {PER_REQUEST} per request'].append(measured(batched, lambda: load(
                batched.port, pngs, clients, max(clients, requests // PER_REQUEST), PER_REQUEST)))
            rows['null server'].append(measured(null, lambda: load(null.port, pngs, clients, requests)))
            for name, server in (('batched, wrk', batched), ('null server, wrk', null)):
                row = wrk(server.port, pngs[repeat % len(pngs)], clients, 1 if args.quick else 5, bench.workdir)
                if row is not None:
                    rows.setdefault(name, []).append(row)
            mean = sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
            bench.write(f'  repeat {repeat + 1}: batches the batched server ran, by size: {dict(sorted(sizes.items()))} '
                        f'(mean {mean:.1f})')
            for name, values in rows.items():
                bench.write(f'    {name:24s} {_row(values[-1])}')
        sanity(bench, batched.port, pngs[:8], model, pictures[:8])
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
    floor = rate['null server'] / rate['bare']
    bench.write(f'    ratio null server / bare {floor:.3f}: the most any server reaches under these clients on this machine '
                f'(it answers without work); batched serve / null server {rate["batched"] / rate["null server"]:.3f}')
    if 'batched, wrk' in rate:
        bench.write(f'    with wrk as the clients: batched serve / bare {rate["batched, wrk"] / rate["bare"]:.3f}, null server '
                    f'/ bare {rate["null server, wrk"] / rate["bare"]:.3f}')
    else:
        bench.write('    (wrk, a load generator in C, is not installed: no figures with it; apt-get install wrk)')
    in_process = rate['pipeline'] / rate['bare']
    if outcome == 'FAIL' and min(floor, in_process) < TARGET:
        bench.write(f'    the target is out of reach here: a server that does nothing reaches {floor:.3f} of the bare model '
                    f'under these {clients} clients, and the pipeline alone, without HTTP (the converter, collator '
                    f'and model that every request runs), {in_process:.3f}')
    measure = Measure('per_example', f'time per example, {clients} clients', round(1 / TARGET, 3))
    bench.verdicts.append(Verdict('6 serve', measure, 1 / share, None, outcome))


def predict_once(port, png):
    """The body of the server's answer for one upload."""
    connection = connect(port)
    try:
        body, headers = _upload([png])
        connection.request('POST', '/predict', body, headers)
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f'status {response.status}: {answer[:300]!r}')
    return answer


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
    if row.get('server_cpu_ms') is not None:
        text += f', server CPU {row["server_cpu_ms"]:.3f} ms per example'
    return text
