"""Shared plumbing: run one backend training as a child process and read its RunResult."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"tf": "tf_impl", "torch": "torch_impl"}


class RunFailed(RuntimeError):
    """A training child that failed (a crash, bad data, a flag): the benchmark stops, keeping what it measured."""


def train(backend: str, *flags, timeout: float = 1800, env: dict | None = None, accept=("ok",)) -> dict:
    """Run `python -m <backend> flags... --json tmp` and return its RunResult. A run whose status is in `accept`
    is returned whatever its exit code (time_to_accuracy counts a diverged seed as a miss); a Ctrl-C of the
    child is a KeyboardInterrupt here; any other failure raises RunFailed. `env`: extra environment variables."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        what = f"{backend} {' '.join(map(str, flags))}"
        proc = _child([MODULES[backend], *map(str, flags), "--no-progress", "--json", str(out)], what, timeout, env)
        result = json.loads(out.read_text()) if out.exists() else None
        if result is not None and result.get("status") in accept:
            return result
        if proc.returncode in (130, -2):
            raise KeyboardInterrupt
        tail = (result or {}).get("message") or proc.stderr.strip()[-800:]
        raise RunFailed(f"{what} exited {proc.returncode}: {tail}")


def _child(module_args: list, what: str, timeout: float, env: dict) -> subprocess.CompletedProcess:
    """`python -m module_args...` from the project root; past `timeout` it is stopped and RunFailed says so."""
    try:
        return subprocess.run([sys.executable, "-m", *module_args], capture_output=True, text=True, cwd=ROOT,
                              env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"{what} ran past {timeout:g} s and was stopped") from None


@contextmanager
def results_file(path, doc: dict, prog: str):
    """Writes `doc` to `path` when the block ends, however it ends, so a failed run or a Ctrl-C loses none of
    the figures measured before it: "complete" says whether every run was made, "stopped" why not (then a
    one-line error, exit 1, or 130 for a Ctrl-C). `path` naming a folder is refused before any run."""
    if Path(path).is_dir():
        print(f"{prog}: error: --json {path} is a folder; give a file name", file=sys.stderr)
        raise SystemExit(2)
    try:
        yield doc
    except BaseException as e:  # a bug in the script too: the figures are kept first, then its traceback
        ctrl_c, failed = isinstance(e, KeyboardInterrupt), isinstance(e, RunFailed)
        stopped = "interrupted (Ctrl-C)" if ctrl_c else str(e) if failed else f"{type(e).__name__}: {e}"
        doc.update(complete=False, stopped=stopped)
        write_json(path, doc)
        print(f"{prog}: stopped: {stopped}; what was measured before is in {path} (complete: false)", file=sys.stderr)
        if not (ctrl_c or failed):
            raise
        raise SystemExit(130 if ctrl_c else 1) from None
    doc.update(complete=True)
    write_json(path, doc)


def positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def peak(backend: str, precision: str = "32", n_cpu: int = 1024, n_gpu: int = 8192, threads: int = 0) -> dict:
    """The backend's matmul peak through its job runner's `peak` op (the probe `python -m compare`
    uses): {"device", "precision", "matmul_n", "peak_flops", "best_s", ...}."""
    from data.contract import write_json_atomic
    with tempfile.TemporaryDirectory() as tmp:
        jobs, out = Path(tmp) / "jobs.json", Path(tmp) / "peak.json"
        write_json_atomic(jobs, {"threads": threads, "deterministic": False, "jobs": [
            {"op": "peak", "precision": precision, "n_cpu": n_cpu, "n_gpu": n_gpu, "out": str(out)}]})
        proc = _child([f"{MODULES[backend]}.jobs", str(jobs)], f"{backend} peak ({precision})", 600,
                      dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0 or not out.exists():
            raise RunFailed(f"{backend} peak ({precision}) exited {proc.returncode}: {proc.stderr[-800:]}")
        return json.loads(out.read_text())


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def write_json(path, obj) -> None:
    from data.contract import write_json_atomic
    write_json_atomic(path, obj)
    print(f"wrote {path}")


def table(rows: list, headers: list) -> str:
    """A plain fixed-width table (pastes into the README as is)."""
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]])


def machine() -> str:
    import platform
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def stamp() -> dict:
    """When and where a figure was measured, for every script's JSON."""
    import datetime
    return {"date": str(datetime.date.today()), "machine": machine()}
