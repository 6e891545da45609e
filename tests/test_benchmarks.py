"""The benchmark scripts run and compute their figures right (they are used rarely and on borrowed
machines, so rot must show here). Nothing here asserts on time: each script starts and parses its
flags; each training script's main computes its table and JSON from given RunResults; and the GPU
check (scripts/gpu-check), run for a few steps on the CPU without the packages the accelerator
machine lacks, writes the fields its README line promises."""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, child_env, run_module
from benchmarks import common
from data_fixtures import canonical_files, tiny_idx_arrays

SCRIPTS = ["overhead", "peak", "scaling", "time_to_accuracy", "accuracy", "torch_configs", "gpu", "large_batch",
           "onednn", "lightning_step"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help(name):
    proc = run_module(f"benchmarks.{name}", "--help", timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m benchmarks.{name} "), proc.stderr[-1000:]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_the_whole_description_and_every_flag_with_its_help_and_default(name):
    """--help gave the docstring's first line, cut mid-sentence ("...GradientTape loop against"), a usage line
    naming overhead.py, and most flags with neither help nor default (`--dataset DATASET`)."""
    import argparse
    import importlib
    module = importlib.import_module(f"benchmarks.{name}")
    p = module.build_parser()
    text = p.format_help()
    assert p.prog == f"python -m benchmarks.{name}" and text.startswith(f"usage: python -m benchmarks.{name} [-h]")
    words = " ".join(text.split())
    first = " ".join(module.__doc__.strip().split("\n\n")[0].split())  # the docstring's whole first paragraph
    assert p.description.endswith(".") and first.endswith(".") and first in words, p.description
    assert "python -m benchmarks." not in p.description  # the docstring's usage lines: argparse prints its own
    formatter = p._get_formatter()
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        shown = formatter._expand_help(action)  # the text --help prints for it, default included
        assert action.help and len(shown) > 10, action.option_strings
        if action.default is not None and action.nargs != 0:  # a value with a default: --help says which
            assert shown.endswith(f"(default: {action.default})") or f"{action.default})" in shown, shown
        elif action.nargs != 0:  # no default: the help says what happens without the flag
            assert "default: " in shown, shown


def test_the_machine_line_names_the_cpu_model(tmp_path, monkeypatch):
    """The CI machine was an Intel Xeon (AVX-512) one day and an AMD EPYC (AVX2) the next; the scripts' JSON and
    tables said only "x86_64, 2 cores", so figures from the two could not be told apart."""
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: avx2\n")
    assert common.cpu_model(str(info)) == "AMD EPYC 7B13"
    assert common.cpu_model(str(tmp_path / "none")) is None  # not Linux: the line says what it can
    monkeypatch.setattr(common, "cpu_model", lambda: "AMD EPYC 7B13")
    assert " AMD EPYC 7B13, " in common.machine() and common.machine().endswith(f"Python {platform.python_version()}")
    monkeypatch.setattr(common, "cpu_model", lambda: None)
    assert ", " in common.machine() and "None" not in common.machine()


def test_peak_and_torch_configs_print_a_table_and_write_json(tmp_path):
    """Every script prints its table and writes JSON (these two wrote none, or only with --json)."""
    days = {str(datetime.date.today())}  # the date the run was measured on (the test may cross midnight)
    proc = run_module("benchmarks.peak", "--n", "128", "--threads", "1", "--json", tmp_path / "peak.json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "| framework " in proc.stdout and "| GFLOP/s |" in proc.stdout
    out = json.loads((tmp_path / "peak.json").read_text())
    days.add(str(datetime.date.today()))
    assert out["date"] in days and "cores, Python" in out["machine"]  # had neither
    peaks = out["results"]
    assert [r["framework"] for r in peaks] == ["tf", "torch", "numpy"] and all(r["gflops"] > 0 for r in peaks)
    proc = run_module("benchmarks.torch_configs", "--rounds", "1", "--steps", "2", "--threads", "1", "--batch-size", "16",
                      "--json", tmp_path / "tc.json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "| variant " in proc.stdout and "| vs naive |" in proc.stdout
    tc = json.loads((tmp_path / "tc.json").read_text())
    days.add(str(datetime.date.today()))
    assert tc["date"] in days and "cores, Python" in tc["machine"]
    assert set(tc["samples_per_s"]) == set(tc["ratio_to_naive"]) and len(tc["ratio_to_naive"]) == 5
    base = np.median(tc["samples_per_s"]["naive"])
    for name, xs in tc["samples_per_s"].items():  # each variant over the naive port, both as medians
        assert len(xs) == 1 and tc["ratio_to_naive"][name] == pytest.approx(np.median(xs) / base, rel=1e-12), name


def test_lightning_step_alternates_the_two_forms_and_reports_their_medians(tmp_path):
    """Lightning's cost per step over the raw loop's was measured by hand, once, and the README quoted it. The script
    measures it: the Lightning form goes through every callback's per-step hooks (3 per callback) and the raw form
    through none, and the table's difference and ratio are those of the two forms' medians."""
    proc = run_module("benchmarks.lightning_step", "--models", "tiny,mlp", "--rounds", "3", "--steps", "2", "--threads",
                      "1", "--batch-size", "16", "--callbacks", "2", "--json", tmp_path / "ls.json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "| model " in proc.stdout and "| raw / Lightning |" in proc.stdout and proc.stdout.count(" 6 / 0 |") == 2
    doc = json.loads((tmp_path / "ls.json").read_text())
    assert "cores, Python" in doc["machine"] and doc["config"]["callbacks"] == 2
    assert doc["callback_hook_calls_per_step"] == {m: {"lightning": 6, "raw": 0} for m in ("tiny", "mlp")}
    for model, t in doc["us_per_step"].items():
        lit, raw = np.median(t["lightning"]), np.median(t["raw"])
        assert len(t["lightning"]) == len(t["raw"]) == 3 and min(t["lightning"] + t["raw"]) > 0, model
        assert doc["difference_us"][model] == pytest.approx(lit - raw, rel=1e-12), model
        assert doc["raw_over_lightning"][model] == pytest.approx(raw / lit, rel=1e-12), model


def test_torch_configs_runs_past_one_epoch_of_its_loader(tmp_path):
    """The naive variant's DataLoader ran out after one epoch (StopIteration) for large batches: 8192 gives
    7 full batches, and 5 warm-up steps plus 3 timed ones need 8."""
    proc = run_module("benchmarks.torch_configs", "--model", "mlp", "--rounds", "1", "--steps", "3", "--threads", "1",
                      "--batch-size", "8192", "--json", tmp_path / "tc.json", timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-1500:]


def test_gpu_check_without_the_data_files_says_so_first(tmp_path):
    """A DATA_DIR without the files fell through to the cache, whose location needs platformdirs (absent on the
    accelerator machine), after the peak probes had run: the error named platformdirs."""
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check"), str(tmp_path), str(tmp_path / "out")],
                          capture_output=True, text=True, env=child_env(PYTHON=sys.executable), timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == (f"scripts/gpu-check: no Fashion-MNIST *-ubyte.gz files in "
                                                            f"{tmp_path} (or {tmp_path}/fashion_mnist, "
                                                            f"{tmp_path}/fashion-mnist)")


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_gpu_check_help_prints_its_usage(flag):
    """`scripts/gpu-check --help` said "no folder --help" (exit 2)."""
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check"), flag], capture_output=True, text=True,
                          env=child_env(PYTHON="false"), timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("usage: scripts/gpu-check DATA_DIR [OUT_DIR] [benchmarks.gpu flags]\n")
    for what in ("  DATA_DIR ", "  OUT_DIR ", "  flags ", "python -m benchmarks.gpu --help"):
        assert what in proc.stdout, what


@pytest.mark.parametrize("folder", [".", "fashion_mnist", "fashion-mnist"])
def test_gpu_check_finds_the_files_where_data_dir_does(tmp_path, folder):
    """DATA_DIR itself, DATA_DIR/fashion_mnist and DATA_DIR/fashion-mnist, as --data-dir reads them: the dashed
    one (Debian's /usr/share/datasets/fashion-mnist, passed as /usr/share/datasets) was refused. The
    benchmark itself is not run here (PYTHON=true): only the script's own check is."""
    data = tmp_path / "data"
    (data / folder).mkdir(parents=True, exist_ok=True)
    (data / folder / "train-images-idx3-ubyte.gz").write_bytes(b"")
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check"), str(data), str(tmp_path / "out")],
                          capture_output=True, text=True, env=child_env(PYTHON="true"), timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_accuracy_refuses_an_unknown_recipe():
    proc = run_module("benchmarks.accuracy", "--recipes", "imagenet-cosine", timeout=120)
    assert proc.returncode == 2 and "unknown recipe imagenet-cosine" in proc.stderr


def test_gpu_check_script_needs_no_tensorflow_pooch_platformdirs_or_mlxtend(tmp_path):
    """scripts/gpu-check as the accelerator machine runs it: those packages are missing there (made
    unimportable here by a sitecustomize), the data comes from a folder, the figures go to OUT_DIR."""
    data, out, block = tmp_path / "data", tmp_path / "out", tmp_path / "block"
    data.mkdir(), block.mkdir()
    for name, blob in canonical_files(tiny_idx_arrays(n_train=320, n_test=64)).items():
        (data / name).write_bytes(blob)
    (block / "sitecustomize.py").write_text(
        "import sys\nfor n in ('tensorflow', 'keras', 'pooch', 'platformdirs', 'mlxtend'):\n    sys.modules[n] = None\n")
    env = child_env(PYTHONPATH=os.pathsep.join([str(block), str(ROOT)]), PYTHON=sys.executable)
    env.pop("KLC_DATA_DIR", None)
    proc = subprocess.run([str(ROOT / "scripts" / "gpu-check"), str(data), str(out), "--dataset", "mnist", "--no-verify",
                           "--steps", "20", "--repeats", "1", "--models", "cnn", "--batches", "32", "--precisions", "32,bf16"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads((out / "gpu.json").read_text())
    assert set(r["peak"]) == {"32", "bf16"} and all(p["peak_flops"] > 0 for p in r["peak"].values())
    assert [(x["precision"], x["model"], x["batch_size"]) for x in r["results"]] == [("32", "cnn", 32), ("bf16", "cnn", 32)]
    # a bf16 run is held to the faster of the two peaks: on a CPU without bf16 units (this project's AMD EPYC)
    # torch's bf16 matmul ran at 1 GFLOP/s, and the bf16 CNN at 729 % of it
    best = max(p["peak_flops"] for p in r["peak"].values())
    for x in r["results"]:
        ceiling = r["peak"]["32"]["peak_flops"] if x["precision"] == "32" else best
        assert x["utilisation_peak"] == ("32" if ceiling == r["peak"]["32"]["peak_flops"] else "bf16")
        assert x["device"] == "cpu" and x["ratios"][0] > 0 and 0 < x["utilisation_lightning"] < 1, x
        assert x["utilisation_lightning"] == pytest.approx(x["flops_per_sample"] * x["lightning_median"] / ceiling)
    text = (out / "gpu.txt").read_text()
    assert text.startswith("torch ") and "| Lightning / raw (median of the pairs' ratios) |" in text
    # data parallel's dropout on the device (a GPU's fused kernel there): two replicas drop what one device drops
    assert (r["replica_dropout"]["device"], r["replica_dropout"]["replica_max_abs_diff"]) == ("cpu", 0.0)
    assert "replica dropout on cpu: 2 replicas' masks against one device's, largest difference 0 (the same)" in text
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, env=env)
    assert probe.returncode != 0  # the block held


# --- every script's main, on a fake train(): what each computes from the RunResults ----------------------

SPS = {("tf", "custom"): 110.0, ("tf", "fit"): 100.0, ("torch", "lightning"): 95.0, ("torch", "raw"): 100.0}
A_LOOPS = ("custom", "lightning")  # A of each overhead pair; seeds 0, 1, 2 scale A by 1, 3, 2 and B by 1, 1, 4:
BY_SEED = {True: (1, 3, 2), False: (1, 1, 4)}  # the pairs' ratios 1, 3, 0.5 (median 1); medians' ratio 2
CALLS = []  # (backend, loop, seed) of every fake run, in order


def fake_train(backend, *flags, timeout=1800, env=None, accept=("ok",)):
    """A RunResult as the child would write it, with figures that follow from the flags: samples/s by
    backend, loop and seed (BY_SEED), MLP x10, proportional to the batch, x1.6 on 2 threads against 1,
    x0.7 with --devices 2; a curve that reaches 99.5 % at step 200, except, with --target-accuracy,
    torch's seed 1 (never: a miss) and seed 2 (diverged)."""
    f = {flags[i]: flags[i + 1] for i in range(len(flags) - 1) if str(flags[i]).startswith("--")}
    loop = f.get("--loop", "custom" if backend == "tf" else "lightning")
    batch, seed = int(f.get("--batch-size", 128)), int(f.get("--seed", 0))
    CALLS.append((backend, loop, seed))
    sps = (SPS[(backend, loop)] * (10 if f.get("--model") == "mlp" else 1) * batch / 128
           * BY_SEED[loop in A_LOOPS][seed % 3] * (1.6 if int(f.get("--threads", 2)) == 2 else 1.0)
           * (0.7 if int(f.get("--devices", 1)) == 2 else 1.0))
    curve = [{"step": 100, "seconds": 1.0 + seed, "test_loss": 0.5, "test_accuracy": 0.5},
             {"step": 200, "seconds": 2.0 + seed, "test_loss": 0.1, "test_accuracy": 0.995}]
    status = "ok"
    if backend == "torch" and seed == 1 and "--target-accuracy" in f:
        curve[1]["test_accuracy"] = 0.6
    elif backend == "torch" and seed == 2 and "--target-accuracy" in f:
        curve, status = curve[:1], "diverged"
    if status not in accept:
        raise common.RunFailed(f"{backend} exited 3: loss became nan")
    return {"backend": backend, "dataset": f.get("--dataset", "mnist"), "curve": curve, "status": status,
            "final": {"steps": 200, "test_loss": 0.1, "test_accuracy": 0.995, "train_seconds": 2.0},
            "throughput": {"train_samples_per_s": sps, "infer_samples_per_s": 4 * sps, "timed_steps": 150},
            "device": "cpu", "flops_per_sample": 1000}


@pytest.mark.parametrize("name", ["overhead", "scaling", "time_to_accuracy", "accuracy", "large_batch"])
def test_every_script_computes_its_figures_from_the_results(tmp_path, monkeypatch, capsys, name):
    """--help alone left these mains unrun: a misspelt RunResult key or a ratio upside down would pass.
    Here each runs on fake results whose figures are known, and its JSON must hold them."""
    import importlib
    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(module, "train", fake_train)
    CALLS.clear()
    out = tmp_path / f"{name}.json"
    argv = {"overhead": ["--repeats", "3"], "time_to_accuracy": ["--seeds", "0,1,2"], "accuracy": ["--seeds", "0"],
            "scaling": [], "large_batch": []}[name]
    module.main([*argv, "--json", str(out)])
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "|" in printed and doc["complete"] is True  # its table; every run made
    # each run's progress line names its columns (scaling and large_batch printed Python lists: "['tf', 'mlp', ...]")
    assert not [line for line in printed.splitlines() if line.startswith("[")], printed
    if name == "scaling":
        assert "backend torch, model cnn, 1 device 152, 2 devices (data parallel) 106, speed-up 0.70x" in printed
    if name == "time_to_accuracy":  # the progress line said "mnist torch 2 diverged None"
        assert "mnist tf seed 1: 99% at step 200, 3.0 s (test accuracy 0.9950)" in printed
        assert "mnist torch seed 1: 99% not reached\n" in printed
        assert "mnist torch seed 2: 99% not reached (diverged)" in printed
    if name == "large_batch":
        assert "batch 1024, run torch raw + GLIBC_TUNABLES, train samples/s 1,280, page faults / sample" in printed
    if name == "overhead":  # A, B, A, B ... per pair; the median of the pairs' ratios, not the medians' ratio
        assert CALLS[:6] == [("tf", "custom", 0), ("tf", "fit", 0), ("tf", "custom", 1), ("tf", "fit", 1),
                             ("tf", "custom", 2), ("tf", "fit", 2)]
        got = {(r["backend"], r["model"]): (r["median_ratio"], r["a_median"], r["b_median"]) for r in doc["results"]}
        for (backend, model), (ratio, a, b) in got.items():
            base = {"tf": (110.0, 100.0), "torch": (95.0, 100.0)}[backend]
            scale = 10 if model == "mlp" else 1
            assert ratio == pytest.approx(base[0] / base[1]), (backend, model)
            assert (a, b) == pytest.approx((2 * 1.6 * scale * base[0], 1.6 * scale * base[1])), (backend, model)
        assert len(got) == 4
    elif name == "scaling":
        assert [r["train"] for r in doc["batch"] if r["backend"] == "tf" and r["model"] == "cnn"] == pytest.approx([
            1.6 * 110.0 * b / 128 for b in (32, 64, 128, 256, 512, 1024)])
        assert [r["us_per_sample"] for r in doc["size"] if r["backend"] == "tf"] == pytest.approx(
            [2e6 / n for n in (10_000, 30_000, 60_000)])
        assert (doc["threads"][0]["1"], doc["threads"][0]["2"]) == pytest.approx((1100.0, 1760.0))
        assert [(r["backend"], r["model"]) for r in doc["devices"]] == [("tf", "mlp"), ("torch", "mlp"), ("tf", "cnn"),
                                                                        ("torch", "cnn")]
        assert (doc["devices"][3]["1"], doc["devices"][3]["2"]) == pytest.approx((152.0, 106.4))  # torch cnn
    elif name == "time_to_accuracy":  # torch: seed 1 never reaches 99 %, seed 2 diverges: both are misses
        assert len(doc["runs"]) == 12 and [r["status"] for r in doc["runs"] if r["backend"] == "torch"] == [
            "ok", "ok", "diverged"] * 2
        summary = {(r["dataset"], r["backend"]): r for r in doc["summary"]}
        assert summary[("mnist", "tf")]["reached"] == 3 and summary[("mnist", "torch")]["reached"] == 1
        assert summary[("mnist", "tf")]["seconds_mean_std"] == pytest.approx([3.0, 1.0])  # 2, 3, 4 s
        assert summary[("mnist", "torch")]["steps_mean_std"] == [200, 0.0]
    elif name == "accuracy":
        assert len(doc["results"]) == 8 and all(r["met_by_every_seed"] for r in doc["results"])
        assert {r["data"] for r in doc["results"]} == {"mnist", "fashion_mnist"}
    else:
        assert [r["train_samples_per_s"] for r in doc["runs"] if r["batch"] == 1024 and r["backend"] == "torch"] == [
            pytest.approx(1.6 * 800.0)] * 2


def test_onednn_alternates_the_setting_and_checks_each_run_got_it(tmp_path, monkeypatch, capsys):
    """benchmarks.onednn: off, on, off, on ... through TF_ENABLE_ONEDNN_OPTS in each child's environment; the
    median of the pairs' ratios; and a run whose RunResult says it did not get the setting stops the script
    (a TensorFlow build without oneDNN would otherwise print a ratio of two identical set-ups)."""
    from benchmarks import onednn
    calls = []

    def fake(backend, *flags, env=None, **kw):
        f = {flags[i]: flags[i + 1] for i in range(len(flags) - 1) if str(flags[i]).startswith("--")}
        on, seed = env["TF_ENABLE_ONEDNN_OPTS"] == "1", int(f["--seed"])
        calls.append((backend, f["--model"], f["--loop"], seed, on))
        sps = 100.0 * (10 if f["--model"] == "mlp" else 1) * (BY_SEED[True][seed] * 1.5 if on else BY_SEED[False][seed])
        return {"backend": backend, "onednn": on, "throughput": {"train_samples_per_s": sps}}

    monkeypatch.setattr(onednn, "train", fake)
    out = tmp_path / "o.json"
    onednn.main(["--models", "cnn", "--loops", "custom,fit", "--json", str(out)])
    assert calls[:6] == [("tf", "cnn", "custom", s, on) for s in (0, 1, 2) for on in (False, True)]
    doc = json.loads(out.read_text())
    assert doc["complete"] and [(r["model"], r["loop"]) for r in doc["results"]] == [("cnn", "custom"), ("cnn", "fit")]
    assert doc["results"][0]["median_ratio"] == pytest.approx(1.5)  # pairs 1.5, 4.5, 0.75; medians' ratio is 3
    assert (doc["results"][0]["off_median"], doc["results"][0]["on_median"]) == pytest.approx((100.0, 300.0))
    assert "on/off" in capsys.readouterr().out

    monkeypatch.setattr(onednn, "train", lambda backend, *flags, env=None, **kw: {
        "onednn": False, "throughput": {"train_samples_per_s": 1.0}})  # the variable had no effect
    with pytest.raises(SystemExit) as e:
        onednn.main(["--models", "mlp", "--json", str(out)])
    assert e.value.code == 1 and "TF_ENABLE_ONEDNN_OPTS=1 ran with oneDNN ops off" in capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert not doc["complete"] and doc["results"][0]["off_samples_per_s"] == [1.0]


@pytest.mark.parametrize("stop,code", [("fail", 1), ("ctrl-c", 130)])
def test_a_failed_run_or_ctrl_c_keeps_what_was_measured(tmp_path, monkeypatch, capsys, stop, code):
    """A run that failed (or a Ctrl-C) raised out of every script, which wrote its JSON only at the end: seven
    finished runs of overhead were lost to the eighth. Now the JSON holds them, marked incomplete."""
    from benchmarks import overhead

    def failing(*flags, **kw):
        if len(CALLS) == 7:
            CALLS.append("stop")
            raise common.RunFailed("torch ... exited 1: boom") if stop == "fail" else KeyboardInterrupt
        return fake_train(*flags, **kw)
    monkeypatch.setattr(overhead, "train", failing)
    CALLS.clear()
    out = tmp_path / "o.json"
    with pytest.raises(SystemExit) as e:
        overhead.main(["--repeats", "2", "--json", str(out)])
    assert e.value.code == code
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and doc["stopped"] == ("torch ... exited 1: boom" if stop == "fail"
                                                           else "interrupted (Ctrl-C)")
    # tf mlp's two pairs, and torch mlp's first pair and second A: the 8th run (torch mlp's second B) stopped it
    assert [(len(r["a_samples_per_s"]), len(r["b_samples_per_s"])) for r in doc["results"]] == [(2, 2), (2, 1)]
    assert doc["results"][1]["a_samples_per_s"] == pytest.approx([1.6 * 950.0, 3 * 1.6 * 950.0])
    assert capsys.readouterr().err.strip().endswith(f"is in {out} (complete: false)")


def test_a_timed_out_run_or_a_bug_in_the_script_keeps_what_was_measured(tmp_path, monkeypatch, capsys):
    """From a review: a child past its timeout (subprocess.TimeoutExpired) and any error inside a script were
    neither a failed run nor a Ctrl-C, so they gave a traceback and no JSON."""
    import subprocess as sp
    from benchmarks import overhead
    monkeypatch.setattr(common.subprocess, "run", lambda *a, **kw: (_ for _ in ()).throw(sp.TimeoutExpired(a[0], 5)))
    with pytest.raises(common.RunFailed, match="ran past 5 s and was stopped"):
        common.train("torch", "--steps", "1", timeout=5)

    def buggy(*flags, **kw):
        if len(CALLS) == 3:
            raise KeyError("throughput")
        return fake_train(*flags, **kw)
    monkeypatch.setattr(overhead, "train", buggy)
    CALLS.clear()
    out = tmp_path / "o.json"
    with pytest.raises(KeyError):  # a bug keeps its traceback, after the figures are written
        overhead.main(["--repeats", "2", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and doc["stopped"] == "KeyError: 'throughput'"
    assert doc["results"][0]["a_samples_per_s"] == pytest.approx([1.6 * 1100.0, 3 * 1.6 * 1100.0])


def test_a_json_path_naming_a_folder_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    from benchmarks import overhead
    monkeypatch.setattr(overhead, "train", fake_train)
    CALLS.clear()
    with pytest.raises(SystemExit) as e:
        overhead.main(["--json", str(tmp_path)])
    assert e.value.code == 2 and CALLS == [] and "is a folder" in capsys.readouterr().err


# --- flags: a bad value is the parser's one-line error (exit 2), before any run -------------------------------------

BAD_FLAGS = [  # (script, flags, what the error says)
    ("overhead", ["--batch-size", "0"], "argument --batch-size: must be > 0, got 0"),
    ("overhead", ["--epochs", "-1"], "argument --epochs: must be a finite number > 0, got -1"),
    ("overhead", ["--dataset", "nosuch"], "argument --dataset: invalid choice: 'nosuch'"),
    ("overhead", ["--models", "foo"], "argument --models: unknown model foo; choose from mlp, cnn"),
    ("overhead", ["--models", "mlp,"], "argument --models: empty model"),
    ("overhead", ["--repeats", "0"], "argument --repeats: must be > 0"),
    ("overhead", ["--threads", "-1"], "argument --threads: must be >= 0"),
    ("overhead", ["--steps-per-call", "0"], "argument --steps-per-call: must be > 0"),
    ("scaling", ["--parts", "nosuch"], "argument --parts: unknown part nosuch; choose from batch, size, threads, devices"),
    ("scaling", ["--dataset", "nosuch"], "argument --dataset: invalid choice"),
    ("peak", ["--framework", "numpy", "--n", "0"], "argument --n: must be > 0, got 0"),
    ("peak", ["--threads", "0"], "argument --threads: must be > 0"),
    ("time_to_accuracy", ["--datasets", "cifar10"], "argument --datasets: unknown dataset cifar10"),
    ("time_to_accuracy", ["--seeds", "0,x"], "argument --seeds: seed x: expected a whole number"),
    ("time_to_accuracy", ["--max-epochs", "0"], "argument --max-epochs: must be a finite number > 0"),
    ("time_to_accuracy", ["--eval-every", "0"], "argument --eval-every: must be > 0"),
    ("accuracy", ["--recipes", "imagenet-cosine"], "argument --recipes: unknown recipe imagenet-cosine"),
    ("accuracy", ["--seeds", "0,-1"], "argument --seeds: seed -1: must be >= 0"),
    ("accuracy", ["--seeds", "1,1"], "argument --seeds: seed 1 given twice"),
    ("torch_configs", ["--rounds", "0"], "argument --rounds: must be > 0"),
    ("torch_configs", ["--steps", "-3"], "argument --steps: must be > 0"),
    ("torch_configs", ["--threads", "0"], "argument --threads: must be > 0"),
    ("torch_configs", ["--batch-size", "60001"], "argument --batch-size: at most the 60,000 images"),  # hung
    ("torch_configs", ["--model", "foo"], "argument --model: invalid choice: 'foo'"),
    ("gpu", ["--batches", "128,0"], "argument --batches: batch size 0: must be > 0"),
    ("gpu", ["--precisions", "16"], "argument --precisions: unknown precision 16; choose from 32, bf16"),
    ("gpu", ["--models", "foo"], "argument --models: unknown model foo"),
    ("gpu", ["--peak-n", "0"], "argument --peak-n: must be > 0"),
    ("gpu", ["--steps", "0"], "argument --steps: must be > 0"),
    ("gpu", ["--epochs", "nan"], "argument --epochs: must be a finite number > 0"),
    ("large_batch", ["--batches", "0"], "argument --batches: batch size 0: must be > 0"),
    ("large_batch", ["--dataset", "nosuch"], "argument --dataset: invalid choice"),
    ("large_batch", ["--epochs", "0"], "argument --epochs: must be a finite number > 0"),
    ("onednn", ["--loops", "lightning"], "argument --loops: unknown loop lightning; choose from custom, fit"),
    ("onednn", ["--repeats", "0"], "argument --repeats: must be > 0"),
    ("lightning_step", ["--models", "rnn"], "argument --models: unknown model rnn; choose from tiny, mlp, cnn"),
    ("lightning_step", ["--callbacks", "-1"], "argument --callbacks: must be >= 0, got -1"),
    ("lightning_step", ["--steps", "0"], "argument --steps: must be > 0"),
]


@pytest.mark.parametrize("name,flags,says", BAD_FLAGS, ids=[f"{n} {' '.join(f)}" for n, f, _ in BAD_FLAGS])
def test_a_bad_flag_value_is_refused_by_the_parser_before_any_run(tmp_path, monkeypatch, capsys, name, flags, says):
    """Each of these started a child (exit 1), measured nonsense (peak --n 0: 0 GFLOP/s, exit 0), did nothing
    and called that complete (scaling --parts nosuch), or hung (torch_configs past 60,000). Now: the parser's
    one line, exit 2, no run started and no JSON written."""
    import importlib
    module = importlib.import_module(f"benchmarks.{name}")
    ran = []
    for attr in ("train", "peak", "measure"):  # whatever the script would start
        if hasattr(module, attr):
            monkeypatch.setattr(module, attr, lambda *a, **kw: ran.append(a) or fake_train("tf", *a[1:]))
    monkeypatch.setitem(sys.modules, "torch", None)  # torch_configs imports it after parsing: never in this process
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as e:
        module.main([*flags, "--json", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and ran == [] and not out.exists(), err
    assert err.startswith(f"python -m benchmarks.{name}: error: {says}") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["overhead", "scaling", "time_to_accuracy", "accuracy", "large_batch", "gpu",
                                  "onednn"])
@pytest.mark.parametrize("stop,code", [("fail", 1), ("ctrl-c", 130)])
def test_a_run_that_measured_nothing_leaves_an_earlier_json_as_it_was(tmp_path, monkeypatch, capsys, name, stop, code):
    """A user's good overhead.json was replaced by one with no figures (complete: false) when the next invocation's
    first run failed. A script stopped before its first figure now writes nothing, and says the file was kept."""
    import importlib
    module = importlib.import_module(f"benchmarks.{name}")

    def first_run_stops(*a, **kw):
        raise common.RunFailed("tf ... exited 1: boom") if stop == "fail" else KeyboardInterrupt
    monkeypatch.setattr(module, "train", first_run_stops)
    if name == "gpu":  # its first figures are the peak probes
        monkeypatch.setattr(module, "peak", first_run_stops)
    out = tmp_path / "r.json"
    out.write_text('{"complete": true, "results": ["the earlier figures"]}')
    with pytest.raises(SystemExit) as e:
        module.main(["--json", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == code and out.read_text() == '{"complete": true, "results": ["the earlier figures"]}', err
    assert err.endswith(f"; nothing was measured; {out} was left as it was\n") and err.count("\n") == 1, err
    out.unlink()  # and with no earlier file, none is made
    with pytest.raises(SystemExit):
        module.main(["--json", str(out)])
    assert not out.exists() and capsys.readouterr().err.endswith(f"; nothing was measured; {out} was not written\n")


def test_gpu_keeps_its_peaks_when_the_first_training_run_fails(tmp_path, monkeypatch, capsys):
    """The peak probes are figures: a failure after them still writes them (complete: false)."""
    from benchmarks import gpu
    monkeypatch.setattr(gpu, "peak",
                        lambda backend, prec, **kw: {"device": "cpu", "peak_flops": 1e12, "precision": prec})
    monkeypatch.setattr(gpu, "train", lambda *a, **kw: (_ for _ in ()).throw(common.RunFailed("torch ... exited 1")))
    out = tmp_path / "gpu.json"
    with pytest.raises(SystemExit) as e:
        gpu.main(["--json", str(out)])
    doc = json.loads(out.read_text())
    assert e.value.code == 1 and doc["complete"] is False and set(doc["peak"]) == {"32", "bf16"}
    assert capsys.readouterr().err.strip().endswith(f"is in {out} (complete: false)")
