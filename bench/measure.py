"""How runs are measured and compared: wall and CPU time and peak memory of a process tree, the CPU
other programs used meanwhile, interleaved pairs, and the statistics and verdict lines.

A benchmark compares two sides, "hand" (the hand-written PyTorch) and "framework" (TorchAssistant).
`interleave` runs them in pairs whose order alternates (hand, framework | framework, hand | ...), so
that a machine getting faster or slower does not always favour one side. Each run is a `Sample`:
named measures (seconds, bytes) and the results the sides must agree on; `compare` prints one
measure's medians, spreads and ratio, and its verdict against the target.
"""
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading

SIDES = ('hand', 'framework')
PAGE = os.sysconf('SC_PAGE_SIZE')


class Sample:
    """One run: `measures` {name: value} (seconds or bytes), `results` {name: float} that both sides
    must agree on (accuracy, loss), `other`: CPU seconds other programs used meanwhile (None: unknown)."""

    def __init__(self, measures, results=None, other=None, output=''):
        self.measures, self.results, self.other, self.output = measures, results or {}, other, output


# ---- whole processes -----------------------------------------------------------------------------

# Started by run_process in a small Python of its own, it spawns the command, waits for it and writes
# "exit-code seconds max-rss-KiB cpu-seconds" to the file argv[1]. The kernel counts in a child's
# ru_maxrss the memory of the process that spawned it (before the exec): this one is a few MiB, where
# the benchmark's own process holds datasets.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], 'w') as f:
    f.write(f'{os.waitstatus_to_exitcode(status)} {seconds} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}')
"""


def run_process(argv, cwd=None, env=None, timeout=900):
    """Run `argv` to its end; (Sample, its stdout and stderr). Measures: "seconds" (wall, start to exit),
    "cpu" (CPU seconds of the process and the children it waited for), "peak_rss" (the largest peak RSS
    of any one process of the tree: wait4's ru_maxrss) and "peak_tree" (the highest sum of the RSS of the
    process and all its descendants, read from /proc every 20 ms)."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile('r') as result, OtherLoad() as other:
        launcher = subprocess.Popen([sys.executable, '-I', '-S', '-c', _LAUNCHER, result.name, *map(str, argv)],
                                    cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        tree = TreeMemory(launcher.pid)
        timer = threading.Timer(timeout, _kill_group, (launcher.pid,))
        timer.start()
        try:
            launcher.wait()
        finally:
            timer.cancel()
            tree.stop()
        out.seek(0)
        text = out.read().decode(errors='replace')
        fields = result.read().split()
    if launcher.returncode != 0 or not fields or fields[0] != '0':
        code = fields[0] if fields else f'{launcher.returncode} (launcher)'
        raise RuntimeError(f'{" ".join(map(str, argv))} exited with {code}:\n{text[-3000:]}')
    measures = {'seconds': float(fields[1]), 'cpu': float(fields[3]), 'peak_rss': int(fields[2]) * 1024,
                'peak_tree': tree.peak or None}
    return Sample(measures, other=other.seconds, output=text), text


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


class TreeMemory:
    """The highest sum of the resident memory of the processes below `pid` (the command, its DataLoader
    workers, torchrun's training processes), read from /proc by a thread every `interval` seconds until
    `stop()`: `peak`."""

    def __init__(self, pid, interval=0.02):
        self.pid, self.interval, self.peak = pid, interval, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        while not self._done.is_set():
            self.peak = max(self.peak, sum(_rss(pid) for pid in _descendants(self.pid)[1:]))
            self._done.wait(self.interval)

    def stop(self):
        self._done.set()
        self._thread.join()


def _descendants(pid):
    """`pid` and every process below it (from /proc/PID/task/TID/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f'/proc/{current}/task')
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f'/proc/{current}/task/{task}/children') as f:
                    queue.extend(int(child) for child in f.read().split())
            except (OSError, ValueError):
                pass
    return found


def _rss(pid):
    try:
        with open(f'/proc/{pid}/statm') as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


# ---- other programs ------------------------------------------------------------------------------

class OtherLoad:
    """CPU seconds that processes other than this one and its waited-for children used while the
    block ran, from /proc/stat (`seconds`, None where /proc/stat is missing). On a shared machine
    another program's work slows either side at random: the report shows how much there was."""

    def __enter__(self):
        self.start = _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc):
        busy, own = _busy_seconds(), _own_seconds()
        self.seconds = None if busy is None or self.start[0] is None else \
            max(0.0, (busy - self.start[0]) - (own - self.start[1]))
        return False


def _busy_seconds():
    try:
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf('SC_CLK_TCK')   # user nice system irq softirq steal


def _own_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_average():
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return '?'


# ---- pairs ---------------------------------------------------------------------------------------

def interleave(repeats, run, show):
    """`repeats` pairs of runs, `run(side, index)` -> Sample; pair i runs hand first when i is even,
    framework first when odd. `show(index, side, sample)` prints each run as it ends."""
    pairs = []
    for index in range(repeats):
        pair = {}
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            pair[side] = run(side, index)
            show(index, side, pair[side])
        pairs.append(pair)
    return pairs


class Measure:
    """A measure compared between the sides: its key in Sample.measures, how it is shown, and the
    largest acceptable framework/hand ratio of the medians (None: shown, not judged)."""

    def __init__(self, key, label, target=None, unit='s', note=''):
        self.key, self.label, self.target, self.unit, self.note = key, label, target, unit, note

    def show(self, value):
        if value is None:
            return '?'
        return f'{value / 2 ** 20:.0f} MiB' if self.unit == 'B' else f'{value:.3f} s'


class Verdict:
    def __init__(self, benchmark, measure, ratio, low_high, outcome):
        self.benchmark, self.measure, self.ratio = benchmark, measure, ratio
        self.low_high, self.outcome = low_high, outcome


def compare(title, measure, pairs, write):
    """Print medians, spreads, the ratio and the verdict of one measure over `pairs`; a Verdict."""
    values = {side: [p[side].measures.get(measure.key) for p in pairs] for side in SIDES}
    if any(v is None for side in SIDES for v in values[side]):
        write(f'  {measure.label}: not measured on this machine')
        return Verdict(title, measure, None, None, 'UNMEASURED')
    medians = {side: statistics.median(values[side]) for side in SIDES}
    ratio = medians['framework'] / medians['hand']
    spread = '   '.join(f'{side} {measure.show(medians[side])} (min {measure.show(min(values[side]))}, '
                          f'max {measure.show(max(values[side]))})' for side in SIDES)
    write(f'  {measure.label}{f" ({measure.note})" if measure.note else ""}: median {spread}')
    pair_ratios = [p['framework'].measures[measure.key] / p['hand'].measures[measure.key] for p in pairs]
    interval = ratio_interval(pair_ratios)
    text = f'    ratio framework/hand {ratio:.4f}; per pair {" ".join(f"{r:.3f}" for r in pair_ratios)}'
    if interval:
        text += f'; 95% interval {interval[0]:.3f} .. {interval[2]:.3f}'
    outcome = 'INFO' if measure.target is None else 'PASS' if ratio <= measure.target else 'FAIL'
    if measure.target is not None:
        text += f'   target <= {measure.target}: {outcome}'
        if interval and interval[0] <= measure.target < interval[2]:
            text += ' (the interval contains the target: within noise, more --repeats would settle it)'
    write(text)
    return Verdict(title, measure, ratio, interval, outcome)


# two-sided 95% quantiles of Student's t, by degrees of freedom
_T95 = [12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045]


def ratio_interval(ratios):
    """(low, geometric mean, high): a 95% confidence interval of the typical framework/hand ratio
    from per-pair ratios (a t interval on their logarithms); None for fewer than 2 pairs."""
    if len(ratios) < 2:
        return None
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    t = _T95[len(logs) - 2] if len(logs) - 2 < len(_T95) else 1.96
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean - half), math.exp(mean), math.exp(mean + half)


def agreement(pairs, tolerance, write):
    """Print whether both sides of every pair computed the same results (within `tolerance`); bool."""
    gaps = [abs(p['hand'].results[name] - p['framework'].results[name])
            for p in pairs for name in p['hand'].results if name in p['framework'].results]
    last = pairs[-1]
    shown = ', '.join(f'{name} {value:.4f} / {last["framework"].results.get(name, float("nan")):.4f}'
                      for name, value in last['hand'].results.items())
    same = bool(gaps) and max(gaps) <= tolerance
    write(f'  sanity (hand / framework, same seed and batches): {shown}; largest gap over the runs '
          f'{max(gaps) if gaps else float("nan"):.5f}: {"OK" if same else "MISMATCH"}')
    return same


def describe_other(pairs):
    """Other programs' CPU use during the runs, in CPU seconds per second (a 2-core machine has 2)."""
    shares = [s.other / s.measures['seconds'] for p in pairs for s in p.values()
              if s.other is not None and s.measures.get('seconds')]
    if not shares:
        return 'other programs: unknown'
    return f'other programs used {statistics.median(shares):.2f} CPU s per s (median over runs, max {max(shares):.2f})'
