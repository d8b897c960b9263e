"""What `infer.py` spends its time on beyond `import torch, torchvision` (benchmark 3's diagnosis).

    python bench/imports.py SPEC IMAGE        (from the repository root)

0. When each prints its last line (infer: the answer) and when it has exited: the interpreter's exit,
   which tears down every module imported, is part of "start to answer" as a shell sees it.
1. Packages infer imports that `python -c "import torch, torchvision"` does not, with their import
   time (python -X importtime, cumulative, first import) and where the first import came from: the
   chain of frames in this repository (torchassistant/, examples/) that led to it.
2. The rest: infer under cProfile in a Python that has first imported every module infer imports, so
   that only its work is profiled; this repository's functions by cumulative time.
"""
import cProfile
import importlib
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFER = os.path.join(REPO, 'infer.py')
BASELINE = 'import torch, torchvision'


def import_times(argv, env):
    """The import tree of a run from -X importtime: [(module, cumulative microseconds, depth)] in the
    order imports finished (a module after the modules it imported)."""
    result = subprocess.run([sys.executable, '-X', 'importtime', *argv], cwd=REPO, env=env, capture_output=True,
                            text=True)
    if result.returncode:
        raise RuntimeError(f'{" ".join(argv)} failed:\n{result.stderr[-2000:]}')
    lines = []
    for line in result.stderr.splitlines():
        match = re.match(r'import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)', line)
        if match:
            lines.append((match.group(4), int(match.group(2)), (len(match.group(3)) - 1) // 2))
    return lines


def new_packages(infer, baseline):
    """{package: (cumulative microseconds, the new package it was imported inside, or None)} for each
    top-level package infer imports and the baseline does not."""
    known = {name.split('.')[0] for name, _, _ in baseline}
    found = {}
    for i, (name, us, depth) in enumerate(infer):
        if name in known or '.' in name or name in found:
            continue
        parent = next((p for p, _, d in infer[i + 1:] if d < depth and p.split('.')[0] not in known
                       and p.split('.')[0] != name), None)
        found[name] = (us, parent.split('.')[0] if parent else None)
    return found


def output_and_exit(argv, env, runs=3):
    """Median seconds from start to the last line of output, and to the exit, of `argv` run `runs` times."""
    lasts, ends = [], []
    for _ in range(runs):
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=dict(env, PYTHONUNBUFFERED='1'),
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in process.stdout:
            last = time.perf_counter()
        process.wait()
        lasts.append(last - start)
        ends.append(time.perf_counter() - start)
    return statistics.median(lasts), statistics.median(ends)


def report(spec, image, env=None, top=6, write=print):
    env = dict(os.environ if env is None else env)
    base = output_and_exit(['-c', BASELINE + '; print("imported")'], env)
    answer = output_and_exit([INFER, spec, image], env)
    write(f'  start to last output line / to exit (median of 3): "{BASELINE}" {base[0]:.2f} s / {base[1]:.2f} s; '
          f'infer {answer[0]:.2f} s / {answer[1]:.2f} s (the interpreter\'s exit: {base[1] - base[0]:.2f} s and '
          f'{answer[1] - answer[0]:.2f} s)')
    baseline, infer = import_times(['-c', BASELINE], env), import_times([INFER, spec, image], env)
    packages = new_packages(infer, baseline)
    roots = sorted(((us, p) for p, (us, inside) in packages.items() if inside is None), reverse=True)
    total = sum(us for us, _ in roots)
    write(f'  what infer imports beyond "{BASELINE}" (-X importtime, cumulative, first import; {total / 1000:.0f} ms '
          f'in all), and where:')
    chains = first_imports(spec, image, env, [p for _, p in roots[:top]])
    for us, package in roots[:top]:
        inner = sorted(((u, p) for p, (u, inside) in packages.items() if inside == package), reverse=True)[:4]
        within = ', '.join(f'{p} {u / 1000:.0f} ms' for u, p in inner)
        write(f'    {us / 1000:6.0f} ms  {package}' + (f' (with {within})' if inner else ''))
        write(textwrap.fill(f'imported by {chains.get(package, "?")}', 116, initial_indent=' ' * 13,
                            subsequent_indent=' ' * 15))
    total, lines = profile_lines(spec, image, [name for name, _, _ in infer], 2 * top)
    write(f'  the rest: infer\'s work once everything is imported (cProfile, which slows it) {total * 1000:.0f} ms; '
          f'this repository\'s functions by cumulative time:')
    for line in lines:
        write('    ' + line)


def first_imports(spec, image, env, packages):
    """{package: 'file:line (function) <- ...'}: the repository frames that first imported each package."""
    result = subprocess.run([sys.executable, os.path.abspath(__file__), '--trace', ','.join(packages), spec, image],
                            cwd=REPO, env=env, capture_output=True, text=True)
    chains = {}
    for line in result.stderr.splitlines():
        if line.startswith('FIRST-IMPORT '):
            _, package, chain = line.split(' ', 2)
            chains[package] = chain
    return chains


class _Watch:
    """A meta path finder that notes the stack when a watched top-level package is first imported."""

    def __init__(self, packages):
        self.packages = set(packages)

    def find_spec(self, name, path=None, target=None):
        if name in self.packages:
            self.packages.discard(name)
            frames = [f for f in traceback.extract_stack()[:-1]
                      if f.filename.startswith(REPO) and not f.filename.endswith(('imports.py', 'infer.py'))]
            chain = ' <- '.join(f'{os.path.relpath(f.filename, REPO)}:{f.lineno} {f.name}()' for f in reversed(frames)
                                if not f.filename.endswith('cli.py'))
            print(f'FIRST-IMPORT {name} {chain or "(outside this repository)"}', file=sys.stderr)
        return None


def _trace(packages, spec, image):
    sys.meta_path.insert(0, _Watch(packages.split(',')))
    _run_infer(spec, image)


def _run_infer(spec, image):
    sys.path.insert(0, REPO)
    from torchassistant.cli import infer_main
    with open(os.devnull, 'w') as devnull:
        stdout, sys.stdout = sys.stdout, devnull
        try:
            infer_main([spec, image])
        finally:
            sys.stdout = stdout


def profile_lines(spec, image, modules, top):
    """(seconds profiled, lines): infer under cProfile after `modules` are imported."""
    with tempfile.TemporaryDirectory() as folder:
        out, listing = os.path.join(folder, 'infer.prof'), os.path.join(folder, 'modules.txt')
        with open(listing, 'w') as f:
            f.write('\n'.join(modules))
        subprocess.run([sys.executable, os.path.abspath(__file__), '--profile', out, spec, image, listing], cwd=REPO,
                       capture_output=True, text=True, check=True)
        stats = pstats.Stats(out, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_, calls, _, cumulative, _) in stats.stats.items():
        if filename.startswith(REPO) and not filename.endswith(('imports.py', 'cli.py')) and name != '<module>':
            rows.append((cumulative, f'{cumulative * 1000:7.0f} ms  {os.path.relpath(filename, REPO)}:{line} {name} '
                                     f'({calls} call{"s" if calls > 1 else ""})'))
    return stats.total_tt, [text for _, text in sorted(rows, reverse=True)[:top]]


def _profile(out, spec, image, listing):
    sys.path.insert(0, REPO)
    with open(listing) as f:
        for name in f.read().split():
            try:
                importlib.import_module(name)
            except Exception:       # a module that only imports inside its package's own order
                pass
    cProfile.runctx('_run_infer(spec, image)', globals(), {'spec': spec, 'image': image}, out)


if __name__ == '__main__':
    if sys.argv[1] == '--trace':
        _trace(*sys.argv[2:5])
    elif sys.argv[1] == '--profile':
        _profile(*sys.argv[2:6])
    else:
        report(*sys.argv[1:3])
