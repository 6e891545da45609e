"""Shared plumbing: run one backend training as a child process and read its RunResult."""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from data.arch import MODELS
from data.contract import OneLineParser, seed_number, thread_count, user_path
# the scripts' flag types, taken from here
from data.contract import comma_list, nonnegative_int, positive_float, positive_int  # noqa: F401
from data.registry import DATASETS

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
def results_file(path, doc: dict, prog: str, measured):
    """Writes `doc` to `path` when the block ends, however it ends, so a failed run or a Ctrl-C loses none of
    the figures measured before it: "complete" says whether every run was made, "stopped" why not (then a
    one-line error, exit 1, or 130 for a Ctrl-C). `measured()` says whether `doc` holds a figure yet: a block
    stopped before its first one writes nothing, so it cannot replace an earlier run's file at `path` with an
    empty one (the error says the file was left as it was). A `path` naming a folder never gets here: --json's type
    (json_file) refuses it before any run."""
    try:
        yield doc
    except BaseException as e:  # a bug in the script too: the figures are kept first, then its traceback
        ctrl_c, failed = isinstance(e, KeyboardInterrupt), isinstance(e, RunFailed)
        stopped = "interrupted (Ctrl-C)" if ctrl_c else str(e) if failed else f"{type(e).__name__}: {e}"
        doc.update(complete=False, stopped=stopped)
        if measured():
            write_json(path, doc)
            kept = f"what was measured before is in {path} (complete: false)"
        else:
            kept = f"nothing was measured; {path} was {'left as it was' if Path(path).exists() else 'not written'}"
        print(f"{prog}: stopped: {stopped}; {kept}", file=sys.stderr)
        if not (ctrl_c or failed):
            raise
        raise SystemExit(130 if ctrl_c else 1) from None
    doc.update(complete=True)
    write_json(path, doc)


# --- flags: the backends' own checks (data.contract), so a value they would refuse is refused here first, in one line
# (exit 2), before any child starts; a child that refused it only failed the benchmark (exit 1) ---------------------

# positive_int (> 0) and positive_float (a finite number > 0) are data.contract's, imported above
run_seed = seed_number  # 0 .. 2**32 - 1, as the backends' --seed
run_threads = thread_count  # 0 (all cores) .. 1024, passed on to the backends' --threads
DATASET_NAMES = tuple(sorted(DATASETS))  # what the backends' --dataset accepts
MODEL_NAMES = MODELS



def own_threads(text: str) -> int:
    """Threads for a script that sets them itself (torch.set_num_threads, threadpoolctl): 1 .. 1024."""
    v = thread_count(text)
    if v == 0:
        raise argparse.ArgumentTypeError("must be > 0 (this script sets its thread count itself)")
    return v


def json_file(text: str) -> str:
    """--json FILE: `~` expanded; an existing folder is refused before anything runs."""
    path = user_path(text)
    if Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name")
    return path


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help shows the module docstring as written (its lists and line breaks) and each flag's default after its
    help; a flag whose default is None, or a switch, says in its own help what happens without it."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0 or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def description(doc: str) -> str:
    """A script's docstring for --help: all of it but the `python -m benchmarks.NAME [...]` lines (argparse
    prints its own usage line), so no sentence is cut."""
    keep, usage = [], False
    for line in doc.strip().splitlines():
        text = line.strip()
        usage = text.startswith("python -m benchmarks.") or (usage and text.startswith("["))
        if not usage:
            keep.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(keep)).strip()


RESULTS_HELP = ("write the figures here; a failed run or a Ctrl-C writes those measured before it (\"complete\": "
                "false), or nothing (an earlier file is kept) when there were none")


def add_data_flags(p: argparse.ArgumentParser, models: str = "mlp,cnn") -> None:
    """--dataset (default fashion_mnist) and --models (comma-separated, default `models`)."""
    p.add_argument("--dataset", choices=DATASET_NAMES, default="fashion_mnist", help="dataset every run trains on")
    p.add_argument("--models", type=comma_list("model", MODEL_NAMES), default=models,
                   help=f"comma-separated, from {', '.join(MODEL_NAMES)}")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """--epochs, --batch-size and --threads, each passed on to every training run."""
    p.add_argument("--epochs", type=positive_float, default=1.0, help="epochs each run trains")
    p.add_argument("--batch-size", type=positive_int, default=128, help="samples per optimizer step")
    p.add_argument("--threads", type=run_threads, default=2, help="intra-op threads of each run, 0 = all cores")


def add_json_flag(p: argparse.ArgumentParser, name: str, help: str = RESULTS_HELP) -> None:
    """--json FILE, default bench-out/<name>.json; `help` for the scripts that write only at their end."""
    p.add_argument("--json", type=json_file, metavar="FILE", default=f"bench-out/{name}.json", help=help)


def parser(name: str, doc: str) -> OneLineParser:
    """A benchmark's parser: `python -m benchmarks.NAME`, its docstring as the description, a bad flag refused in
    one line with exit 2."""
    return OneLineParser(prog=f"python -m benchmarks.{name}", description=description(doc),
                         formatter_class=HelpFormatter)


def peak(backend: str, precision: str = "32", n_cpu: int = 1024, n_gpu: int = 8192, threads: int = 0) -> dict:
    """The backend's matmul peak through its job runner's `peak` op (the probe `python -m compare`
    uses): {"device", "precision", "matmul_n", "peak_flops", "best_s", ...}."""
    return run_job(backend, {"op": "peak", "precision": precision, "n_cpu": n_cpu, "n_gpu": n_gpu},
                   f"{backend} peak ({precision})", threads)


def run_job(backend: str, job: dict, what: str, threads: int = 0) -> dict:
    """One op of the backend's job runner (python -m tf_impl.jobs / torch_impl.jobs) in a child; its JSON out."""
    from data.contract import write_json_atomic
    with tempfile.TemporaryDirectory() as tmp:
        jobs, out = Path(tmp) / "jobs.json", Path(tmp) / "out.json"
        write_json_atomic(jobs, {"threads": threads, "deterministic": False, "jobs": [{**job, "out": str(out)}]})
        proc = _child([f"{MODULES[backend]}.jobs", str(jobs)], what, 600, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0 or not out.exists():
            raise RunFailed(f"{what} exited {proc.returncode}: {proc.stderr[-800:]}")
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


def row_line(row: list, headers: list) -> str:
    """One table row as a progress line, printed as its run ends: "backend tf, model cnn, batch 32, ..."
    (the table itself comes at the end)."""
    return ", ".join(f"{h} {c}" for h, c in zip(headers, row))


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), e.g. "AMD EPYC"; None where it is not there. This
    project's CI machine was an Intel Xeon one day and an AMD EPYC the next, and the figures moved with it."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or None
    except OSError:
        pass
    return None


def machine() -> str:
    import platform
    cpu = " ".join(filter(None, [platform.processor() or platform.machine(), cpu_model()]))
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def stamp() -> dict:
    """When and where a figure was measured, for every script's JSON."""
    import datetime
    return {"date": str(datetime.date.today()), "machine": machine()}
