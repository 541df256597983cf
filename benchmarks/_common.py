"""Helpers shared by the benchmark scripts: the machine, the load, tables, cached records.

Every benchmark prints a table of absolute figures labelled with this machine, and the
ratios it measured side by side in the same process, which are the figures that count on
a noisy machine. ``--json PATH`` also writes the result for ``run_all.py``.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Records, run folders and test photos the benchmarks build once (gitignored); tests point it elsewhere.
CACHE = Path(os.environ.get("KOALA_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))
SHARED = Path(os.environ.get("KOALA_DATA", ROOT.parent / "shared" / "data"))
SAMPLE = SHARED / "imagenet_sample_1000"
SOLVAY = ROOT / "data" / "historical" / "photos" / "solvay_conference_1927.jpg"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------- machine
def cpu_model():
    """The CPU's model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    """The vector-unit flags that matter here (AVX-512, bf16 dot products)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def cores():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine():
    """A dict describing the machine and software, for the tables' labels."""
    info = {
        "cpu": cpu_model(),
        "cores": cores(),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def software(tf=True):
    """Versions of the frameworks in use."""
    import keras
    import numpy as np

    out = {"keras": keras.__version__, "numpy": np.__version__}
    if tf:
        import tensorflow

        out["tensorflow"] = tensorflow.__version__
    return out


def machine_line(info):
    flags = ",".join(info.get("cpu_flags", [])) or "-"
    return f"{info['cpu']}, {info['cores']} cores ({flags}), {info.get('memory_gb', '?')} GB"


# ----------------------------------------------------------------- background load
def _busy_jiffies():
    """Busy jiffies of the whole machine, from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle


def _own_jiffies():
    """User + system jiffies of this process (all its threads) and its waited-for children."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15])


class LoadMonitor:
    """Measure how many cores *other* processes keep busy while a benchmark runs.

    A context manager; ``other_cores`` is the mean over its lifetime. On a machine
    without ``/proc`` it reports ``None``.
    """

    def __init__(self):
        self.other_cores = None

    def __enter__(self):
        try:
            self._start = (_busy_jiffies(), _own_jiffies(), time.monotonic())
        except (OSError, IndexError, ValueError):
            self._start = None
        return self

    def __exit__(self, *exc):
        if self._start is None:
            return
        busy, own, t0 = self._start
        elapsed = time.monotonic() - t0
        if elapsed <= 0:
            return
        tick = os.sysconf("SC_CLK_TCK")
        other = (_busy_jiffies() - busy) - (_own_jiffies() - own)
        self.other_cores = max(0.0, other / tick / elapsed)


def other_processes():
    """The busiest other processes right now: (pid, command, cores used over 0.5 s)."""
    def snapshot():
        out = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            out[int(proc.name)] = (int(fields[11]) + int(fields[12]), cmd)
        return out

    try:
        first = snapshot()
        time.sleep(0.5)
        second = snapshot()
    except OSError:
        return []
    tick = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (jiffies, cmd) in second.items():
        if pid in first:
            used = (jiffies - first[pid][0]) / tick / 0.5
            if used > 0.1:
                busy.append((pid, cmd[:100], round(used, 2)))
    return sorted(busy, key=lambda row: -row[2])


# ----------------------------------------------------------------- timing
def timeit(fn, *args, repeats=5, warmup=1, **kwargs):
    """Median and all wall times (seconds) of ``fn(*args)`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


# ----------------------------------------------------------------- tables & results
def fmt(value, digits=3):
    """Format a number for a table: a few significant digits, thousands as is."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown_table(headers, rows):
    """A GitHub markdown table (a str)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def target(name, value, op, goal):
    """A target check as a dict: ``{"name", "value", "goal", "met"}`` (op is ">=" or "<=")."""
    met = None if value is None else (value >= goal if op == ">=" else value <= goal)
    return {"name": name, "value": value, "op": op, "goal": goal, "met": met}


def report(name, title, headers, rows, *, figures, load, targets=(), notes=(), tf=True):
    """A benchmark's result dict, as ``run(quick)`` returns it to :func:`finish`.

    Parameters
    ----------
    name, title : str
        The result's key in ``run_all.py`` and the heading of its table.
    headers, rows : list
        The table (see :func:`markdown_table`).
    figures : dict
        The measured values, for JSON readers.
    load : LoadMonitor
        The monitor that ran around the measurement: its ``other_cores`` goes in.
    targets, notes : sequence
        :func:`target` dicts; lines printed under the table.
    tf : bool
        Record TensorFlow's version too (see :func:`software`).
    """
    return {"name": name, "title": title, "headers": list(headers), "rows": rows, "figures": figures,
            "other_cores": load.other_cores, "targets": list(targets), "notes": list(notes),
            "software": software(tf=tf)}


def print_result(result):
    """Print a benchmark's result: machine line, table, targets and notes."""
    print()
    print(f"## {result['title']}")
    print()
    print(f"Machine: {machine_line(result['machine'])}; {result['software']}")
    load = result.get("other_cores")
    if load is not None:
        print(f"Other processes kept {load:.2f} of {result['machine']['cores']} cores busy during this run.")
    print()
    print(markdown_table(result["headers"], result["rows"]))
    if result.get("targets"):
        print()
        for t in result["targets"]:
            status = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
            print(f"- target {t['name']} {t['op']} {fmt(t['goal'])}: {fmt(t['value'])} -> {status}")
    for note in result.get("notes", []):
        print(f"- {note}")
    sys.stdout.flush()


def finish(result, args, started):
    """Label the result with the machine and wall time, print it, write ``--json``."""
    result.setdefault("machine", machine())
    result["wall_s"] = round(time.perf_counter() - started, 1)
    result["quick"] = bool(getattr(args, "quick", False))
    print_result(result)
    print(f"(wall time {result['wall_s']} s{', --quick' if result['quick'] else ''})")
    if getattr(args, "json", None):
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return result


def parser(description):
    """An argparse parser with the common ``--quick`` and ``--json`` flags."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that the benchmark runs, in seconds")
    p.add_argument("--json", help="also write the result to this JSON file")
    return p


def main(run, doc, argv=None):
    """The usual entry point: parse ``--quick``/``--json``, run ``run(quick)``, print and save."""
    args = parser(doc.splitlines()[0]).parse_args(argv)
    started = time.perf_counter()
    return finish(run(args.quick), args, started)


def quiet_tensorflow():
    """Silence TensorFlow's start-up chatter (must run before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


# ----------------------------------------------------------------- data
def require(path):
    """``path``, or exit with a clear message when the offline data is missing."""
    path = Path(path)
    if not path.exists():
        sys.exit(f"benchmark data missing: {path} (put the offline data at ../shared/data or set KOALA_DATA)")
    return path


def sample_photos(count):
    """The first ``count`` colour photos of imagenet_sample_1000 (gray ones left out)."""
    folder = require(SAMPLE)
    gray = set((folder / "GRAYSCALE_FILES.txt").read_text().split())
    photos = [p for p in sorted(folder.glob("*.JPEG")) if p.name not in gray]
    return photos[:count]


def cached_records(count, quiet=True):
    """Records of ``count`` sample photos in ``benchmarks/.cache``, built once.

    Returns the records folder. A re-run reuses the complete shards (data.prepare).
    """
    from koala_utils import data

    out = CACHE / f"records_{count}"
    manifest = out / data.MANIFEST
    if manifest.is_file():
        try:
            data.shard_files(out, "train")
            return out
        except (data.ShardError, FileNotFoundError):
            shutil.rmtree(out, ignore_errors=True)
    data.prepare(sample_photos(count), out, shard_size=max(8, count // 4), progress=not quiet)
    return out


def fresh_dir(path):
    """An empty folder at ``path`` (removed first if it exists)."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
