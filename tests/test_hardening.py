"""Issue-8 cases not covered beside their code: SIGTERM mid-run, unwritable output and a failed
write that must not leave half a JSON, and a diverged run inside a comparison."""
from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time

import pytest

from data.contract import write_json_atomic

from conftest import ROOT, child_env, run_module

SMALL = ["--dataset", "mnist", "--train-limit", "2048", "--batch-size", "32", "--threads", "2", "--no-progress"]


@pytest.mark.parametrize("module", ["tf_impl", "torch_impl"])
def test_sigterm_mid_run_keeps_the_partial_curve(tmp_path, module):
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", module, *SMALL, "--model", "cnn", "--steps", "5000",
                             "--eval-every", "20", "--json", str(out)], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline and "step     40/5000" not in seen:  # two evaluations done
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    r = json.loads(out.read_text())
    assert proc.returncode == 130, err[-1500:]
    assert r["status"] == "interrupted" and [p["step"] for p in r["curve"]][:2] == [20, 40]
    # it stops at the next step boundary: the steps since the last evaluation are recorded too
    assert len(r["train_losses"]) == r["final"]["steps"] >= 40 and r["message"] == f"interrupted at step {r['final']['steps']}"
    assert "Traceback" not in err and len([l for l in err.splitlines() if "interrupted" in l]) == 1


def test_json_into_an_impossible_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_module("tf_impl", *SMALL, "--model", "mlp", "--steps", "10", "--eval-every", "10",
                      "--json", blocker / "r.json", timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--json {blocker / 'r.json'}: {blocker} (or a folder above it) is a file, not a folder" in lines[0]
    assert "step " not in proc.stdout  # refused before any training, so nothing computed is lost


@pytest.mark.parametrize("module", ["tf_impl", "torch_impl"])
def test_a_tensorboard_folder_that_cannot_be_written_is_refused_before_training(tmp_path, module):
    """It failed after the data had loaded, with an errno line that named no flag; in compare, after the
    probes, as one failed run per backend and model."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_module(module, *SMALL, "--model", "mlp", "--steps", "10", "--eval-every", "10",
                      "--tensorboard", blocker / "tb", timeout=300)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"--tensorboard {blocker / 'tb'}: {blocker / 'tb'} (or a folder above it) is a file" in lines[0]
    assert "step " not in proc.stdout


def test_an_output_folder_on_a_read_only_file_system_is_refused_naming_the_flag(tmp_path, monkeypatch):
    """A read-only --json folder (root passes permission bits, so only a write tells) trained the whole run,
    then failed naming the temp file '.r.json.PID.tmp': the result was lost."""
    import os
    import tempfile
    from data.contract import ConfigError, check_writable
    check_writable("--json", tmp_path / "new", tmp_path / "new" / "r.json")  # made, written, left empty
    assert (tmp_path / "new").is_dir() and not any((tmp_path / "new").iterdir())

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", read_only)
    with pytest.raises(ConfigError, match=rf"^--json {tmp_path}/r.json: cannot write in {tmp_path} \(Read-only file "
                                          r"system\)$"):
        check_writable("--json", tmp_path, tmp_path / "r.json")


@pytest.mark.parametrize("module,flag", [("torch_impl", "--json"), ("tf_impl", "--save-weights")])
def test_an_output_file_named_by_a_folder_is_refused_before_training(tmp_path, module, flag):
    """--json or --save-weights naming an existing folder trained the whole run, then failed at the rename
    (exit 1, the result lost; with --save-weights the JSON said ok and the exit was 1)."""
    folder = tmp_path / "out"
    folder.mkdir()
    proc = run_module(module, *SMALL, "--model", "mlp", "--steps", "10", "--eval-every", "10", flag, folder,
                      timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and f"{flag} {folder} is a folder; give a file name in it" in lines[0], proc.stderr
    assert "step " not in proc.stdout and list(folder.iterdir()) == []


@pytest.mark.parametrize("module", ["tf_impl", "torch_impl"])
def test_a_checkpoint_folder_in_use_by_a_live_run_is_refused(tmp_path, module):
    """Two runs in one --checkpoint-dir (a --resume started twice; a child that outlived a SIGKILLed compare
    while compare --resume started it again) wrote over each other's checkpoints. A run holds the folder
    for its life; here this test process holds it, as a live run would. The lock adds no file to it."""
    from data import locks
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    args = [*SMALL, "--model", "mlp", "--steps", "10", "--eval-every", "10", "--checkpoint-dir", ckpt,
            "--checkpoint-every", "10"]
    assert locks.hold(ckpt) is None
    try:
        proc = run_module(module, *args, timeout=300)
        assert proc.returncode == 2, proc.stderr[-1500:]
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and f"--checkpoint-dir {ckpt} is in use by another run" in lines[0], proc.stderr
        assert "step " not in proc.stdout and list(ckpt.iterdir()) == []
    finally:
        locks.release(ckpt)
    proc = run_module(module, *args, timeout=300)  # given back: the run goes ahead
    assert proc.returncode == 0 and [p.suffix for p in ckpt.iterdir() if p.name.startswith("step-0000010")], proc.stderr


def test_a_tilde_in_a_path_flag_is_the_home_folder(tmp_path):
    """bash expands ~ in `--json ~/r.json` but not in `--json=~/r.json`: the run wrote ./~/r.json."""
    proc = run_module("torch_impl", *SMALL, "--model", "mlp", "--steps", "10", "--eval-every", "10",
                      "--loop", "raw", "--json=~/r.json", "--checkpoint-dir=~/ck", "--checkpoint-every", "10", timeout=300,
                      env=child_env(HOME=tmp_path / "home"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert json.loads((tmp_path / "home" / "r.json").read_text())["status"] == "ok"
    assert (tmp_path / "home" / "ck").is_dir() and not (tmp_path / "~").exists()


def test_a_filesystem_without_flock_runs_unprotected_not_refused(tmp_path, monkeypatch):
    """ENOLCK/EOPNOTSUPP (some network mounts): the locks and the TensorBoard claim are skipped, as before
    there were any, instead of failing every run and every comparison."""
    import fcntl

    from data import locks, tensorboard as tb

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert locks.hold(tmp_path) is None and locks.hold(tmp_path / ".lock") is None
    locks.release(tmp_path)
    locks.release(tmp_path / ".lock")
    assert tb.claim(tmp_path / "tb" / "tf-mlp-s0") is True
    tb.release_claim(tmp_path / "tb" / "tf-mlp-s0")


def test_failed_write_keeps_the_earlier_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"runs": 1})

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr("data.contract.os.fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(path, {"runs": 2})
    assert json.loads(path.read_text()) == {"runs": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_unserialisable_result_leaves_the_earlier_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"ok": True})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"loss": float("nan")})  # strict JSON: NaN is refused, not written
    assert json.loads(path.read_text()) == {"ok": True} and len(list(tmp_path.iterdir())) == 1


def test_checkpoint_files_are_committed_whole_and_pruned_by_step(tmp_path):
    """The one writer all three loops use (data.loop): a write that dies halfway (Lightning writes its
    .ckpt in place) leaves the newest complete checkpoint newest; the newest two are kept, by step
    number rather than by name, with their companion files; stale temporaries go at the next commit."""
    from data.loop import check_checkpoint_dir, checkpoint_files, checkpoint_paths, commit_checkpoint
    from data.contract import ConfigError, RunConfig

    def write(step, suffix=".ckpt", companion=False):
        tmp, final = checkpoint_paths(tmp_path / "ck", step, suffix)
        tmp.write_bytes(b"x" * step)
        if companion:
            final.with_suffix(".json").write_text("{}")
        commit_checkpoint(tmp, final, companions=(".json",) if companion else ())
    write(100)
    tmp, _ = checkpoint_paths(tmp_path / "ck", 200, ".ckpt")
    tmp.write_bytes(b"half")  # killed here: never renamed
    assert [p.name for p in checkpoint_files(tmp_path / "ck", ".ckpt")] == ["step-0000100.ckpt"]
    write(9_999_999)
    write(10_000_000)  # eight digits: sorts before step-9999999 by name, after it by step
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step-10000000.ckpt", "step-9999999.ckpt"]
    for step in (10, 20, 30):
        write(step, ".npz", companion=True)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir() if p.suffix in (".npz", ".json")) == [
        "step-0000020.json", "step-0000020.npz", "step-0000030.json", "step-0000030.npz"]
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        check_checkpoint_dir(RunConfig(checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=10))
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / ".step-0000100.tmp.pt").write_bytes(b"half")  # a killed write alone is no checkpoint
    check_checkpoint_dir(RunConfig(checkpoint_dir=str(tmp_path / "stale"), checkpoint_every=10))
    assert checkpoint_files(tmp_path / "none", ".pt") == [] and checkpoint_files(None, ".pt") == []


@pytest.mark.slow
def test_diverged_run_in_a_comparison_is_reported_and_the_others_finish(tmp_path):
    out = tmp_path / "run"
    proc = run_module("compare", "--dataset", "mnist", "--backends", "tf", "--models", "mlp,cnn", "--steps", "20",
                      "--eval-every", "10", "--batch-size", "32", "--train-limit", "2048", "--optimizer", "sgd",
                      "--lr", "1e6", "--out", out, timeout=600)
    results = json.loads((out / "results.json").read_text())
    statuses = {r["model"]: r["status"] for r in results["runs"]}
    # the MLP diverges at step 3; the CNN (run after it) is carried out to its end whether or not its
    # ReLUs die before the loss overflows (which depends on the data order)
    assert statuses["mlp"] == "diverged" and statuses["cnn"] in ("ok", "diverged"), proc.stdout[-2000:]
    assert {r["model"]: r["final"]["steps"] for r in results["runs"] if r["status"] == "ok"} in ({}, {"cnn": 20})
    assert "diverged" in (out / "report.md").read_text()
    assert proc.returncode == 3 and "Traceback" not in proc.stderr


def test_resume_picks_the_newest_readable_checkpoint_of_this_run(tmp_path):
    """data.loop.resume_from, the choice all three loops make: a damaged newest file (a crash mid-write)
    is passed over for the one before, with a note; a folder of another loop's checkpoints is refused
    (it used to start silently at step 0 and write beside them); a checkpoint past the run's steps is
    refused, and one at its last step means the run already finished."""
    from data.contract import ConfigError, RunConfig
    from data.errors import DataError
    from data.loop import AlreadyFinished, resume_from

    ck = tmp_path / "ck"
    ck.mkdir()
    cfg = RunConfig(checkpoint_dir=str(ck), checkpoint_every=10, resume=True)
    notes = []

    def read(path):
        blob = path.read_bytes()
        if not blob.startswith(b"ok"):
            raise DataError(f"{path}: not a readable torch file (truncated)")
        return int(path.stem.split("-")[1]), None, blob

    assert resume_from(cfg, ".pt", read, 40, notes.append) is None
    assert notes == [f"--resume: no checkpoint in {ck} yet; starting at step 0"]
    (ck / "step-0000010.pt").write_bytes(b"ok 10")
    (ck / "step-0000020.pt").write_bytes(b"\0" * 8)
    notes.clear()
    assert resume_from(cfg, ".pt", read, 40, notes.append) == (ck / "step-0000010.pt", 10, b"ok 10")
    assert len(notes) == 1 and notes[0].startswith("--resume: step-0000020.pt: ") and \
        notes[0].endswith("cannot be read, trying the one before it")
    (ck / "step-0000010.pt").write_bytes(b"")
    with pytest.raises(DataError, match=f"no readable checkpoint in {ck} \\(step-0000020.pt: .*; step-0000010.pt: "):
        resume_from(cfg, ".pt", read, 40, notes.append)
    (ck / "step-0000030.pt").write_bytes(b"ok 30")
    with pytest.raises(ConfigError, match="step-0000030.pt is at step 30, past this run's 25 steps"):
        resume_from(cfg, ".pt", read, 25, notes.append)
    from dataclasses import replace
    assert resume_from(cfg, ".pt", read, 30, notes.append)[1] == 30  # no finished result: the loop writes one
    finished = {"status": "ok", "final": {"steps": 30}}
    (tmp_path / "r.json").write_text(json.dumps(dict(finished, status="interrupted")))
    cfg = replace(cfg, json=str(tmp_path / "r.json"))
    assert resume_from(cfg, ".pt", read, 30, notes.append)[1] == 30
    (tmp_path / "r.json").write_text(json.dumps(finished))
    with pytest.raises(AlreadyFinished, match="is this run's last step \\(30\\) and .*r.json holds its finished"):
        resume_from(cfg, ".pt", read, 30, notes.append)
    with pytest.raises(ConfigError, match="holds another loop's checkpoints \\(step-0000030.pt, ...\\), none of this "
                                          "one's \\(step-\\*.ckpt\\)"):
        resume_from(cfg, ".ckpt", read, 40, notes.append)


def test_checkpoint_flags_and_folder_are_checked_before_training(tmp_path):
    """--checkpoint-every without a folder, or a folder without an interval, were silently ignored (the
    interval still changed Lightning's blocks); a checkpoint folder that cannot exist failed only at the
    first checkpoint, after training, and took the run's result with it."""
    from data.contract import ConfigError, RunConfig, build_parser, config_from_args
    from data.loop import check_checkpoint_dir

    parser = build_parser("x", "x", ("custom",))
    for argv, said in ((["--checkpoint-every", "10"], "--checkpoint-every needs --checkpoint-dir"),
                       (["--checkpoint-dir", "d"], "--checkpoint-dir needs --checkpoint-every K")):
        with pytest.raises(ConfigError, match=said):
            config_from_args(parser.parse_args(argv))
    with pytest.raises(ConfigError, match="with --resume, the K the run was started with"):
        config_from_args(parser.parse_args(["--checkpoint-dir", "d", "--resume"]))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="ck \\(or a folder above it\\) is a file, not a folder"):
        check_checkpoint_dir(RunConfig(checkpoint_dir=str(tmp_path / "file" / "ck"), checkpoint_every=10))
    check_checkpoint_dir(RunConfig(checkpoint_dir=str(tmp_path / "new" / "ck"), checkpoint_every=10))
    assert (tmp_path / "new" / "ck").is_dir()


def test_a_failed_write_mid_run_keeps_the_result(tmp_path, capsys):
    """A checkpoint that cannot be written (disk full) ended the run with an OSError before its result
    was written: the steps and curve so far were lost. Now: status failed, the result kept, exit 1."""
    from data.contract import RunConfig, new_result
    from data.loop import Recorder, execute

    cfg = RunConfig(json=str(tmp_path / "r.json"), steps=20)
    rec = Recorder(cfg, new_result(cfg, "tf"), 20)

    def body():
        rec.add_steps([2.0, 1.5, 1.2, 1.0], 0.1)
        raise OSError(errno.ENOSPC, "No space left on device")
    assert execute(cfg, rec, body) == 1
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["status"] == "failed" and r["train_losses"] == [2.0, 1.5, 1.2, 1.0]
    assert r["message"] == "at step 4: [Errno 28] No space left on device"
    assert capsys.readouterr().err.strip() == "tf: failed: at step 4: [Errno 28] No space left on device"
