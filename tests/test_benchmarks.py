"""The benchmark scripts run (they are used rarely and on borrowed machines, so rot must show here).
Nothing here asserts on time: only that each script starts, parses its flags, and that the GPU
check (scripts/gpu-check), run for a few steps on the CPU without the packages the accelerator
machine lacks, writes the fields its README line promises."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, child_env, run_module
from data_fixtures import canonical_files, tiny_idx_arrays

SCRIPTS = ["overhead", "peak", "scaling", "time_to_accuracy", "accuracy", "torch_configs", "gpu", "large_batch"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help(name):
    proc = run_module(f"benchmarks.{name}", "--help", timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-1000:]


def test_peak_and_torch_configs_print_a_table_and_write_json(tmp_path):
    """Every script prints its table and writes JSON (these two wrote none, or only with --json)."""
    proc = run_module("benchmarks.peak", "--n", "128", "--threads", "1", "--json", tmp_path / "peak.json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "| framework " in proc.stdout and "| GFLOP/s |" in proc.stdout
    peaks = json.loads((tmp_path / "peak.json").read_text())
    assert [r["framework"] for r in peaks] == ["tf", "torch", "numpy"] and all(r["gflops"] > 0 for r in peaks)
    proc = run_module("benchmarks.torch_configs", "--rounds", "1", "--steps", "2", "--threads", "1", "--batch-size", "16",
                      "--json", tmp_path / "tc.json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "| variant " in proc.stdout and "| vs naive |" in proc.stdout
    tc = json.loads((tmp_path / "tc.json").read_text())
    assert set(tc["samples_per_s"]) == set(tc["ratio_to_naive"]) and len(tc["ratio_to_naive"]) >= 4
    base = np.median(tc["samples_per_s"]["naive"])
    for name, xs in tc["samples_per_s"].items():  # each variant over the naive port, both as medians
        assert len(xs) == 1 and tc["ratio_to_naive"][name] == pytest.approx(np.median(xs) / base, rel=1e-12), name


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
    for x in r["results"]:
        assert x["device"] == "cpu" and x["ratios"][0] > 0 and 0 < x["utilisation_lightning"] < 1
    text = (out / "gpu.txt").read_text()
    assert text.startswith("torch ") and "| Lightning / raw |" in text
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, env=env)
    assert probe.returncode != 0  # the block held
