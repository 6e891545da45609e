"""Child processes for the comparison: one training run per (seed, backend, model), one after another,
each streaming its evaluation lines with a prefix; plus one probe per backend (the parity logits from
the shared initial weights and the device's matmul peak). This process never imports a framework:
`python -m tf_impl ...`, `python -m torch_impl ...` and their job runners do the work, exchanging
JSON and .npz files in the run folder.

    run folder/
      comparison.json              the options (what --resume continues)
      init-<model>-s<seed>.npz     the shared initial weights both backends load
      <backend>-<model>-s<seed>.json   each RunResult
      logs/<name>.out.log, .err.log    each child's stdout and stderr
      checkpoints/<name>/          a run's checkpoints while it is unfinished (removed when it finishes)
      probe/                       parity inputs and logits, peak-<backend>.json
      .lock                        held by the compare working in the folder (see `hold_folder`)

Ctrl-C (SIGINT) or SIGTERM: the current child is asked to stop (it stops at its next step, writes a
checkpoint there and an "interrupted" result), finished runs are kept, no new run starts; a second
Ctrl-C kills the child. --resume continues an unfinished run from its newest checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data import arch, locks, weights as neutral
from data.contract import EXIT_INTERRUPTED, ConfigError, RunConfig, atomic_path, default_loop, write_json_atomic
from data.loop import STOP_SIGNALS, checkpoint_names, steps_per_block

from .metrics import FINISHED

ROOT = Path(__file__).resolve().parents[1]  # the repository: children import data, tf_impl, torch_impl from here
BACKENDS = ("tf", "torch")
PARITY_BATCH = 128  # test images the parity logits are computed on (the first ones of the test split)
STOP_GRACE_S = 60  # seconds a child may take to write its result after SIGINT before it is killed
STDERR_TAIL_LINES = 12  # lines of a crashed child's stderr shown in the table notes and report
PEAK_MATMUL_N = {"cpu": 1024, "gpu": 8192}  # square matmul size for the peak probe (FLOPs = 2 n^3)
PEAK_BUDGET_S = 1.5  # seconds of repeated matmuls per probe; the best repetition counts

# Run flags every child gets explicitly (so the command in the logs reproduces the run); other RunConfig
# fields go to the children only when they differ from RunConfig's defaults.
ALWAYS_PASSED = ("dataset", "steps", "epochs", "batch_size", "optimizer", "lr", "schedule", "eval_every",
                 "threads", "precision", "data_dir")
PASSED_IF_SET = ("beta_1", "beta_2", "epsilon", "momentum", "nesterov", "warmup_steps", "decay_steps",
                 "decay_rate", "target_accuracy", "eval_batch_size", "widths", "verify", "train_limit", "val_fraction",
                 "devices", "tensorboard", "steps_per_call", "dropout")
TORCH_ONLY = ("adam_impl",)  # tf_impl refuses --adam-impl (Keras has one Adam)


@dataclass
class Plan:
    """What one comparison runs. `run_flags` holds the RunConfig fields shared by every child."""
    dataset: str
    backends: list
    models: list
    seeds: list
    init: str  # "shared": one numpy draw per (model, seed) both backends load; "native": each framework's own
    run_flags: dict
    out: Path
    total_steps: int  # optimizer steps per run (resolved from --steps or --epochs)
    steps_per_epoch: int
    input_shape: tuple
    num_classes: int
    widths: tuple | None = None
    env: dict = field(default_factory=dict)  # extra environment for every child (e.g. KLC_OFFLINE=1)
    loops: dict = field(default_factory=lambda: {b: default_loop(b) for b in BACKENDS})  # backend -> --loop

    @property
    def eval_every(self) -> int:
        return self.run_flags["eval_every"]

    @property
    def threads(self) -> int:
        return self.run_flags["threads"]

    def runs(self) -> list:
        """(seed, backend, model) in launch order: the MLP first in each backend (it is the reference)."""
        models = sorted(self.models, key=lambda m: m != "mlp")
        return [(s, b, m) for s in self.seeds for b in self.backends for m in models]


def run_name(backend: str, model: str, seed: int) -> str:
    return f"{backend}-{model}-s{seed}"


def init_path(folder: Path, model: str, seed: int) -> Path:
    return Path(folder) / f"init-{model}-s{seed}.npz"


def child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, **(extra or {}))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter stays out of the logs
    env["PYTHONUNBUFFERED"] = "1"  # evaluation lines arrive as they are printed
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _flag(name: str, value) -> list:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        if name == "verify":
            return [] if value else ["--no-verify"]
        return [flag] if value else []
    if isinstance(value, (list, tuple)):
        return [flag, ",".join(str(v) for v in value)]
    return [flag, str(value)]


def checkpoint_dir(plan: Plan, backend: str, model: str, seed: int) -> Path:
    return Path(plan.out) / "checkpoints" / run_name(backend, model, seed)


def checkpoint_every(plan: Plan) -> int:
    """Steps between a run's checkpoints, about ten per run; a Ctrl-C writes one where it stops besides.
    A multiple of --eval-every (they land on evaluation steps, so no timed chunk and no Lightning block
    changes), or, when the run evaluates only at its end (--eval-every 0), of the steps per Lightning
    block that the run has without checkpoints (so its blocks stay the same)."""
    unit = plan.eval_every or steps_per_block(RunConfig(
        steps_per_call=plan.run_flags.get("steps_per_call") or RunConfig.steps_per_call,
        devices=plan.run_flags.get("devices") or 1, eval_every=0), plan.total_steps)
    return unit * max(1, math.ceil(plan.total_steps // unit / 10))


def train_command(plan: Plan, backend: str, model: str, seed: int, resume: bool = False) -> list:
    """argv of one training child; `resume`: continue from the checkpoints an earlier attempt left."""
    defaults = RunConfig().to_dict()
    cmd = [sys.executable, "-m", f"{backend}_impl", "--model", model, "--seed", str(seed),
           "--loop", plan.loops.get(backend, default_loop(backend))]
    for name in ALWAYS_PASSED:
        if plan.run_flags.get(name) is not None:
            cmd += _flag(name, plan.run_flags[name])
    for name in PASSED_IF_SET + (TORCH_ONLY if backend == "torch" else ()):
        value = plan.run_flags.get(name)
        if value is not None and value != defaults.get(name) and not (isinstance(value, list) and
                                                                       tuple(value) == defaults.get(name)):
            cmd += _flag(name, value)
    if plan.init == "shared":
        cmd += ["--init-file", str(init_path(plan.out, model, seed))]
    else:
        cmd += ["--init", "native"]
    if checkpoint_every(plan):
        cmd += ["--checkpoint-dir", str(checkpoint_dir(plan, backend, model, seed)),
                "--checkpoint-every", str(checkpoint_every(plan))] + (["--resume"] if resume else [])
    cmd += ["--json", str(Path(plan.out) / f"{run_name(backend, model, seed)}.json"), "--no-progress"]
    return cmd


# --- signals: stop the current child, keep what is finished ---------------------------------------------

def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child and every process in its session (it leads one: start_new_session): Lightning's DDP
    ranks > 0 are its children and hold its stdout, so killing the child alone left them running, and the
    harness reading that pipe until they gave up (up to the DDP timeout)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass


class StopControl:
    """SIGINT/SIGTERM handling while children run. The children live in their own session, so a
    terminal's Ctrl-C reaches only this process, which forwards exactly one SIGINT (the child then
    writes its "interrupted" result); a second Ctrl-C kills the child; a third stops the harness at once
    (the report is still written, from the runs finished so far)."""

    def __init__(self):
        self.requests = 0
        self.child: subprocess.Popen | None = None
        self._old = {}

    @property
    def stopped(self) -> bool:
        return self.requests > 0

    def _handle(self, signum, frame):
        self.requests += 1
        child = self.child
        if child is not None and child.poll() is None:
            if self.requests == 1:
                try:
                    child.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass
            else:
                kill_group(child)
        if self.requests == 1:
            print("\ncompare: stopping after the current run's result is written (Ctrl-C again to kill it)",
                  file=sys.stderr, flush=True)
        elif self.requests >= 3:  # the user insists: stop this process too (the report keeps the runs so far)
            raise KeyboardInterrupt

    def __enter__(self):
        for sig in STOP_SIGNALS:  # SIGHUP too: a closed terminal killed the harness before it wrote the report
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


@dataclass
class Outcome:
    """How a child ended."""
    returncode: int
    seconds: float
    stderr_tail: list = field(default_factory=list)
    stopped: bool = False  # a stop was requested while it ran

    def describe(self) -> str:
        rc = self.returncode
        if rc < 0:
            try:
                return f"killed by signal {signal.Signals(-rc).name} (exit status {rc})"
            except ValueError:
                return f"killed by signal {-rc} (exit status {rc})"
        return f"exit status {rc}"


def _tail(path: Path, n: int = STDERR_TAIL_LINES, start: int = 0) -> list:
    """The last `n` non-empty lines of `path` from byte `start` on (this attempt's part of the log)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return [ln[:300] for ln in lines[-n:]]


def launch(cmd: list, prefix: str, log_stem: Path, control: StopControl | None = None,
           echo=print, env: dict | None = None) -> Outcome:
    """Run `cmd`, echoing each stdout line as "<prefix> | <line>" and keeping stdout and stderr in
    <log_stem>.out.log / .err.log, appended to: a resumed run's logs keep the earlier attempt's lines above
    the new command line (they were overwritten). Returns when the child has exited."""
    log_stem = Path(log_stem)
    log_stem.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(f"{log_stem}.err.log", "a") as err, open(f"{log_stem}.out.log", "a") as out:
        start = err.tell()
        if start:
            err.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(cmd)}\n")
            err.flush()
            start = err.tell()
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1,
                                env=child_env(env), start_new_session=True)
        if control is not None:
            control.child = proc
            if control.stopped:  # a stop arrived between runs: do not let this one train
                proc.send_signal(signal.SIGINT)
        try:
            for line in proc.stdout:
                out.write(line)
                line = line.rstrip("\n")
                head, sep, rest = line.partition(" | ")
                if sep and head in BACKENDS and rest.startswith("note: "):
                    continue  # a data note: compare said it once, before the runs (it stays in the log)
                echo(f"{prefix} | {rest if sep and head in BACKENDS else line}")
            try:
                proc.wait(timeout=STOP_GRACE_S if control is not None and control.stopped else None)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait()
        finally:
            if proc.poll() is None:  # an exception in this process: never leave the child behind
                kill_group(proc)
                proc.wait()
            if control is not None:
                control.child = None
    return Outcome(proc.returncode, time.perf_counter() - t0, _tail(Path(f"{log_stem}.err.log"), start=start),
                   bool(control and control.stopped))


# --- the shared start ------------------------------------------------------------------------------------

def layers_for(plan: Plan, model: str) -> list:
    return arch.build_layers(model, plan.input_shape, plan.num_classes, plan.widths)


def draw_initial_weights(plan: Plan, seeds=None) -> list:
    """init-<model>-s<seed>.npz for every model and seed (kept when already there, e.g. on --resume)."""
    written = []
    for seed in seeds if seeds is not None else plan.seeds:
        for model in plan.models:
            path = init_path(plan.out, model, seed)
            if not path.is_file():
                neutral.save(path, neutral.initial_weights(layers_for(plan, model), seed))
                written.append(path)
    return written


# --- probes: parity logits and the matmul peak, one child per backend ---------------------------------------

# Each probe is one child with exactly one framework: the backend's job runner computes the logits
# from the shared init on the parity batch, then the fp32 (or bf16) matmul peak on the device that
# framework sees. fp32 is IEEE fp32 on GPUs too: both job runners configure as the training runs do,
# with TF32 off (bf16 probes measure bf16).


def parity_inputs(plan: Plan, test_images: np.ndarray) -> Path:
    """The fixed parity batch (the first PARITY_BATCH test images, normalised as the stream does)."""
    from data.stream import normalize
    path = Path(plan.out) / "probe" / "parity-inputs.npz"
    if not path.is_file():  # written whole or not at all: a truncated file was reused by every --resume
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=normalize(test_images[:PARITY_BATCH]))
    return path


def probe(plan: Plan, test_images: np.ndarray, control: StopControl | None = None, echo=print,
          launcher=None) -> dict:
    """Parity and peak for every backend. Returns {"peaks": {backend: {...}}, "parity": {model: {...}},
    "errors": [...]}; stored in probe/probe.json and reused by --resume."""
    launcher = launcher or launch
    folder = Path(plan.out) / "probe"
    stored = folder / "probe.json"
    if stored.is_file():
        try:
            probe = json.loads(stored.read_text())
            if isinstance(probe, dict) and {"peaks", "parity"} <= set(probe):
                return probe
        except (OSError, ValueError):
            pass  # damaged: measured again, as a damaged run result is run again
    folder.mkdir(parents=True, exist_ok=True)
    parity_seed = plan.seeds[0]
    draw_initial_weights(plan, [parity_seed])
    inputs = parity_inputs(plan, test_images)
    with_parity = len(plan.backends) >= 2
    peaks, errors = {}, []
    for backend in plan.backends:
        if control is not None and control.stopped:
            break
        jobs = [{"op": "logits", "model": m, "input_shape": list(plan.input_shape), "num_classes": plan.num_classes,
                 "widths": list(plan.widths) if plan.widths else None,
                 "weights": str(init_path(plan.out, m, parity_seed)), "inputs": str(inputs),
                 "out": str(folder / f"logits-{backend}-{m}.npz")} for m in plan.models] if with_parity else []
        peak_file = folder / f"peak-{backend}.json"
        jobs.append({"op": "peak", "precision": plan.run_flags.get("precision", "32"), "n_cpu": PEAK_MATMUL_N["cpu"],
                     "n_gpu": PEAK_MATMUL_N["gpu"], "budget_s": PEAK_BUDGET_S, "out": str(peak_file)})
        jobs_file = folder / f"jobs-{backend}.json"
        write_json_atomic(jobs_file, {"threads": plan.threads, "deterministic": False, "jobs": jobs})
        cmd = [sys.executable, "-m", f"{backend}_impl.jobs", str(jobs_file)]
        outcome = launcher(cmd, f"{backend:<5} probe", folder / f"probe-{backend}", control, echo, env=plan.env)
        if outcome.returncode == 0 and peak_file.is_file():
            peaks[backend] = json.loads(peak_file.read_text())
        else:
            errors.append(f"{backend} probe: {outcome.describe()}" +
                          (f": {outcome.stderr_tail[-1]}" if outcome.stderr_tail else ""))
    parity = {}
    if with_parity and all(b in peaks for b in plan.backends):
        a, b = plan.backends[0], plan.backends[1]
        for m in plan.models:
            la, lb = (np.load(folder / f"logits-{x}-{m}.npz")["logits"] for x in (a, b))
            parity[m] = {"max_abs_logit_diff": float(np.max(np.abs(la.astype(np.float64) - lb))),
                         "backends": [a, b], "batch": int(len(la)), "seed": parity_seed}
    result = {"peaks": peaks, "parity": parity, "errors": errors}
    if not errors and not (control is not None and control.stopped):
        write_json_atomic(stored, result)
    return result


# --- the runs ----------------------------------------------------------------------------------------------

def read_result(path: Path) -> dict | None:
    """The RunResult at `path`, or None when there is none or it is damaged (a damaged one is run again)."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def foreign(result: dict, plan: Plan, backend: str, model: str, seed: int) -> str:
    """Why a RunResult found in the folder is not (backend, model, seed) of this plan, or "" when it is. A result
    of another budget or dataset (a backend's --json pointed here) was kept, and one without the keys the report
    reads ended the comparison in a KeyError."""
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    found = {"backend": result.get("backend"), "model": result.get("model"), "seed": config.get("seed"),
             "dataset": config.get("dataset", plan.dataset), "steps": result.get("total_steps", plan.total_steps)}
    wanted = {"backend": backend, "model": model, "seed": seed, "dataset": plan.dataset, "steps": plan.total_steps}
    differ = [f"{k} {found[k]}, not {wanted[k]}" for k in wanted if found[k] != wanted[k]]
    missing = [k for k, kind in (("curve", list), ("final", dict), ("throughput", dict)) if not isinstance(result.get(k), kind)]
    return "; ".join(differ + ([f"no {', '.join(missing)}"] if missing else []))


def load_finished(path: Path) -> dict | None:
    """The RunResult at `path` when it is a finished run (status ok or diverged), else None."""
    result = read_result(path)
    return result if result is not None and result.get("status") in FINISHED else None


def failed_result(plan: Plan, backend: str, model: str, seed: int, outcome: Outcome, cmd: list) -> dict:
    """A RunResult for a child that left none: its exit status and the tail of its stderr."""
    status = "interrupted" if outcome.stopped else "failed"
    message = outcome.describe() + (f"; stderr: {outcome.stderr_tail[-1]}" if outcome.stderr_tail and status == "failed"
                                    else "")
    if outcome.stopped and outcome.returncode in (-signal.SIGINT, EXIT_INTERRUPTED):  # the one SIGINT sent, before
        # the child's loop took over stops (a loop that has begun writes its result): it read "killed by signal
        # SIGINT", which the README gives a second Ctrl-C's kill
        message = f"stopped while starting, before training began ({message}); --resume runs it from the start"
    loop = plan.loops.get(backend, default_loop(backend))
    cfg = dict(plan.run_flags, model=model, seed=seed, loop=loop)
    return {"backend": backend, "model": model, "loop": loop, "precision": plan.run_flags.get("precision"),
            "dataset": plan.dataset, "data_source": None,
            "status": status, "message": message,
            "stderr_tail": outcome.stderr_tail, "command": cmd, "process_seconds": round(outcome.seconds, 3),
            "config": cfg, "versions": {}, "device": None,
            "threads": plan.threads, "params": None, "flops_per_sample": None, "total_steps": plan.total_steps,
            "curve": [], "train_losses": [],
            "final": {"steps": None, "test_loss": None, "test_accuracy": None, "train_seconds": None,
                      "wall_seconds": round(outcome.seconds, 4)},
            "throughput": {"train_samples_per_s": None, "infer_samples_per_s": None, "warmup_s": None,
                           "timed_steps": 0}}


def results_so_far(plan: Plan, results: list) -> list:
    """`results` completed, in plan order, by the finished runs already in the folder that run_all had not
    reached (kept from an earlier session): what the report holds when a third Ctrl-C ends run_all early."""
    have = {(r["backend"], r["model"], (r.get("config") or {}).get("seed", 0)): r for r in results}
    out = []
    for seed, backend, model in plan.runs():
        r = have.get((backend, model, seed)) or load_finished(Path(plan.out) / f"{run_name(backend, model, seed)}.json")
        if r is not None and not foreign(r, plan, backend, model, seed):
            out.append(r)
    return out


def run_all(plan: Plan, control: StopControl | None = None, echo=print, launcher=None,
            results: list | None = None) -> list:
    """Every (seed, backend, model) run, one child at a time; finished runs already in the folder are
    kept and skipped. Returns the RunResults in launch order (failed children included), appended to
    `results` as they come, so a caller holding that list keeps them when a third Ctrl-C ends this early."""
    launcher = launcher or launch
    if plan.init == "shared":
        draw_initial_weights(plan)
    results = [] if results is None else results
    runs = plan.runs()
    for i, (seed, backend, model) in enumerate(runs, 1):
        name = run_name(backend, model, seed)
        json_path, folder = Path(plan.out) / f"{name}.json", checkpoint_dir(plan, backend, model, seed)
        previous = read_result(json_path)
        label = f"[{i}/{len(runs)}] {backend} {model}" + (f" seed {seed}" if len(plan.seeds) > 1 else "")
        if previous is not None and (why := foreign(previous, plan, backend, model, seed)):
            echo(f"{label}: {json_path} is not this comparison's run ({why}); running it")
            previous = None
        if previous is not None and previous.get("status") in FINISHED:
            echo(f"{label}: kept from {json_path} ({previous['status']}), not re-run")
            remove_checkpoints(folder)  # left if a stop came right before
            results.append(previous)
            continue
        if control is not None and control.stopped:
            continue  # no new run starts; finished ones further on are still collected
        resume = bool(checkpoint_names(folder))
        earlier = float((previous or {}).get("process_seconds") or 0.0) if resume else 0.0  # the processes it continues
        json_path.unlink(missing_ok=True)  # an interrupted or failed earlier attempt
        cmd = train_command(plan, backend, model, seed, resume=resume)
        echo(f"{label}: {' '.join(Path(c).name if c == sys.executable else c for c in cmd[1:])}")
        prefix = f"{backend:<5} {model:<4}" + (f" s{seed}" if len(plan.seeds) > 1 else "")
        outcome = launcher(cmd, prefix, Path(plan.out) / "logs" / name, control, echo, env=plan.env)
        result = read_result(json_path)
        if result is None:
            result = failed_result(plan, backend, model, seed, outcome, cmd)
            result["process_seconds"] = round(earlier + outcome.seconds, 3)
            if resume and any("--resume:" in line for line in outcome.stderr_tail):  # refused: it would be again
                result["message"] += (f"; it was resumed from {folder}: delete that folder to run it again from "
                                      f"step 0")
            write_json_atomic(json_path, result)
            echo(f"{label}: {result['status']}: {result['message']}")
            for line in outcome.stderr_tail if result["status"] == "failed" else []:
                echo(f"{prefix} ! {line}")
        else:
            result.update(command=cmd, process_seconds=round(earlier + outcome.seconds, 3))  # its processes' lives
            write_json_atomic(json_path, result)
            if result.get("status") != "ok":
                echo(f"{label}: {result.get('status')}: {result.get('message')}")
        if result.get("status") in FINISHED:  # nothing left to resume
            remove_checkpoints(folder)
        results.append(result)
    return results


def remove_checkpoints(folder: Path) -> None:
    """A finished run's checkpoint folder, and checkpoints/ once no run has one."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


@contextmanager
def hold_folder(folder: Path):
    """One compare at a time in a run folder: two `--resume X` at once launched the same runs into the same
    checkpoint folders. folder/.lock is held while this compare works (data.locks: it ends with the process,
    so a crash leaves no stale lock); a second compare gets a ConfigError naming the holder."""
    lock = Path(folder) / ".lock"
    holder = locks.hold(lock)
    if holder:
        raise ConfigError(f"{folder} is in use by another compare ({holder}); wait for it to end or stop it, "
                          f"then --resume {folder}")
    try:
        yield
    finally:
        locks.release(lock)
