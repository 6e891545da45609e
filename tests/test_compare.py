"""The harness's arithmetic and rendering on hand-written RunResults: steps-to-beat-MLP, mean ± std,
MFU, the summary, results.json/.csv, report.md, the PNGs and the terminal table. No training, no framework."""
from __future__ import annotations

import csv
import json
import math

import pytest

from compare import metrics, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def curve(*points, dt: float = 0.5) -> list:
    """[(step, accuracy)] -> a RunResult curve; seconds grow by dt per evaluation."""
    return [{"step": s, "seconds": round(dt * (i + 1), 4), "test_loss": 1.0 - a, "test_accuracy": a}
            for i, (s, a) in enumerate(points)]


def fake_result(backend="tf", model="mlp", seed=0, points=((25, 0.90), (50, 0.95)), status="ok", device="cpu",
                train_sps=10_000.0, infer_sps=50_000.0, flops=1_000_000, message="") -> dict:
    c = curve(*points)
    last = c[-1] if c else None
    return {
        "backend": backend, "model": model, "dataset": "mnist", "data_source": "cache:/x", "status": status,
        "message": message, "config": {"seed": seed, "batch_size": 128, "eval_every": 25},
        "versions": {"python": "3.11", backend: "1.0"}, "device": device, "threads": 2, "params": 1000,
        "flops_per_sample": flops, "curve": c, "train_losses": [1.0, 0.5],
        "final": {"steps": last["step"] if last else 0, "test_loss": last["test_loss"] if last else None,
                  "test_accuracy": last["test_accuracy"] if last else None, "train_seconds": 1.0,
                  "wall_seconds": 2.0},
        "throughput": {"train_samples_per_s": train_sps, "infer_samples_per_s": infer_sps, "warmup_s": 0.4,
                       "warmup_steps": 10, "timed_steps": 40},
        "process_seconds": 6.5,
    }


def fake_context(**extra) -> dict:
    ctx = {"dataset": "mnist", "dataset_label": "mnist", "data_source": "cache:/x", "is_subset": False,
           "train_size": 60_000, "test_size": 10_000,
           "plan": {"backends": ["tf", "torch"], "models": ["mlp", "cnn"], "seeds": [0], "init": "shared",
                    "total_steps": 100, "steps_per_epoch": 468, "eval_every": 25, "threads": 2,
                    "run_flags": {"batch_size": 128, "lr": 0.001, "optimizer": "adam", "schedule": "constant",
                                  "precision": "32", "eval_every": 25, "threads": 2}},
           "peaks": {"tf": {"device": "cpu", "peak_flops": 1e11, "matmul_n": 1024, "precision": "32"},
                     "torch": {"device": "cpu", "peak_flops": 1e11, "matmul_n": 1024, "precision": "32"}},
           "parity": {m: {"max_abs_logit_diff": 3e-7, "backends": ["tf", "torch"], "batch": 128, "seed": 0}
                      for m in ("mlp", "cnn")},
           "probe_errors": [], "devices": {"tf": "cpu", "torch": "cpu"}, "started": "2026-11-29T15:00:00",
           "wall_seconds": 100.0, "interrupted": False, "folder": "runs/x", "argv": ["--dataset", "mnist"]}
    ctx.update(extra)
    return ctx


def four_runs(seed=0) -> list:
    """tf: the CNN passes the MLP's final 0.95 at step 75; torch: it never does."""
    return [fake_result("tf", "mlp", seed, ((25, 0.90), (50, 0.93), (75, 0.94), (100, 0.95)), train_sps=40_000),
            fake_result("tf", "cnn", seed, ((25, 0.85), (50, 0.95), (75, 0.96), (100, 0.97)), train_sps=8_000,
                        flops=25_000_000),
            fake_result("torch", "mlp", seed, ((25, 0.90), (50, 0.93), (75, 0.94), (100, 0.95))),
            fake_result("torch", "cnn", seed, ((25, 0.85), (50, 0.90), (75, 0.93), (100, 0.949)), flops=25_000_000)]


# --- steps to beat -------------------------------------------------------------------------------------

def test_steps_to_beat_first_evaluation_strictly_above():
    c = curve((25, 0.80), (50, 0.91), (75, 0.93))
    assert metrics.steps_to_beat(c, 0.90) == (50, 1.0)


def test_steps_to_beat_never():
    assert metrics.steps_to_beat(curve((25, 0.80), (50, 0.85)), 0.90) == (None, None)


def test_steps_to_beat_tie_is_not_a_beat():
    c = curve((25, 0.90), (50, 0.90), (75, 0.9001))
    assert metrics.steps_to_beat(c, 0.90) == (75, 1.5)
    assert metrics.steps_to_beat(curve((25, 0.90)), 0.90) == (None, None)


def test_steps_to_beat_at_the_first_evaluation():
    assert metrics.steps_to_beat(curve((25, 0.99), (50, 0.995)), 0.95) == (25, 0.5)


def test_steps_to_beat_reads_the_curve_in_step_order_and_skips_missing_accuracy():
    c = list(reversed(curve((25, 0.50), (50, 0.97), (75, 0.98))))
    c.append({"step": 10, "seconds": 0.1, "test_loss": None, "test_accuracy": None})
    assert metrics.steps_to_beat(c, 0.95) == (50, 1.0)


def test_steps_to_beat_without_a_reference_or_curve():
    assert metrics.steps_to_beat(curve((25, 0.99)), None) == (None, None)
    assert metrics.steps_to_beat([], 0.5) == (None, None)


# --- mean, std, MFU ------------------------------------------------------------------------------------

def test_mean_std_is_the_sample_std_over_present_values():
    mean, std, n = metrics.mean_std([200, 275, 300])  # the issue's three Fashion-MNIST seeds
    assert (mean, n) == (775 / 3, 3)
    assert std == pytest.approx(52.0416, abs=1e-4)  # sqrt(((200-258.33)^2 + (275-258.33)^2 + (300-258.33)^2) / 2)
    assert metrics.mean_std([1.0, None, 3.0, float("nan")]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert metrics.mean_std([4.0]) == (4.0, 0.0, 1)
    assert metrics.mean_std([None]) == (None, None, 0)


def test_mfu_is_achieved_training_flops_over_peak():
    r = fake_result(train_sps=8_000, flops=25_000_000)  # 2e11 FLOP/s achieved
    assert metrics.achieved_flops(r) == 2e11
    assert metrics.mfu(r, 4e11) == 0.5
    assert metrics.mfu(r, None) is None
    assert metrics.mfu(fake_result(train_sps=None), 4e11) is None
    ddp = dict(r, devices=2)  # the throughput is the global batch's; the peak one device's
    assert metrics.mfu(dict(ddp, device="NVIDIA H200"), 4e11) == 0.25  # two GPUs: twice the peak
    assert metrics.mfu(ddp, 4e11) == 0.5  # two logical CPU devices share the one CPU that was measured


# --- rows and summary ----------------------------------------------------------------------------------

def test_beat_points_compare_within_backend_and_seed():
    beats = metrics.beat_points(four_runs())
    assert beats == {("tf", "cnn", 0): (75, 1.5), ("torch", "cnn", 0): (None, None)}  # 0.95 at step 50 ties


def test_summary_per_backend():
    s = metrics.summary(four_runs(), eval_every=25)
    assert s["tf"]["steps_to_beat_mlp"] == 75 and s["tf"]["seconds_to_beat_mlp"] == 1.5
    assert s["tf"]["resolution_steps"] == 25
    assert s["torch"]["steps_to_beat_mlp"] is None and s["torch"]["seconds_to_beat_mlp"] is None
    assert s["torch"]["models"]["cnn"]["per_seed"] == {"0": {"steps": None, "seconds": None}}


def test_seeds_give_mean_and_std_rows():
    runs = []
    for seed, beat_step in ((0, 50), (1, 75), (2, 100)):
        runs += [fake_result("tf", "mlp", seed, ((50, 0.90), (100, 0.95))),
                 fake_result("tf", "cnn", seed, [(s, 0.97 if s >= beat_step else 0.90) for s in (25, 50, 75, 100)],
                             train_sps=1000.0 * (seed + 1))]
    rows = {r["model"]: r for r in metrics.rows(runs)}
    cnn = rows["cnn"]
    assert cnn["n"] == 3 and cnn["seeds"] == [0, 1, 2]
    assert cnn["beat_steps"] == (75.0, 25.0, 3)
    assert cnn["train_sps"] == (2000.0, 1000.0, 3)
    assert report.table_cells(cnn)[4] == "75 ± 25"
    assert report.table_cells(cnn)[6] == "2,000 ± 1,000"
    s = metrics.summary(runs, 25)["tf"]
    assert s["steps_to_beat_mlp"] == 75.0 and s["models"]["cnn"]["steps_to_beat_mlp_std"] == 25.0


def test_a_seed_that_never_beats_is_counted_in_the_cell():
    runs = []
    for seed, acc in ((0, 0.97), (1, 0.90)):
        runs += [fake_result("tf", "mlp", seed, ((50, 0.95),)), fake_result("tf", "cnn", seed, ((50, acc),))]
    cnn = next(r for r in metrics.rows(runs) if r["model"] == "cnn")
    assert report.table_cells(cnn)[4] == "50 (1/2 seeds)"


def test_cells_for_reference_never_beat_and_bad_runs():
    rows = {(r["backend"], r["model"]): r for r in metrics.rows(four_runs(), {"tf": 4e11})}
    assert report.table_cells(rows[("tf", "mlp")])[4] == "– (reference)"
    assert report.table_cells(rows[("torch", "cnn")])[4:6] == ["not within budget", "–"]
    tf_cnn = report.table_cells(rows[("tf", "cnn")])
    assert tf_cnn[3] == "97.00 %" and tf_cnn[4] == "75" and tf_cnn[5] == "1.5 s" and tf_cnn[8] == "50.0 %"  # 25e6 * 8000 / 4e11
    assert report.table_cells(rows[("torch", "cnn")])[8] == "–"  # no peak measured for torch here
    failed = fake_result("torch", "cnn", points=(), status="failed", message="exit status -11")
    failed["final"]["test_accuracy"] = None
    diverged = fake_result("tf", "cnn", points=((25, 0.5),), status="diverged", message="loss became nan")
    cells = {r["backend"]: report.table_cells(r) for r in metrics.rows([failed, diverged])}
    assert cells["torch"][3] == "failed"
    assert cells["tf"][3] == "50.00 % (diverged)"


def test_a_cnn_that_ended_early_is_not_called_not_within_budget():
    """A failed or interrupted CNN that had not beaten the MLP yet may still have: unknown, not 'never'."""
    mlp = fake_result("tf", "mlp", 0, ((50, 0.95),))
    failed = fake_result("tf", "cnn", 0, points=(), status="failed", message="exit status -9")
    cut = fake_result("tf", "cnn", 0, points=((25, 0.90),), status="interrupted")
    for run in (failed, cut):
        row = next(r for r in metrics.rows([mlp, run]) if r["model"] == "cnn")
        assert report.table_cells(row)[4:6] == ["– (run ended early)", "–"]
        per_seed = metrics.summary([mlp, run])["tf"]["models"]["cnn"]["per_seed"]
        assert per_seed == {"0": {"steps": None, "seconds": None, "unknown": "ended early"}}  # not a bare null ("never")
    beat_then_cut = fake_result("tf", "cnn", 0, points=((25, 0.96),), status="interrupted")
    row = next(r for r in metrics.rows([mlp, beat_then_cut]) if r["model"] == "cnn")
    assert report.table_cells(row)[4] == "25"  # a beat before the interruption is a beat
    runs = [mlp, fake_result("tf", "cnn", 0, ((50, 0.90),)),  # seed 0 finished without a beat
            fake_result("tf", "mlp", 1, ((50, 0.95),)), dict(failed, config={"seed": 1})]
    row = next(r for r in metrics.rows(runs) if r["model"] == "cnn")
    assert report.table_cells(row)[4] == "not within budget (1 run ended early)"
    runs[1] = fake_result("tf", "cnn", 0, ((50, 0.97),))
    row = next(r for r in metrics.rows(runs) if r["model"] == "cnn")
    assert report.table_cells(row)[4] == "50 (1/2 seeds, 1 run ended early)"


def test_runs_that_ended_early_are_unknown_not_never_and_not_averaged_in(tmp_path, monkeypatch):
    """A diverged CNN read 'not within budget' and a diverged or failed MLP 'no MLP run'; a seed whose MLP
    failed vanished from the CNN's mean without a count; with --target-accuracy the MLP's bar was its
    accuracy where it stopped; a run that diverged inside its warm-up pulled the speed mean down."""
    def whole(r, total=50):
        return dict(r, total_steps=total)
    mlp = whole(fake_result("tf", "mlp", 0, ((50, 0.95),)))
    diverged = whole(fake_result("tf", "cnn", 0, ((25, 0.90),), status="diverged"))
    row = next(r for r in metrics.rows([mlp, diverged]) if r["model"] == "cnn")
    assert report.table_cells(row)[4] == "– (run ended early)"
    for bad in (dict(mlp, status="diverged", final=dict(mlp["final"], test_accuracy=None)),
                dict(mlp, status="failed"), whole(fake_result("tf", "mlp", 0, ((25, 0.95),))),  # stopped at its target
                dict(mlp, status="interrupted")):
        row = next(r for r in metrics.rows([bad, whole(fake_result("tf", "cnn", 0, ((50, 0.97),)))])
                   if r["model"] == "cnn")
        assert report.table_cells(row)[4:6] == ["– (MLP ended early)", "–"], bad
    # three seeds, the MLP of seed 1 failed: the mean is over two, and the table says so
    runs = [mlp, whole(fake_result("tf", "cnn", 0, ((50, 0.97),))),
            dict(mlp, status="failed", config={"seed": 1}), whole(fake_result("tf", "cnn", 1, ((25, 0.97),))),
            dict(mlp, config={"seed": 2}), whole(fake_result("tf", "cnn", 2, ((50, 0.97),)))]
    row = next(r for r in metrics.rows(runs) if r["model"] == "cnn")
    assert report.table_cells(row)[4] == "50 ± 0 (2/3 seeds, 1 MLP ended early)"
    doc = metrics.summary(runs)["tf"]
    assert (doc["beat_in_seeds"], doc["seeds"], doc["models"]["cnn"]["unknown_in_seeds"]) == (2, 3, 1)
    # a CNN stopped at --target-accuracy before beating the MLP: it did not use up its budget
    stopped = whole(fake_result("tf", "cnn", 0, ((25, 0.93),)))
    assert metrics.beat_outcomes([mlp, stopped]) == {("tf", "cnn", 0): "ended early"}
    csv = {(r["model"], r["seed"]): r["steps_to_beat_note"] for r in report.csv_rows(
        [mlp, stopped, dict(mlp, config={"seed": 1}), whole(fake_result("tf", "cnn", 1, ((50, 0.90),)))], fake_context())}
    assert csv == {("mlp", 0): "reference", ("cnn", 0): "run ended early", ("mlp", 1): "reference",
                   ("cnn", 1): "not within budget"}
    assert report.csv_rows([whole(fake_result("tf", "cnn", 0))], fake_context())[0]["steps_to_beat_note"] == "no MLP run"
    # curves.png's dashed bar is the table's: none for an MLP that stopped early (it drew one, and no star)
    plt = report._pyplot()
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    report.plot_curves(tmp_path / "curves.png", [whole(fake_result("tf", "mlp", 0, ((25, 0.95),))),
                                                 whole(fake_result("tf", "cnn", 0, ((50, 0.97),)))], fake_context())
    assert not [line for ax in shown[0].axes for line in ax.lines if line.get_linestyle() == "--"]
    # speeds: a diverged run without timed steps (it diverged inside its warm-up) is left out
    fast = [fake_result("tf", "cnn", s, train_sps=7_000.0) for s in (0, 1)]
    slow = dict(fake_result("tf", "cnn", 2, status="diverged", train_sps=900.0))
    slow["throughput"] = dict(slow["throughput"], timed_steps=0)
    row = metrics.rows(fast + [slow], {"tf": 1e11})[0]
    assert row["train_sps"] == (7_000.0, 0.0, 2) and row["mfu"][2] == 2


def test_cnn_without_an_mlp_run_says_so():
    row = metrics.rows([fake_result("tf", "cnn")])[0]
    assert report.table_cells(row)[4] == "no MLP run"


# --- notes -----------------------------------------------------------------------------------------------

def test_device_note_only_when_one_backend_has_a_gpu():
    runs = four_runs()
    assert report.device_note(runs, fake_context()) is None
    note = report.device_note(runs, fake_context(devices={"tf": "cpu", "torch": "NVIDIA H200"}))
    assert "torch sees NVIDIA H200" in note and "tf sees only the CPU" in note
    assert report.device_note(runs, fake_context(devices={"tf": "NVIDIA H200", "torch": "NVIDIA H200"})) is None


def test_onednn_note_when_tf_ran_on_the_cpu_without_its_onednn_ops(tmp_path):
    """On a CPU without AVX-512 VNNI (this project's AMD CI machine) TensorFlow leaves its oneDNN ops off and its
    CNN trained 1.28x (fit) to 1.47x (custom loop) slower than with TF_ENABLE_ONEDNN_OPTS=1: the table must say
    why, and how to turn them on."""
    runs = four_runs()
    assert report.onednn_note(runs, fake_context()) is None  # results from before the field: nothing to say
    for r in runs:
        r["onednn"] = r["backend"] == "torch"
    note = report.onednn_note(runs, fake_context())
    assert "oneDNN ops were off" in note and "torch's on oneDNN" in note and "TF_ENABLE_ONEDNN_OPTS=1" in note
    for r in runs:
        r["onednn"] = True
    assert report.onednn_note(runs, fake_context()) is None
    gpu = [dict(r, onednn=False, device="NVIDIA H200") if r["backend"] == "tf" else r for r in runs]
    assert report.onednn_note(gpu, fake_context()) is None  # tf's convolutions ran on the GPU
    off = [dict(r, onednn=r["backend"] == "torch") for r in runs]
    report.write_files(tmp_path, off, fake_context())
    assert "TF_ENABLE_ONEDNN_OPTS=1" in (tmp_path / "report.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert {(row["backend"], row["onednn"]) for row in rows} == {("tf", "False"), ("torch", "True")}


def test_subset_is_announced():
    assert report.subset_warning(fake_context()) is None
    warning = report.subset_warning(fake_context(is_subset=True, dataset_label="mnist (5k subset)",
                                                 train_size=4000, test_size=1000))
    assert "mnist (5k subset)" in warning and "NOT the full MNIST" in warning
    assert "only 4,000 training and 1,000 test digits" in warning  # its sizes, each the right one


def test_the_peak_line_and_problem_lines_say_what_happened():
    """Mutations that passed: the peak line 1000x off (never asserted), and problem lines for failed runs alone
    (a diverged or interrupted run lost its line, and its message, in the terminal)."""
    assert report.peak_line(fake_context()).startswith("tf 100.0 GFLOP/s on cpu, torch 100.0 GFLOP/s on cpu (fp32 "
                                                       "matmul 1024x1024")
    runs = [fake_result("tf", "mlp", status=status, message=f"{status} here") for status in
            ("ok", "diverged", "interrupted", "failed")]
    assert report.problem_lines(runs) == [f"tf mlp seed 0: {s}: {s} here" for s in ("diverged", "interrupted", "failed")]


def test_an_interrupted_seed_is_not_averaged_into_the_accuracy():
    """Its partial accuracy went into the mean when the finished-runs filter was dropped (a surviving mutation)."""
    runs = [fake_result("tf", "mlp", 0, ((50, 0.95),)), fake_result("tf", "mlp", 1, ((25, 0.50),), status="interrupted")]
    mlp = metrics.rows(runs)[0]
    assert mlp["accuracy"][0] == pytest.approx(0.95) and mlp["accuracy"][2] == 1 and mlp["n"] == 2


# --- files -----------------------------------------------------------------------------------------------

def test_results_json_round_trip(tmp_path):
    runs = four_runs()
    report.write_files(tmp_path, runs, fake_context())
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["runs"] == runs
    assert set(doc) == {"comparison", "runs", "summary"}
    assert doc["summary"]["tf"]["steps_to_beat_mlp"] == 75
    assert doc["summary"]["torch"]["steps_to_beat_mlp"] is None
    assert doc["comparison"]["plan"]["eval_every"] == 25
    for r in doc["runs"]:  # the RunResult keys (README, "The RunResult JSON") survive
        assert {"backend", "model", "dataset", "data_source", "status", "message", "config", "versions", "device",
                "threads", "params", "flops_per_sample", "curve", "final", "throughput"} <= set(r)


def test_results_json_is_strict_json_with_nan(tmp_path):
    runs = four_runs()
    runs[0]["final"]["test_loss"] = float("nan")
    report.write_files(tmp_path, runs, fake_context())
    doc = json.loads((tmp_path / "results.json").read_text())  # no NaN token: a strict parser reads it
    assert doc["runs"][0]["final"]["test_loss"] is None


def test_results_csv_has_one_row_per_run(tmp_path):
    report.write_files(tmp_path, four_runs(), fake_context())
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["backend"], r["model"]) for r in rows] == [("tf", "mlp"), ("tf", "cnn"), ("torch", "mlp"), ("torch", "cnn")]
    assert rows[1]["steps_to_beat_mlp"] == "75" and rows[3]["steps_to_beat_mlp"] == ""
    # training seconds up to the beat (the curve's), not the process's wall time (6.5 s here)
    assert rows[1]["seconds_to_beat_mlp"] == "1.5" and rows[3]["seconds_to_beat_mlp"] == ""
    assert float(rows[1]["mfu"]) == pytest.approx(2e11 / 1e11)


def test_report_md_and_pictures(tmp_path):
    runs = four_runs()
    runs.append(fake_result("torch", "cnn", seed=1, points=(), status="failed",
                            message="killed by signal SIGSEGV (exit status -11)"))
    runs[-1]["stderr_tail"] = ["Fatal Python error: Segmentation fault"]
    ctx = fake_context(is_subset=True, dataset_label="mnist (5k subset)", devices={"tf": "cpu", "torch": "NVIDIA H200"})
    paths = report.write_files(tmp_path, runs, ctx)
    assert [p.name for p in paths] == list(report.FILES)
    md = (tmp_path / "report.md").read_text()
    assert "| backend | model | device | test acc | steps to beat MLP |" in md
    assert "NOT the full MNIST" in md and "NVIDIA H200" in md
    assert "resolution 25 steps" in md
    assert "warm-up = seconds of the first 10 steps of every run" in md
    assert "![test accuracy against step](curves.png)" in md and "(throughput.png)" in md
    assert "3.0e-07 (mlp)" in md
    assert "Segmentation fault" in md and "SIGSEGV" in md
    for name in ("curves.png", "throughput.png"):
        blob = (tmp_path / name).read_bytes()
        assert blob[:8] == PNG_MAGIC and len(blob) > 10_000, name


@pytest.mark.parametrize("cut", ["results.json", "results.csv", "curves.png", "throughput.png", "report.md"])
def test_a_ctrl_c_while_writing_the_report_leaves_the_previous_files_whole(tmp_path, monkeypatch, cut):
    """compare writes the report after its runs, and again after a --resume; a Ctrl-C during that write
    cut report.md or a PNG short. Each file is now replaced whole or left as it was, with no temp file
    (results.json and results.csv too: a non-atomic results.json write passed when only the others were cut)."""
    report.write_files(tmp_path, four_runs(), fake_context())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def cut_short(path, *args):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    def half_json(obj, f, **kwargs):  # json.dump into whatever file the writer opened
        f.write('{"half a')
        raise KeyboardInterrupt

    def half_csv(writer, rows):
        writer.writer.writerow(["half a row"])
        raise KeyboardInterrupt
    if cut == "results.json":
        monkeypatch.setattr(json, "dump", half_json)
    elif cut == "results.csv":
        monkeypatch.setattr(csv.DictWriter, "writerows", half_csv)
    elif cut == "report.md":
        monkeypatch.setattr("pathlib.Path.write_text", lambda self, text: cut_short(self))
    else:
        monkeypatch.setattr(report, "plot_curves" if cut == "curves.png" else "plot_throughput", cut_short)
    runs = four_runs()
    runs[0]["final"]["test_accuracy"] = 0.5
    with pytest.raises(KeyboardInterrupt):
        report.write_files(tmp_path, runs, fake_context())
    assert (tmp_path / cut).read_bytes() == before[cut]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no temp file left


def test_curves_show_a_late_collapse_and_may_clip_only_the_first_evaluations(tmp_path, monkeypatch):
    """The y floor was the 10th percentile of every point, so a CNN that fell to 40 % at its last of 20
    evaluations was drawn below the axes; its early, steep points may still be clipped."""
    steady = [(25 * i, 0.95 + 0.001 * i) for i in range(1, 21)]
    collapsed = [(25 * i, 0.20 if i == 1 else 0.97) for i in range(1, 20)] + [(500, 0.40)]
    plt = report._pyplot()
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    report.plot_curves(tmp_path / "curves.png", [fake_result("tf", "mlp", 0, steady),
                                                 fake_result("tf", "cnn", 0, collapsed)], fake_context())
    lower, upper = shown[0].axes[0].get_ylim()
    assert lower <= 40.0 - 1 and upper == pytest.approx(97.0 + 0.6)  # the collapse in view, with a margin
    assert lower > 20.0  # the first evaluation (20 %) may fall below
    shown.clear()
    report.plot_curves(tmp_path / "curves.png", [fake_result("tf", "mlp", 0, steady),
                                                 fake_result("tf", "cnn", 0, collapsed[:-1])], fake_context())
    assert shown[0].axes[0].get_ylim()[0] == pytest.approx(95.3 - 1.5)  # without it: the 10th percentile


def test_seeds_that_beat_at_one_step_share_one_label(tmp_path, monkeypatch):
    """Two seeds whose CNN beats the MLP at the same step got two labels drawn over each other."""
    runs = four_runs(0) + four_runs(1)  # tf: both seeds first beat their MLP (0.95, a tie at 50) at step 75
    runs[5]["curve"][2]["seconds"] = 2.0  # seed 1's tf CNN reaches step 75 later than seed 0's (1.5 s)
    plt = report._pyplot()
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    report.plot_curves(tmp_path / "curves.png", runs, fake_context(plan={**fake_context()["plan"], "seeds": [0, 1]}))
    texts = [t.get_text() for ax in shown[0].axes for t in ax.texts]
    assert texts == ["cnn beats MLP\nat step 75, 1.5-2.0 s (seeds 0, 1)"], texts  # torch's CNN never beats
    label = next(t for ax in shown[0].axes for t in ax.texts)  # step 75 of 100: drawn left of its star, inside
    assert label.get_ha() == "right" and label.xyann[0] < 0
    stars = [line for ax in shown[0].axes for line in ax.lines if line.get_marker() == "*"]
    assert len(stars) == 2  # each seed's own star stays


def test_throughput_legend_and_header_name_what_ran(tmp_path, monkeypatch):
    """throughput.png's legend said tf/torch while the table said tf (fit), and the header said 'SGD' for
    what, by RunConfig's default, is SGD with momentum 0.9."""
    runs = [dict(fake_result("tf", m), loop="fit") for m in ("mlp", "cnn")] + \
           [dict(fake_result("torch", m), loop="lightning") for m in ("mlp", "cnn")]
    plt = report._pyplot()
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    report.plot_throughput(tmp_path / "throughput.png", runs, fake_context())
    legend = [t.get_text() for t in shown[0].axes[0].get_legend().get_texts()]
    assert legend == ["tf.keras (model.fit)", "PyTorch Lightning"]
    ctx = fake_context()
    for flags, said in (({"optimizer": "sgd", "momentum": 0.9}, "SGD momentum 0.9 lr"),
                        ({"optimizer": "sgd", "momentum": 0.0}, "SGD lr"),
                        ({"optimizer": "sgd", "momentum": 0.5, "nesterov": True}, "SGD momentum 0.5 Nesterov lr")):
        ctx["plan"]["run_flags"] = {**fake_context()["plan"]["run_flags"], **flags}
        config = dict(report.header_lines(ctx))["config"]
        assert config.startswith(said), config


def test_header_names_the_flags_that_change_what_is_trained():
    """--widths, --dropout, --devices and the like appeared only in report.md: the terminal's config line
    read the same for a 2-device run at dropout 0.5 as for the default run."""
    ctx = fake_context()
    config = dict(report.header_lines(ctx))["config"]
    assert config == ("Adam lr 0.001 constant, init shared, 2 threads per run, fp32, loop tf custom / torch lightning, "
                      "runs one after another in separate processes")
    ctx["plan"]["run_flags"].update(widths=[64, 32], dropout=0.5, warmup_steps=10, devices=2, adam_impl="torch")
    config = dict(report.header_lines(ctx))["config"]
    assert ("fp32, widths 64,32, dropout 0.5, warm-up 10 steps, data parallel over 2 devices, torch Adam torch, "
            "loop tf custom") in config, config
    ctx["plan"]["run_flags"].update(widths=None, dropout=0.0, warmup_steps=0, devices=1, adam_impl="keras")
    assert "fp32, loop" in dict(report.header_lines(ctx))["config"]


def test_pictures_survive_empty_and_failed_results(tmp_path):
    failed = fake_result("tf", "cnn", points=(), status="failed", train_sps=None, infer_sps=None)
    report.write_files(tmp_path / "a", [], fake_context())
    report.write_files(tmp_path / "b", [failed], fake_context())
    assert (tmp_path / "b" / "curves.png").read_bytes()[:8] == PNG_MAGIC


def test_report_md_names_the_loops_and_skips_steps_to_beat_without_a_cnn():
    ctx = fake_context()
    ctx["plan"]["loops"] = {"tf": "fit", "torch": "lightning"}
    md = report.markdown(four_runs(), ctx)
    assert "| loops | tf fit, torch lightning |" in md and "## Steps to beat the MLP" in md
    assert "## Steps to beat the MLP" not in report.markdown([r for r in four_runs() if r["model"] == "mlp"], ctx)


def test_header_says_when_evaluation_is_on_a_held_out_share():
    ctx = fake_context()
    assert "60,000 train / 10,000 test, source" in report.header_lines(ctx)[0][1]
    ctx = fake_context(train_size=48_000, val_size=12_000)
    ctx["plan"]["run_flags"]["val_fraction"] = 0.2
    assert "48,000 train / 12,000 validation held out from train by --val-fraction 0.2" in report.header_lines(ctx)[0][1]


def test_header_says_end_only_evaluation_and_the_early_stop():
    ctx = fake_context()
    assert "test evaluation every 25 steps, seed 0" in report.header_lines(ctx)[1][1]
    assert "resolution 25 steps" in report.beat_line(ctx)
    ctx["plan"]["eval_every"] = 0  # --eval-every 0: the backends evaluate once, at the end
    assert "test evaluation at the end only (--eval-every 0), seed 0" in report.header_lines(ctx)[1][1]
    assert "resolution: the whole run" in report.beat_line(ctx) and "0 steps" not in report.beat_line(ctx)
    ctx["plan"]["eval_every"] = 25
    ctx["plan"]["run_flags"]["target_accuracy"] = 0.9
    assert "each run stops at its first evaluation with test acc >= 0.9" in report.header_lines(ctx)[1][1]


def test_terminal_table():
    from rich.console import Console
    console = Console(record=True, width=220)
    ctx = fake_context(is_subset=True, dataset_label="mnist (5k subset)", interrupted=True)
    report.render_terminal(console, four_runs(), ctx)
    text = console.export_text()
    assert "DATA: mnist (5k subset)" in text
    for word in ("steps to beat MLP", "time to beat", "train samples/s", "infer samples/s", "MFU", "warm-up", "wall"):
        assert word in text
    assert "not within budget" in text and "parity" in text and "--resume runs/x" in text


def test_source_note_when_a_run_read_other_data():
    runs = four_runs()
    assert report.source_note(runs, fake_context()) is None
    runs[3]["data_source"] = "mnist (5k subset)"
    assert "mnist (5k subset)" in report.source_note(runs, fake_context())


# --- what each cell, file and picture is fed --------------------------------------------------------------

def test_wall_is_the_child_process_life_not_the_backends_clock():
    """The 'wall' column and results.csv's process_seconds are the harness's timing of the child process
    (6.5 s in fake_result: start-up and data loading included), not the backend's own clock from model
    build (2.0 s), which stands in only for a result the harness did not time. Mutations that read
    final.wall_seconds first (in metrics.wall_seconds, or in the row's mean) or swapped the warm-up and
    wall cells passed."""
    r = fake_result("tf", "mlp")
    assert metrics.wall_seconds(r) == 6.5
    assert metrics.wall_seconds({k: v for k, v in r.items() if k != "process_seconds"}) == 2.0
    row = metrics.rows([r])[0]
    assert row["wall_s"] == (6.5, 0.0, 1)
    cells = dict(zip(report.COLUMNS, report.table_cells(row)))
    assert (cells["warm-up"], cells["wall"]) == ("0.4 s", "6.5 s")


def test_results_csv_columns_hold_their_own_figures():
    """Each speed and time column of results.csv from its own field (fake_result's are all different):
    infer_samples_per_s read from the train speed, or train_seconds from the process's wall time, passed."""
    row = report.csv_rows([fake_result("tf", "mlp")], fake_context())[0]
    assert (row["train_samples_per_s"], row["infer_samples_per_s"]) == (10_000.0, 50_000.0)
    assert (row["warmup_s"], row["train_seconds"], row["process_seconds"]) == (0.4, 1.0, 6.5)


def test_speeds_average_finished_runs_and_the_warm_up_only_timed_ones():
    """infer samples/s averaged every run (a failed run's figure included) and the warm-up every run (a
    failed one's, and that of a run that diverged inside its warm-up, whose 'warm-up' is all it ran)."""
    ok = [fake_result("tf", "cnn", s) for s in (0, 1)]  # infer 50,000, warm-up 0.4 s
    failed = fake_result("tf", "cnn", 2, status="failed", infer_sps=5_000.0)
    failed["throughput"]["warmup_s"] = 30.0
    early = fake_result("tf", "cnn", 3, status="diverged")  # finished: its inference pass counts, not its warm-up
    early["throughput"] = dict(early["throughput"], timed_steps=0, warmup_s=9.0)
    row = metrics.rows(ok + [failed, early])[0]
    assert row["infer_sps"] == (50_000.0, 0.0, 3)
    assert row["warmup_s"] == (0.4, 0.0, 2)


def test_a_diverged_mlp_is_not_the_bar_to_beat():
    """An MLP whose loss became NaN at its last step ran all its steps, but its final accuracy (chance) is
    no bar: with 'ok' widened to ok-or-diverged (a surviving mutation) every CNN 'beat' it, and a CNN that
    diverged at its last step without a beat was 'not within budget' instead of unknown."""
    mlp = dict(fake_result("tf", "mlp", 0, ((25, 0.90), (50, 0.098)), status="diverged", message="loss became nan"),
               total_steps=50)
    cnn = dict(fake_result("tf", "cnn", 0, ((25, 0.85), (50, 0.97))), total_steps=50)
    assert metrics.references([mlp, cnn]) == {}
    assert metrics.beat_outcomes([mlp, cnn]) == {("tf", "cnn", 0): "MLP ended early"}
    row = next(r for r in metrics.rows([mlp, cnn]) if r["model"] == "cnn")
    assert report.table_cells(row)[4:6] == ["– (MLP ended early)", "–"]
    good_mlp = dict(fake_result("tf", "mlp", 0, ((25, 0.90), (50, 0.95))), total_steps=50)
    cnn_nan = dict(fake_result("tf", "cnn", 0, ((25, 0.85), (50, 0.10)), status="diverged"), total_steps=50)
    assert metrics.beat_outcomes([good_mlp, cnn_nan]) == {("tf", "cnn", 0): "ended early"}


def test_one_seed_summary_keeps_a_whole_step_count_and_no_std():
    """With one seed results.json gives the step itself (75, not 75.0) and null spreads (there is no spread
    over one seed, not a spread of 0): the one-seed branch dropped passed, since 75.0 == 75."""
    doc = json.loads(json.dumps(report.results_document(four_runs(), fake_context())))
    tf = doc["summary"]["tf"]
    assert type(tf["steps_to_beat_mlp"]) is int and tf["steps_to_beat_mlp"] == 75
    cnn = tf["models"]["cnn"]
    assert type(cnn["steps_to_beat_mlp"]) is int and cnn["seconds_to_beat_mlp"] == 1.5
    assert cnn["steps_to_beat_mlp_std"] is None and cnn["seconds_to_beat_mlp_std"] is None
    two = metrics.summary(four_runs(0) + four_runs(1))["tf"]["models"]["cnn"]  # several seeds: mean and std
    assert (two["steps_to_beat_mlp"], two["steps_to_beat_mlp_std"]) == (75.0, 0.0)


def test_throughput_bars_show_each_panels_speed_with_its_spread(tmp_path, monkeypatch):
    """The training panel's bars are train samples/s and the inference panel's infer samples/s (swapped
    keys passed), each with its std over seeds as an error bar (bars without them passed)."""
    runs = [fake_result("tf", "cnn", 0, train_sps=1_000.0, infer_sps=40_000.0),
            fake_result("tf", "cnn", 1, train_sps=3_000.0, infer_sps=60_000.0)]
    plt = report._pyplot()
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    report.plot_throughput(tmp_path / "throughput.png", runs, fake_context())
    train_ax, infer_ax = shown[0].axes[:2]
    for ax, mean, std in ((train_ax, 2_000.0, math.sqrt(2) * 1_000), (infer_ax, 50_000.0, math.sqrt(2) * 10_000)):
        (bars,) = [c for c in ax.containers if hasattr(c, "errorbar")]  # the BarContainer (its ErrorbarContainer aside)
        assert [b.get_height() for b in bars] == [mean]
        assert bars.errorbar is not None, ax.get_title()
        (segment,) = bars.errorbar.lines[2][0].get_segments()  # the vertical line from mean - std to mean + std
        assert segment[:, 1] == pytest.approx([mean - std, mean + std], rel=1e-9)


def test_curves_dashed_mlp_line_is_the_mean_over_seeds(tmp_path, monkeypatch):
    """The dashed 'MLP final (mean)' line sits at the mean of the seeds' MLP final accuracies (96 % for
    95 % and 97 %), each seed's own bar dotted; a max over seeds passed."""
    runs = [fake_result("tf", "mlp", 0, ((50, 0.95),)), fake_result("tf", "mlp", 1, ((50, 0.97),))]
    plt = report._pyplot()
    shown = []
    monkeypatch.setattr(plt, "close", lambda fig: shown.append(fig))
    report.plot_curves(tmp_path / "curves.png", runs, fake_context())
    lines = shown[0].axes[0].lines
    dashed = [line.get_ydata()[0] for line in lines if line.get_linestyle() == "--"]
    dotted = sorted(line.get_ydata()[0] for line in lines if line.get_linestyle() == ":")
    assert dashed == [pytest.approx(96.0)] and dotted == [pytest.approx(95.0), pytest.approx(97.0)]


# --- words in the table and report.md ---------------------------------------------------------------------

def test_status_cell_counts_the_bad_seeds_among_several():
    """'1/3 failed' collapsed to 'failed' (as if every seed had failed) passed."""
    assert report.status_text({"statuses": ["failed"]}) == "failed"
    assert report.status_text({"statuses": ["ok", "failed", "ok"]}) == "1/3 failed"
    assert report.status_text({"statuses": ["diverged", "ok", "failed"]}) == "1/3 diverged, 1/3 failed"
    runs = [fake_result("tf", "mlp", s, ((50, 0.95),)) for s in (0, 1, 2)]
    runs[1] = fake_result("tf", "mlp", 1, points=(), status="failed", message="exit status -9")
    assert report.table_cells(metrics.rows(runs)[0])[3] == "95.00 ± 0.00 % (1/3 failed)"


def test_unknown_seeds_with_different_reasons_are_each_counted():
    """With no known answer and two unknown seeds for different reasons, the cell showed the first reason
    alone when the one-seed wording took any count (a surviving mutation)."""
    runs = [fake_result("tf", "mlp", 0, ((50, 0.95),)),
            fake_result("tf", "cnn", 0, points=(), status="failed", message="exit status -9"),  # its run ended early
            fake_result("tf", "mlp", 1, points=(), status="failed", message="exit status -9"),  # its MLP ended early
            fake_result("tf", "cnn", 1, ((50, 0.97),))]
    row = next(r for r in metrics.rows(runs) if r["model"] == "cnn")
    assert report.table_cells(row)[4:6] == ["– (1 run ended early, 1 MLP ended early)", "–"]


def test_per_seed_table_says_why_a_seed_is_unknown_and_its_seconds():
    """report.md's per-seed table called a seed whose run or MLP ended early 'not within budget' when its
    reason was dropped; its seconds are the curve's, to 0.1 s (12.34 s -> 12.3)."""
    runs = [fake_result("tf", "mlp", 0, ((50, 0.95),)), fake_result("tf", "cnn", 0, ((50, 0.97),)),
            fake_result("tf", "mlp", 1, ((50, 0.95),)),
            fake_result("tf", "cnn", 1, points=(), status="failed", message="exit status -9"),
            fake_result("tf", "mlp", 2, points=(), status="failed", message="exit status -9"),
            fake_result("tf", "cnn", 2, ((50, 0.97),)),
            fake_result("tf", "mlp", 3, ((50, 0.95),)), fake_result("tf", "cnn", 3, ((50, 0.90),))]
    runs[1]["curve"][0]["seconds"] = 12.34
    md = report.markdown(runs, fake_context())
    assert "| tf | cnn | 0 | 50 | 12.3 |" in md
    assert "| tf | cnn | 1 | run ended early | – |" in md
    assert "| tf | cnn | 2 | MLP ended early | – |" in md
    assert "| tf | cnn | 3 | not within budget | – |" in md


def test_small_mfu_keeps_two_decimals():
    """An MFU of 0.04 % (a small model on a big GPU) must not print as 0.0 %; 0.1 % and above keep one
    decimal."""
    assert [report._mfu(x) for x in (0.0004, 0.00099, 0.001, 0.5)] == ["0.04", "0.10", "0.1", "50.0"]
    rows = {(r["backend"], r["model"]): r for r in metrics.rows(four_runs(), {"tf": 5e14})}
    assert report.table_cells(rows[("tf", "cnn")])[8] == "0.04 %"  # 25e6 FLOPs x 8,000 samples/s / 5e14


def test_header_budget_in_epochs():
    """100 steps of a 468-step epoch are 0.214 epochs (the inverse fraction, 4.68, passed)."""
    ctx = fake_context()
    assert "100 steps of 128 = 0.214 epochs," in report.header_lines(ctx)[1][1]
    ctx["plan"].update(total_steps=936)
    assert "936 steps of 128 = 2 epochs," in report.header_lines(ctx)[1][1]
    ctx["plan"].update(total_steps=468)
    assert "468 steps of 128 = 1 epoch," in report.header_lines(ctx)[1][1]
    ctx["plan"].update(total_steps=469)  # rounds to 1: the plural went by the raw step counts ("1 epochs")
    assert "469 steps of 128 = 1 epoch," in report.header_lines(ctx)[1][1]


def test_warm_up_note_does_not_claim_one_count_for_runs_that_differed():
    """'the first 10 steps of every run' was claimed when runs had warmed up for different step counts;
    an unfinished run's count is not a finished run's figure and is not listed."""
    runs = four_runs()
    runs[3]["throughput"]["warmup_steps"] = 25
    failed = fake_result("tf", "cnn", 1, points=(), status="failed")
    failed["throughput"]["warmup_steps"] = 3
    assert report.warmup_text(runs + [failed]) == "steps (10, 25 steps, by run)"
    assert report.warmup_text(four_runs() + [failed]) == "10 steps of every run"
    early = fake_result("tf", "cnn", 2, status="diverged")  # diverged inside its warm-up: no timed steps, and
    early["throughput"] = dict(early["throughput"], warmup_steps=4, timed_steps=0)  # its seconds are not averaged
    assert report.warmup_text(four_runs() + [early]) == "10 steps of every run"


def test_report_md_names_the_whole_comparisons_time_or_this_resumes():
    """After --resume the closing time is that invocation's, not the whole comparison's (a swapped label passed)."""
    assert "Whole comparison: 100 s; comparison started 2026-11-29T15:00:00." in report.markdown(four_runs(), fake_context())
    md = report.markdown(four_runs(), fake_context(resumed=True))
    assert "This --resume invocation: 100 s; comparison started 2026-11-29T15:00:00." in md
    assert "Whole comparison" not in md


def test_device_note_when_tf_has_the_gpu_and_torch_the_cpu():
    """Only torch-on-the-GPU was tested; the note must name whichever backend sees the GPU."""
    note = report.device_note(four_runs(), fake_context(devices={"tf": "NVIDIA H200", "torch": "cpu"}))
    assert note is not None and note.startswith("tf sees NVIDIA H200; torch sees only the CPU: the speed columns")
