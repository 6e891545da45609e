"""The benchmark scripts run (they are used rarely and on borrowed machines, so rot must show here).
Nothing here asserts on time: only that each script starts, parses its flags, and that the GPU
check, run for a few steps on the CPU, writes the fields its README line promises."""
from __future__ import annotations

import json

import pytest

from conftest import run_module

SCRIPTS = ["overhead", "peak", "scaling", "time_to_accuracy", "accuracy", "torch_configs", "gpu"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help(name):
    proc = run_module(f"benchmarks.{name}", "--help", timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-1000:]


def test_accuracy_refuses_an_unknown_recipe():
    proc = run_module("benchmarks.accuracy", "--recipes", "imagenet-cosine", timeout=120)
    assert proc.returncode == 2 and "unknown recipe imagenet-cosine" in proc.stderr


def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    run_module("benchmarks.gpu", "--dataset", "mnist", "--steps", "20", "--repeats", "1", "--models", "mlp",
               "--batches", "32", "--precisions", "32,bf16", "--json", out, check=True, timeout=600)
    r = json.loads(out.read_text())
    assert set(r["peak"]) == {"32", "bf16"} and all(p["peak_flops"] > 0 for p in r["peak"].values())
    assert [(x["precision"], x["model"], x["batch_size"]) for x in r["results"]] == [("32", "mlp", 32), ("bf16", "mlp", 32)]
    for x in r["results"]:
        assert x["device"] == "cpu" and x["ratios"][0] > 0 and 0 < x["utilisation_lightning"] < 1
