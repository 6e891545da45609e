"""Behaviour of the two backend CLIs, the same test for each (`backend` parametrized): flags and
errors, the RunResult, learning, schedules, checkpoint resume, interruption, divergence."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from data.contract import ConfigError, RunConfig, lr_at, new_result
from data.loop import Recorder, steps_per_block

from conftest import ROOT, child_env, run_jobs_in_both, run_module

BACKENDS = {"tf": "tf_impl", "torch": "torch_impl"}
LOOPS = [("tf", "custom"), ("tf", "fit"), ("torch", "lightning"), ("torch", "raw")]
SMALL = ["--dataset", "mnist", "--train-limit", "2048", "--batch-size", "32", "--threads", "2", "--no-progress"]


# --- flags ----------------------------------------------------------------------------------------

BAD_FLAGS = [
    (["--steps", "0"], "--steps"), (["--steps", "-3"], "--steps"), (["--batch-size", "0"], "--batch-size"),
    (["--lr", "nan"], "--lr"), (["--lr", "-1e-3"], "--lr"), (["--optimizer", "adagrad"], "--optimizer"),
    (["--schedule", "linear"], "--schedule"), (["--dataset", "imagenet"], "--dataset"), (["--model", "resnet"], "--model"),
    (["--eval-every", "x"], "--eval-every"), (["--steps", "5", "--epochs", "1"], "--epochs"),
    (["--dropout", "1"], "--dropout"), (["--steps-per-call", "0"], "--steps-per-call"),
    (["--beta-1", "1"], "--beta-1"), (["--beta-2", "1.5"], "--beta-2"),  # was a ZeroDivisionError traceback (torch)
    (["--target-accuracy", "97"], "--target-accuracy"),  # a percentage where a share is meant: never reached
    (["--threads", "99999999999"], "--threads: at most 1024"),  # the frameworks' overflow errors, exit 1
    (["--seed", "-1"], "--seed"),  # numpy refused it later, in a line that did not name the flag
    (["--seed", "4294967296"], "--seed"),  # numpy's limit: tf failed with exit 1 while torch trained
    (["--optimizer", "sgd", "--momentum", "1.5"], "--momentum"),  # Keras's SGD refuses it (exit 1 in tf), torch did not
    # flags the chosen optimizer or schedule never reads: the run reported settings it did not train with
    (["--nesterov"], "--nesterov does nothing with --optimizer adam: it applies to --optimizer sgd"),
    (["--optimizer", "sgd", "--beta-1", "0.8"], "--beta-1 does nothing with --optimizer sgd"),
    (["--decay-rate", "0.1"], "--decay-rate does nothing with --schedule constant: it applies to --schedule exponential or step"),
    # widths that cannot build the model were a ValueError: exit 1, the code for bad data
    (["--model", "cnn", "--widths", "64"], "--widths 64 for --model cnn: cnn widths are conv filters then"),
    (["--model", "cnn", "--dataset", "cifar100", "--widths", "8,8,8,8,8,8,8"], "too many conv/pool stages for input"),
    # a model no machine here can hold: a traceback from the framework's allocator (exit 1), after loading
    (["--model", "mlp", "--widths", "1000000000"], "--widths 1000000000 for --model mlp: 795,000,000,010 parameters "
                                                   "need at least 11,846 GiB to train"),
    # a batch whose activations no machine here can hold: TensorFlow segfaulted, torch gave a traceback
    (["--model", "cnn", "--widths", "4096,64,128", "--batch-size", "60000"],
     "--batch-size 60000 with --widths 4096,64,128 for --model cnn: to train, a batch's activations"),
    (["--model", "cnn", "--widths", "65536,8", "--batch-size", "1", "--eval-batch-size", "10000"],
     "--eval-batch-size 10000 with --widths 65536,8 for --model cnn: to evaluate"),
]


def test_widths_are_refused_only_beyond_what_training_them_needs(monkeypatch):
    """Float32 weights, gradients and the optimizer's slots (Adam 16 bytes a parameter, SGD 12 with momentum,
    8 without; a conversion 4) against the machine's memory: SGD and convert were held to Adam's 16."""
    from data import arch, contract
    params = arch.count_params(arch.build_layers("mlp", (28, 28, 1), 10, (256, 128)))
    assert params == 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    for optimizer, momentum, per_param in (("adam", 0.9, 16), ("sgd", 0.9, 12), ("sgd", 0.0, 8), (None, None, 4)):
        slots = None if optimizer is None else contract.optimizer_slots(optimizer, momentum)
        monkeypatch.setattr(contract, "host_memory", lambda: per_param * params)
        contract.check_widths("mlp", "mnist", (256, 128), slots)
        monkeypatch.setattr(contract, "host_memory", lambda: per_param * params - 1)
        with pytest.raises(ConfigError, match=f"{params:,} parameters need at least 0 GiB"):
            contract.check_widths("mlp", "mnist", (256, 128), slots)
    monkeypatch.setattr(contract, "host_memory", lambda: None)  # a system that does not say: not refused
    contract.check_widths("mlp", "mnist", (10**9,))


def test_activation_floor_matches_a_count_by_hand():
    """Values per sample alive at once, at the least. Inference: a layer's input and output (default CNN: pool_0
    reads conv_0's 28x28x32 and writes 14x14x32). Training: also every earlier conv/dense input, kept for the
    weight gradients (at pool_0: the image, 784)."""
    from data import arch
    cnn = arch.build_layers("cnn", (28, 28, 1), 10)
    assert arch.activation_floor(cnn, (28, 28, 1)) == (784 + 28 * 28 * 32 + 14 * 14 * 32, 28 * 28 * 32 + 14 * 14 * 32)
    mlp = arch.build_layers("mlp", (28, 28, 1), 10, dropout=0.5)  # at dropout_0: 256 in, 256 out, 784 kept
    assert arch.activation_floor(mlp, (28, 28, 1)) == (784 + 256 + 256, 784 + 256)
    wide = arch.build_layers("cnn", (32, 32, 3), 10, (16, 512, 64))  # at pool_1: 16x16x512 in, 8x8x512 out
    assert arch.activation_floor(wide, (32, 32, 3)) == (32 * 32 * 3 + 16 * 16 * 16 + 16 * 16 * 512 + 8 * 8 * 512,
                                                        16 * 16 * 512 + 8 * 8 * 512)


def test_batches_are_refused_only_beyond_what_their_activations_need(monkeypatch):
    """A batch whose activations cannot fit ended in the allocator's traceback (torch, exit 1) or a segmentation
    fault with no result (TensorFlow on a CPU: --widths 8192,64,128 --batch-size 1024 here). The floor is the
    model's training state plus batch x activation_floor x 4 bytes; evaluation: the weights plus its batch's.
    Batches larger than the data are counted at the data's size. Where a GPU is visible the parser checks the
    weights alone (the backend checks the device it trains on)."""
    from data import arch, contract
    layers = arch.build_layers("cnn", (28, 28, 1), 10)
    params, (train, infer) = arch.count_params(layers), arch.activation_floor(layers, (28, 28, 1))
    monkeypatch.setattr(contract, "accelerator_visible", lambda: False)
    for batch, eval_batch, need, flag in ((1024, None, 16 * params + 4 * 1024 * train, "--batch-size 1024"),
                                          (None, 512, 4 * params + 4 * 512 * infer, "--eval-batch-size 512"),
                                          (10**6, None, 16 * params + 4 * 60000 * train,
                                           "--batch-size 1000000 (counted at the data's 60,000)")):
        monkeypatch.setattr(contract, "host_memory", lambda: need)
        contract.check_widths("cnn", "mnist", None, 2, batch, eval_batch)
        monkeypatch.setattr(contract, "host_memory", lambda: need - 1)
        with pytest.raises(ConfigError, match="^" + re.escape(f"{flag} with --model cnn (widths 32,64,128): to ")):
            contract.check_widths("cnn", "mnist", None, 2, batch, eval_batch)
        contract.check_widths("cnn", "mnist", None, 2, batch, eval_batch, memory=need, where="GPU 0")  # its own memory
        with pytest.raises(ConfigError, match="GPU 0 has"):
            contract.check_widths("cnn", "mnist", None, 2, batch, eval_batch, memory=need - 1, where="GPU 0")
    monkeypatch.setattr(contract, "accelerator_visible", lambda: True)  # host memory holds the weights alone
    monkeypatch.setattr(contract, "host_memory", lambda: 4 * params)
    contract.check_widths("cnn", "mnist", None, 2, 10**6, 10**6)
    monkeypatch.setattr(contract, "host_memory", lambda: 4 * params - 1)
    with pytest.raises(ConfigError, match="parameters need at least 0 GiB to hold"):
        contract.check_widths("cnn", "mnist", None, 2, 10**6, 10**6)


def test_batches_are_counted_at_most_at_the_data_they_are_cut_from_and_at_2_bytes_in_bf16(monkeypatch):
    """From a review of the floor: evaluation batches were counted at up to the training set's 60,000 where
    MNIST's test split has 10,000 (evaluation slices it), refusing runs that fit; bf16 activations were
    counted at 4 bytes, though TF's mixed_bfloat16 and torch's autocast compute the conv and dense outputs in
    bfloat16, 2 bytes a value (a review's probe put a bf16 evaluation's peak below that 4-byte floor)."""
    from data import arch, contract
    layers = arch.build_layers("cnn", (28, 28, 1), 10)
    params, (train, infer) = arch.count_params(layers), arch.activation_floor(layers, (28, 28, 1))
    monkeypatch.setattr(contract, "accelerator_visible", lambda: False)
    cases = [  # (keywords, batch, eval batch, floor, the flag as named)
        ({}, None, 10**6, 4 * params + 4 * 10_000 * infer, "--eval-batch-size 1000000 (counted at the data's 10,000)"),
        ({"val_fraction": 0.1}, None, 10**6, 4 * params + 4 * 6_000 * infer, "--eval-batch-size 1000000 (counted at "
                                                                              "the data's 6,000)"),
        ({"val_fraction": 0.1, "train_limit": 2048}, None, 10**6, 4 * params + 4 * 205 * infer,
         "--eval-batch-size 1000000 (counted at the data's 205)"),
        ({"train_limit": 2048}, 10**6, None, 16 * params + 4 * 2048 * train, "--batch-size 1000000 (counted at the "
                                                                               "data's 2,048)"),
        ({"precision": "bf16"}, 1024, None, 16 * params + 2 * 1024 * train, "--batch-size 1024"),
        ({"precision": "bf16"}, None, 512, 4 * params + 2 * 512 * infer, "--eval-batch-size 512")]
    for keywords, batch, eval_batch, need, flag in cases:
        monkeypatch.setattr(contract, "host_memory", lambda: need)
        contract.check_widths("cnn", "mnist", None, 2, batch, eval_batch, **keywords)
        monkeypatch.setattr(contract, "host_memory", lambda: need - 1)
        with pytest.raises(ConfigError, match="^" + re.escape(f"{flag} with --model cnn (widths 32,64,128): to ")):
            contract.check_widths("cnn", "mnist", None, 2, batch, eval_batch, **keywords)


def test_a_ddp_rank_that_runs_out_of_memory_says_so_in_one_line(monkeypatch, capsys):
    """A rank > 0 runs quiet; out of memory it returned 1 without a word, and Lightning then killed rank 0 before
    it could say anything: the run ended with no reason given anywhere."""
    from data.loop import execute
    cfg = RunConfig(steps=10)
    rec = Recorder(cfg, new_result(cfg, "torch"), 10)
    monkeypatch.setenv("RANK", "1")

    def body():
        raise MemoryError("no room")
    assert execute(cfg, rec, body, quiet=True) == 1 and rec.result["status"] == "failed"
    assert capsys.readouterr().err == ("torch rank 1: failed: out of memory after step 0 (no room); lower "
                                       "--batch-size, --eval-batch-size or --widths\n")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flags,named", BAD_FLAGS)
def test_bad_flag_one_line_exit_2(backend, flags, named):
    proc = run_module(BACKENDS[backend], *flags, "--no-progress", timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and named in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_names_list_the_valid_ones():
    proc = run_module("tf_impl", "--dataset", "imagenet", timeout=60)
    assert "mnist" in proc.stderr and "fashion_mnist" in proc.stderr and "cifar10" in proc.stderr
    proc = run_module("torch_impl", "--model", "resnet", timeout=60)
    assert "'mlp'" in proc.stderr and "'cnn'" in proc.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "4096"], "--batch-size 4096 is larger than the training set (2048 samples)"),
    (["--steps", "10", "--eval-every", "20"], "--eval-every 20 is larger than the run (10 steps)"),
])
def test_budget_errors(backend, flags, message):
    proc = run_module(BACKENDS[backend], *SMALL, *flags, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_flags_identical_in_both_backends():
    """Same flags, same help: both CLIs are built by data.contract.build_parser."""
    a = run_module("tf_impl", "--help", timeout=60).stdout
    b = run_module("torch_impl", "--help", timeout=60).stdout
    flags = lambda text: sorted(set(w.strip(",[]") for w in text.split() if w.startswith("--")))  # noqa: E731
    assert flags(a) == flags(b) and "--eval-every" in flags(a)


@pytest.mark.parametrize("backend", [*BACKENDS, "compare"])
def test_help_gives_every_flag_its_default(backend):
    """The README says --help lists every flag with its default; --val-fraction, --widths, --train-limit,
    --target-accuracy, --data-dir and the output paths said nothing of theirs (compare: --seeds, --resume)."""
    import argparse

    from data.contract import LOOPS, build_parser
    if backend == "compare":
        from compare.__main__ import build_parser as compare_parser
        parser = compare_parser()
    else:
        parser = build_parser("x", "y", loops=LOOPS[backend])
    silent = [a.option_strings[0] for a in parser._actions if a.option_strings and "default" not in (a.help or "")
              and a.help != argparse.SUPPRESS and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                                                     argparse._HelpAction))]
    assert silent == [], silent


# --- schedules ------------------------------------------------------------------------------------

def test_lr_at_chosen_steps():
    cfg = RunConfig(lr=0.1, schedule="cosine", warmup_steps=10)
    assert lr_at(cfg, 0, 110) == pytest.approx(0.01)  # warm-up: lr * (step + 1) / warmup
    assert lr_at(cfg, 9, 110) == pytest.approx(0.1)
    assert lr_at(cfg, 60, 110) == pytest.approx(0.05)  # halfway through the 100 cosine steps
    assert lr_at(cfg, 110, 110) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(RunConfig(lr=0.1, schedule="exponential", decay_rate=0.5, decay_steps=10), 5, 100) == pytest.approx(0.1 * 0.5 ** 0.5)
    assert lr_at(RunConfig(lr=0.1, schedule="step", decay_rate=0.5, decay_steps=10), 25, 100) == pytest.approx(0.025)
    assert lr_at(RunConfig(lr=0.1), 1234, 10) == 0.1


def test_backends_apply_the_same_schedule(tmp_path):
    steps = [0, 1, 5, 9, 10, 50, 99]
    expected = {}
    jobs = []
    for sched in ("constant", "cosine", "exponential", "step"):
        cfg = RunConfig(lr=0.1, schedule=sched, warmup_steps=5, decay_steps=20, decay_rate=0.5).to_dict()
        expected[sched] = [lr_at(RunConfig(**cfg), s, 100) for s in steps]
        jobs.append({"op": "lrs", "model": "mlp", "input_shape": [28, 28, 1], "num_classes": 10, "config": cfg,
                     "total_steps": 100, "steps": steps, "out": str(tmp_path / f"lrs_{sched}_BK.json")})
    run_jobs_in_both(tmp_path, "lrs", jobs)
    for backend in BACKENDS:
        for sched in expected:
            got = json.loads((tmp_path / f"lrs_{sched}_{backend}.json").read_text())["lrs"]
            # Keras holds the rate in float32: 1e-7 relative
            np.testing.assert_allclose(got, expected[sched], rtol=1e-6, err_msg=f"{backend} {sched}")


# --- training -------------------------------------------------------------------------------------

def readme_result_block() -> str:
    """README's "The RunResult JSON" block: the list of the keys a run writes."""
    return (ROOT / "README.md").read_text().split("### The RunResult JSON", 1)[1].split("```", 2)[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_shorter_than_the_default_interval_evaluates_at_its_end(tmp_path, backend):
    """`python -m torch_impl --steps 50` was refused: "--eval-every 100 is larger than the run", a flag the user
    never gave. The default interval now leaves a shorter run one evaluation, at its end (recorded as 0, the
    interval it ran with); an --eval-every given larger than the run is still refused (test_budget_errors)."""
    out = tmp_path / "r.json"
    run_module(BACKENDS[backend], *SMALL, "--model", "mlp", "--steps", "20", "--json", out, check=True, timeout=300)
    r = json.loads(out.read_text())
    assert r["status"] == "ok" and [p["step"] for p in r["curve"]] == [20] and r["config"]["eval_every"] == 0


@pytest.mark.parametrize("backend,loop", LOOPS)
def test_small_run_learns_and_writes_result(tmp_path, backend, loop):
    out = tmp_path / "r.json"
    proc = run_module(BACKENDS[backend], *SMALL, "--model", "mlp", "--steps", "60", "--eval-every", "30",
                      "--loop", loop, "--json", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    block = readme_result_block()  # the README's RunResult list names every key a run writes
    written = set(r) | set(r["final"]) | set(r["throughput"]) | set(r["curve"][0]) | set(r["dtypes"])
    assert not [k for k in written if not re.search(rf"(?<![\w.]){k}(?!\w)", block)], sorted(written)
    for key in ("backend", "model", "dataset", "data_source", "status", "config", "versions", "device",
                "threads", "params", "flops_per_sample", "curve", "final", "throughput"):  # DESIGN's contract
        assert key in r, key
    assert r["backend"] == backend and r["status"] == "ok" and r["params"] == 235_146 and r["threads"] == 2
    assert r["onednn"] in ((True,) if backend == "torch" else (True, False))  # tf's: the CPU's (test below)
    # training FLOPs, not the forward pass's (a mutation giving tf's forward count passed: its MFU a third)
    assert (r["forward_flops_per_sample"], r["flops_per_sample"]) == (MLP_FORWARD_FLOPS, 3 * MLP_FORWARD_FLOPS)
    assert [p["step"] for p in r["curve"]] == [30, 60]
    assert len(r["train_losses"]) == 60 and r["final"]["steps"] == 60
    assert np.mean(r["train_losses"][-10:]) < 0.7 * np.mean(r["train_losses"][:5])
    assert r["final"]["test_accuracy"] > 0.3  # 60 small steps: well above chance (0.1), not yet good
    t = r["throughput"]
    assert t["train_samples_per_s"] > 0 and t["infer_samples_per_s"] > 0
    assert (t["warmup_steps"], t["timed_steps"]) == (15, 45)  # every loop: 10 steps rounded up to a block of 15
    assert 0 < r["curve"][0]["seconds"] < r["curve"][1]["seconds"]
    assert "step     30/60" in proc.stdout


@pytest.mark.parametrize("setting", ["0", "1"])
def test_a_tf_run_records_whether_tensorflows_onednn_ops_were_on(tmp_path, setting):
    """TensorFlow turns its oneDNN ops on by default only on CPUs with AVX-512 VNNI, BF16 or AMX (this project's CI
    machine was an Intel Xeon with them one day and an AMD EPYC without them the next, and the tf CNN's speed moved
    with it); TF_ENABLE_ONEDNN_OPTS decides it either way, and the RunResult says what the run had."""
    out = tmp_path / "r.json"
    run_module(BACKENDS["tf"], *SMALL, "--model", "mlp", "--steps", "5", "--json", out, check=True, timeout=300,
               env=child_env(TF_ENABLE_ONEDNN_OPTS=setting))
    assert json.loads(out.read_text())["onednn"] is (setting == "1")


FIT_PIPELINES = """
import sys
import keras
from tf_impl.__main__ import main
seen, fit = [], keras.Model.fit
def recording_fit(self, x=None, *args, **kwargs):  # the pipeline each fit call reads, then Keras's own fit
    seen.append((x.options().autotune.enabled, len(x)))
    return fit(self, x, *args, **kwargs)
keras.Model.fit = recording_fit
code = main(sys.argv[1:])
print("pipelines", seen)
sys.exit(code)
"""


def test_model_fit_reads_a_pipeline_with_tf_data_autotuning_off(tmp_path):
    """With tf.data's autotuning on (its default), every fit call ended by waiting for the autotune thread while its
    iterator was deleted: 0.2-37 s after a one-epoch CNN call on 2 cores, inside the timed chunk, and model.fit's
    CNN measured 1,357 samples/s against 1,993-2,293 with autotuning off. Every pipeline fit reads now has it off."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-c", FIT_PIPELINES, *SMALL, "--model", "mlp", "--loop", "fit", "--steps",
                           "40", "--eval-every", "20", "--json", str(out)], capture_output=True, text=True,
                          env=child_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("pipelines")][-1]
    # one call per chunk: the 10-step warm-up rounded to a block of 10, then to step 20, then to 40
    assert line == "pipelines [(False, 10), (False, 10), (False, 20)]", line
    assert json.loads(out.read_text())["status"] == "ok"


def test_dropout_goes_after_each_hidden_dense_and_adds_no_parameters():
    from data import arch
    for model, hidden in (("mlp", 2), ("cnn", 1)):
        plain, dropped = arch.build_layers(model, (28, 28, 1), 10), arch.build_layers(model, (28, 28, 1), 10, dropout=0.25)
        assert [l.kind for l in dropped if l.kind != "dropout"] == [l.kind for l in plain]
        kinds = [l.kind for l in dropped]
        assert kinds.count("dropout") == hidden and all(kinds[i - 1] == "dense" for i, k in enumerate(kinds) if k == "dropout")
        assert kinds[-1] == "dense" and {l.rate for l in dropped if l.kind == "dropout"} == {0.25}
        assert arch.count_params(dropped) == arch.count_params(plain) and arch.forward_flops(dropped) == arch.forward_flops(plain)


MLP_FORWARD_FLOPS = 2 * (784 * 256 + 256 * 128 + 128 * 10)  # multiply-adds x 2 of 784-256-128-10
CNN_FORWARD_FLOPS = 2 * (28 * 28 * 3 * 3 * 1 * 32 + 14 * 14 * 3 * 3 * 32 * 64  # two 3x3 'same' convs, each
                         + 7 * 7 * 64 * 128 + 128 * 10)  # before a 2x2 pool; then 3136-128-10 dense


def test_flop_counts_match_a_count_by_hand():
    """MFU's numerator: training FLOPs per sample = 3x the forward pass. Mutations that passed the suite: 2x
    instead of 3x (MFU 1.5x low) and a conv's k*k counted once (the CNN's MFU 3x low)."""
    from data import arch
    mlp, cnn = arch.build_layers("mlp", (28, 28, 1), 10), arch.build_layers("cnn", (28, 28, 1), 10)
    assert (arch.forward_flops(mlp), arch.forward_flops(cnn)) == (MLP_FORWARD_FLOPS, CNN_FORWARD_FLOPS)
    assert (arch.train_flops(mlp), arch.train_flops(cnn)) == (3 * MLP_FORWARD_FLOPS, 3 * CNN_FORWARD_FLOPS)


def test_steps_per_block_divides_evaluation_and_checkpoint_steps():
    assert steps_per_block(RunConfig(eval_every=0)) == 32  # the --steps-per-call default
    assert steps_per_block(RunConfig(eval_every=100)) == 25  # largest divisor of 100 that is <= 32
    assert steps_per_block(RunConfig(eval_every=25)) == 25
    assert steps_per_block(RunConfig(eval_every=100, checkpoint_every=30)) == 10  # divides gcd(100, 30)
    assert steps_per_block(RunConfig(eval_every=97)) == 1  # a prime interval: one step per block
    assert steps_per_block(RunConfig(eval_every=100, steps_per_call=1)) == 1
    assert steps_per_block(RunConfig(eval_every=0, devices=2)) == 1  # DDP: one step per training_step
    # at most a quarter of the run, so a short run keeps timed blocks after its whole-block warm-up
    assert steps_per_block(RunConfig(eval_every=0), total=20) == 5
    assert steps_per_block(RunConfig(eval_every=30), total=60) == 15
    assert steps_per_block(RunConfig(eval_every=25), total=468) == 25


def test_recorder_warmup_is_whole_blocks_and_restarts_with_a_resume():
    cfg = RunConfig(eval_every=25)
    for loop in ("custom", "fit", "lightning", "raw"):  # one warm-up for every loop: like-for-like columns
        c = replace(cfg, loop=loop)
        assert Recorder(c, new_result(c, "torch"), 468).warmup == 25
    assert Recorder(RunConfig(eval_every=97), new_result(cfg, "tf"), 468).warmup == 10  # blocks of 1
    rec = Recorder(cfg, new_result(cfg, "torch"), 468, block=25)
    assert rec.warmup == 25 and rec.start == 0
    rec.restart_at(300)
    assert (rec.start, rec.step, rec.warmup) == (300, 300, 25)
    assert Recorder(cfg, new_result(cfg, "torch"), 20, block=5).warmup == 5  # 4 steps of warm-up -> one block
    rec = Recorder(cfg, new_result(cfg, "torch"), 340, block=25)
    rec.restart_at(330)
    assert rec.warmup == 10  # never past the end


@pytest.mark.parametrize("backend,loop,calls", [("tf", "custom", (1, 32)), ("torch", "lightning", (1, 7, 32))])
def test_steps_per_call_changes_dispatch_not_numbers(tmp_path, backend, loop, calls):
    """Blocks of 1, 7 or 21 steps per call (eval every 21 caps 32 at 21; 84 steps keep the quarter-run
    cap at 21) give the same per-step losses and curve (to 1e-6: same ops in the same order;
    --deterministic). Lightning is also held to the raw loop. The warm-up, whole blocks, shows the
    block each run used."""
    runs = {}
    steps = ["--model", "mlp", "--steps", "84", "--eval-every", "21", "--deterministic"]
    for k in calls:
        out = tmp_path / f"{k}.json"
        run_module(BACKENDS[backend], *SMALL, *steps, "--loop", loop, "--steps-per-call", k, "--json", out,
                   check=True, timeout=300)
        runs[k] = json.loads(out.read_text())
        assert runs[k]["throughput"]["warmup_steps"] == {1: 10, 7: 14, 32: 21}[k]  # 10 rounded up to a block
    if backend == "torch":
        out = tmp_path / "raw.json"
        run_module("torch_impl", *SMALL, *steps, "--loop", "raw", "--json", out, check=True, timeout=300)
        runs["raw"] = json.loads(out.read_text())
    ref = runs[calls[0]]
    assert len(ref["train_losses"]) == 84 and [p["step"] for p in ref["curve"]] == [21, 42, 63, 84]
    for k, r in runs.items():
        assert [p["step"] for p in r["curve"]] == [21, 42, 63, 84], k
        diff = np.abs(np.array(r["train_losses"]) - ref["train_losses"]).max()
        assert diff <= 1e-6, f"{k}: per-step losses differ by {diff:.3g}"
        assert [p["test_accuracy"] for p in r["curve"]] == pytest.approx([p["test_accuracy"] for p in ref["curve"]], abs=1e-3)


@pytest.mark.parametrize("backend,loop", [("tf", "custom"), ("torch", "lightning")])
def test_dropout_run_trains_and_records_the_rate(tmp_path, backend, loop):
    out = tmp_path / "r.json"
    run_module(BACKENDS[backend], *SMALL, "--model", "mlp", "--steps", "60", "--eval-every", "30", "--dropout", "0.3",
               "--loop", loop, "--json", out, check=True, timeout=300)
    r = json.loads(out.read_text())
    assert r["status"] == "ok" and r["config"]["dropout"] == 0.3 and r["params"] == 235_146
    assert np.mean(r["train_losses"][-10:]) < 0.7 * np.mean(r["train_losses"][:5])


def test_resume_signature_holds_what_changes_the_numbers():
    from data.contract import ConfigError
    from data.loop import check_resume, run_signature
    const, cosine = RunConfig(loop="raw"), RunConfig(loop="raw", schedule="cosine")
    check_resume(const, run_signature(const, 400), "c", 800)  # a constant rate may run longer
    check_resume(const, run_signature(replace(const, eval_every=50, steps_per_call=8), 400), "c", 400)
    with pytest.raises(ConfigError, match=r"the step budget \(--steps/--epochs; a cosine schedule spans it\) 400 "
                                          r"there, 800 here"):
        check_resume(cosine, run_signature(cosine, 400), "c", 800)
    check_resume(replace(cosine, decay_steps=300), run_signature(replace(cosine, decay_steps=300), 400), "c", 800)
    lit = RunConfig(loop="lightning", eval_every=100)
    with pytest.raises(ConfigError, match="Lightning's steps per training_step .* 25 there, 1 here"):
        check_resume(replace(lit, steps_per_call=1), run_signature(lit, 400), "c", 400)
    check_resume(lit, None, "c", 400)  # a checkpoint from before signatures: trusted
    full, subset = "mnist: 60,000 train / 10,000 evaluation samples, content 1", "mnist (5k subset): 4,000 ..."
    check_resume(const, run_signature(const, 400, full), "c", 400, full)
    check_resume(const, run_signature(const, 400), "c", 400, full)  # a checkpoint from before data ids: trusted
    with pytest.raises(ConfigError, match=r"\(the data \(--data-dir, \$KLC_DATA_DIR or the source found\) "
                                          r"mnist: 60,000 .* 1 there, mnist \(5k subset\): 4,000 \.\.\. here\); "
                                          r"resume with that run's data, or"):
        check_resume(const, run_signature(const, 400, full), "c", 400, subset)
    with pytest.raises(ConfigError, match="--lr 0.001 there, 0.01 here; the data .* resume with that run's settings and data"):
        check_resume(replace(const, lr=0.01), run_signature(const, 400, full), "c", 400, subset)


def test_a_run_resumed_in_its_last_block_keeps_its_speed():
    """Stopped at 450 of 468 (blocks of 25) and resumed: the rest is all warm-up, so samples/s fell back to
    the steps since the resume over the training seconds of both processes: 51 samples/s for 12,800. The
    checkpoint now carries the timed steps and seconds, and samples/s covers both processes."""
    cfg = RunConfig(eval_every=25, batch_size=128, loop="lightning")
    first = Recorder(cfg, new_result(cfg, "torch"), 468)
    for _ in range(18):
        first.add_steps([0.5] * 25, 0.25)  # 0.01 s a step: 12,800 samples/s
    state = json.loads(json.dumps(first.state()))  # as a checkpoint stores it
    again = Recorder(cfg, new_result(cfg, "torch"), 468)
    again.resume(450, state)
    again.add_steps([0.5] * 18, 0.18 + 2.0)  # the new process's warm-up: tracing again
    assert again.samples_per_s() == pytest.approx(12_800)
    r = again.finish("ok")
    assert r["throughput"]["timed_steps"] == first.timed_steps == 425 and r["resumed_at"] == [450]
    # the warm-up: 25 steps in the first process, the 18 left in the second; its seconds are both processes'
    assert r["throughput"]["warmup_steps"] == 25 + 18 and r["throughput"]["warmup_s"] == pytest.approx(0.25 + 2.18)
    # a checkpoint without timed steps (written by an earlier version): this process's own steps and seconds
    bare = Recorder(cfg, new_result(cfg, "torch"), 468)
    bare.resume(450, {k: state[k] for k in ("train_losses", "curve", "train_seconds")})
    bare.add_steps([0.5] * 18, 0.36)
    assert bare.samples_per_s() == pytest.approx(18 * 128 / 0.36)


def test_a_run_resumed_twice_keeps_its_clock_and_every_warm_up():
    """Mutations that passed the suite: curve seconds counted from the resume (they restarted near 0, so
    time-to-beat shrank and curves.png's time ran backwards), and a checkpoint carrying only this process's
    warm-up steps (a second resume lost the first one's, while warmup_s kept all their seconds)."""
    cfg = RunConfig(eval_every=20, batch_size=128, loop="raw")
    seconds, warmups = [], []
    rec, state = None, None
    for start in (0, 40, 80):  # three processes: the first, and two resumes
        rec = Recorder(cfg, new_result(cfg, "torch"), 120, block=1, log=lambda s: None)
        if state:
            rec.resume(start, state)
        w = rec.warmup  # the loops end a chunk where the warm-up ends
        rec.add_steps([0.5] * w, 0.5)
        rec.add_steps([0.5] * (20 - w), 0.5)
        rec.add_eval(0.3, 0.9, 0.1, 100)
        rec.add_steps([0.5] * 20, 1.0)
        rec.add_eval(0.3, 0.9, 0.1, 100)
        warmups.append(w)
        state = json.loads(json.dumps(rec.state()))  # as the checkpoint at the process's last step holds it
    r = rec.finish("ok")
    seconds = [p["seconds"] for p in r["curve"]]
    assert seconds == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and r["final"]["train_seconds"] == pytest.approx(6.0)
    assert warmups == [10, 10, 8]  # warmup_steps(): fewer in the last 40 of 120
    assert r["throughput"]["warmup_steps"] == 28 and r["throughput"]["warmup_s"] == pytest.approx(1.5)
    assert r["throughput"]["timed_steps"] == 120 - 28


def test_a_run_that_ends_inside_its_warm_up_counts_only_the_steps_it_made():
    """A run stopped or diverged after 5 of its 10 warm-up steps reported the whole warm-up as done."""
    cfg = RunConfig(eval_every=0, loop="raw")
    rec = Recorder(cfg, new_result(cfg, "torch"), 400, block=1, log=lambda s: None)
    rec.add_steps([0.5] * 5, 0.5)
    r = rec.finish("interrupted")
    assert rec.warmup == 10 and r["throughput"]["warmup_steps"] == 5 and r["throughput"]["timed_steps"] == 0


def test_recorder_resume_restores_losses_seconds_and_the_last_finite_loss():
    """torch's resume did not restore the last finite loss: a divergence right after it said 'none'."""
    from data.loop import Diverged
    cfg = RunConfig(eval_every=10)
    rec = Recorder(cfg, new_result(cfg, "torch"), 40)
    rec.resume(20, {"train_losses": [0.9] * 19 + [0.5], "curve": [{"step": 10}, {"step": 20}], "train_seconds": 3.0})
    assert (rec.step, rec.start, rec.train_seconds, len(rec.result["train_losses"])) == (20, 20, 3.0, 20)
    with pytest.raises(Diverged, match=r"loss became nan at step 21 \(last finite loss 0.5000\)"):
        rec.add_steps([float("nan")], 0.1)


def test_the_done_line_counts_its_steps_in_words():
    """A one-step run said "done: 1 steps" (and "1 steps of 128" in its header, which prepare writes with
    steps_text)."""
    from data.loop import done_line, steps_text
    assert (steps_text(1), steps_text(0), steps_text(468)) == ("1 step", "0 steps", "468 steps")
    cfg = RunConfig(eval_every=1)
    for steps, words in [(1, "done: 1 step on cpu,"), (3, "done: 3 steps on cpu,")]:
        rec = Recorder(cfg, new_result(cfg, "torch"), steps, log=lambda s: None)
        rec.add_steps([0.5] * steps, 0.1)
        rec.add_eval(0.4, 0.875, 0.01, 100)
        line = done_line(rec.finish("ok"))
        assert words in line and "test_acc 0.8750" in line, line


# A Ctrl-C at a known point of a real run: the child counts the loop's stop checks (data.loop.STOP, read
# between tf's compiled calls, fit's and the raw loop's steps, Lightning's blocks) once `name` exists in
# `folder`, and at the nth sends itself SIGINT, through the real handler. `signals` "INT,INT": a second
# Ctrl-C right after the first; "TERM": SIGTERM (what timeout, docker stop and Slurm send). Deterministic, unlike a signal sent from the test process at some moment.
CTRL_C_AT = """
import __main__, importlib.util, os, signal, sys, time
from pathlib import Path
import data.loop as loop
from data.cli import run_cli
folder, name, nth, signals, module = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","), sys.argv[5]
__main__.__spec__ = importlib.util.find_spec(module + ".__main__")  # DDP: Lightning starts ranks 1.. as python -m <this>
sys.argv = [module, *sys.argv[6:]]  # the backend's own flags, as run_cli reads them
checks, requested = [0], loop.StopRequest.requested.fget
def counted(self):
    if (folder / name).exists():
        checks[0] += 1
        if checks[0] == nth:
            for sig in signals:
                os.kill(os.getpid(), getattr(signal, "SIG" + sig))
                for _ in range(1000):  # the Python-level handler runs at the next bytecode boundary
                    if self.signum is not None:
                        break
                    time.sleep(0.001)
    return requested(self)
loop.StopRequest.requested = property(counted)
sys.exit(run_cli(__import__(module + ".__main__", fromlist=["main"]).main, prog=module))
"""


def ctrl_c_at(backend, args, folder, name, nth, signals="INT"):
    return subprocess.run([sys.executable, "-c", CTRL_C_AT, str(folder), name, str(nth), str(signals), BACKENDS[backend],
                           *map(str, args)], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)


WRITTEN = {"custom": "npz", "fit": "npz", "lightning": "ckpt", "raw": "pt"}  # tf writes its .json before its .npz
# where the third stop check after step 200's checkpoint stops a 400-step run, evaluated every 200 (the
# first check is the one before the next chunk): after one compiled call of 32 steps (tf), two steps (fit
# stops after the step whose start saw the request), one step (the raw loop checks before each), two
# Lightning blocks of 25 (its first check is at the end of the block after the evaluation at 200)
STOPS_AT = {"custom": 232, "fit": 202, "lightning": 275, "raw": 201}


@pytest.mark.parametrize("backend,loop", LOOPS)
def test_ctrl_c_writes_a_checkpoint_where_it_stops_and_the_resume_matches_uninterrupted(tmp_path, backend, loop):
    """Ctrl-C between two checkpoints lost every step since the last one: the run now stops at its next
    step boundary, records those steps and writes a checkpoint there, and the resumed run is the
    uninterrupted one. With dropout, so the checkpoint must carry the generators' state (without it the
    weights differed by 0.046), and a cosine schedule, so it must carry the scheduler's too; --resume must continue from the new checkpoint (a fresh 400-step run,
    or one resumed at 200, would not print its step)."""
    common = [*SMALL, "--model", "cnn", "--steps", "400", "--eval-every", "200", "--deterministic",
              "--loop", loop, "--widths", "8,16,32", "--dropout", "0.25", "--schedule", "cosine"]
    run_module(BACKENDS[backend], *common, "--save-weights", tmp_path / "full.npz", "--json", tmp_path / "full.json",
               check=True, timeout=300)
    ckpt = tmp_path / "ckpt"
    args = [*common, "--checkpoint-dir", ckpt, "--checkpoint-every", "200", "--json", tmp_path / "part.json"]
    at = STOPS_AT[loop]
    proc = ctrl_c_at(backend, args, ckpt, f"step-0000200.{WRITTEN[loop]}", nth=3)
    part = json.loads((tmp_path / "part.json").read_text())
    assert proc.returncode == 130 and part["status"] == "interrupted", f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    assert part["message"] == f"interrupted at step {at}; checkpoint step-{at:07d} in {ckpt}: continue with --resume"
    assert "send it again to stop at once" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert part["final"]["steps"] == len(part["train_losses"]) == at and [p["step"] for p in part["curve"]] == [200]
    assert sorted(p.name for p in ckpt.glob(f"step-*.{WRITTEN[loop]}")) == [f"step-0000200.{WRITTEN[loop]}",
                                                                           f"step-{at:07d}.{WRITTEN[loop]}"]
    proc = run_module(BACKENDS[backend], *args, "--resume", "--save-weights", tmp_path / "resumed.npz", check=True,
                      timeout=300)
    assert f"resumed from step {at}" in proc.stdout + proc.stderr
    resumed, full = json.loads((tmp_path / "part.json").read_text()), json.loads((tmp_path / "full.json").read_text())
    assert resumed["status"] == "ok" and resumed["final"]["steps"] == 400
    # samples/s covers both processes' timed steps, each without its own warm-up
    assert part["throughput"]["timed_steps"] < resumed["throughput"]["timed_steps"] < 400 - 10
    assert resumed["resumed_at"] == [at] and "resumed_at" not in full
    assert len(resumed["train_losses"]) == 400 and [p["step"] for p in resumed["curve"]] == [200, 400]
    if loop != "fit":  # fit records each call's mean loss for its steps, and the resumed run's calls are others
        assert np.abs(np.array(resumed["train_losses"]) - full["train_losses"]).max() <= 1e-6
    assert resumed["curve"][-1]["test_loss"] == pytest.approx(full["curve"][-1]["test_loss"], abs=1e-6)
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    diff = max(np.abs(a[k] - b[k]).max() for k in a.files)
    assert diff <= 1e-6, f"resumed weights differ from the uninterrupted run by {diff:.3g}"


def test_sigterm_stopping_lightning_on_an_evaluation_step_writes_the_evaluation_and_the_checkpoint(tmp_path):
    """Trainer.fit installs its own SIGTERM handler, which raised SystemExit at its next check: inside the
    validation of the step where the run stopped, so neither that evaluation nor the checkpoint after it
    was written. The checks after step 100's checkpoint come at block ends 125 and 150 (blocks of 25)."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = [*SMALL, "--model", "mlp", "--steps", "200", "--eval-every", "50", "--eval-batch-size", "100",
            "--checkpoint-dir", ckpt, "--checkpoint-every", "100", "--loop", "lightning", "--json", out]
    proc = ctrl_c_at("torch", args, ckpt, "step-0000100.ckpt", nth=2, signals="TERM")
    r = json.loads(out.read_text())
    assert proc.returncode == 130 and r["message"].startswith("interrupted at step 150; checkpoint step-0000150"), \
        f"exit {proc.returncode}: {r['message']} {proc.stderr[-1500:]}"
    assert [p["step"] for p in r["curve"]] == [50, 100, 150] and (ckpt / "step-0000150.ckpt").exists()
    again = run_module("torch_impl", *args, "--resume", timeout=300)
    r = json.loads(out.read_text())
    assert again.returncode == 0 and "resumed from step 150" in again.stdout, again.stderr[-1500:]
    assert [p["step"] for p in r["curve"]] == [50, 100, 150, 200] and len(r["train_losses"]) == 200


SIGTERM_IN_FINAL_VALIDATE = """
import os, signal, sys, time
import data.loop as loop
from data.cli import run_cli
import torch_impl.module as module
step, sent = module.LitClassifier.validation_step, []
def validation_step(self, batch, batch_idx):
    if self.trainer.state.fn == "validate" and not sent:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            if loop.STOP.signum is not None:
                break
            time.sleep(0.001)
    return step(self, batch, batch_idx)
module.LitClassifier.validation_step = validation_step
sys.argv = ["torch_impl", *sys.argv[1:]]
sys.exit(run_cli(__import__("torch_impl.__main__", fromlist=["main"]).main, prog="torch_impl"))
"""


def test_sigterm_during_lightnings_last_evaluation_still_writes_the_result(tmp_path):
    """A last step off the --eval-every grid (always, with --eval-every 0) is evaluated by Trainer.validate after fit,
    which installs Lightning's SIGTERM handler again: a SIGTERM there ended the process with exit 0 and no result
    (SIGTERMException is a SystemExit, caught only around fit). The evaluation now finishes and the run is ok."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-c", SIGTERM_IN_FINAL_VALIDATE, *SMALL, "--model", "mlp", "--steps", "30",
                           "--eval-every", "0", "--json", str(out)], cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and out.exists(), f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    r = json.loads(out.read_text())
    assert r["status"] == "ok" and [p["step"] for p in r["curve"]] == [30] and len(r["train_losses"]) == 30
    assert "stopping after the current step" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ddp_ranks_stop_together_when_rank_0_alone_is_asked(tmp_path):
    """Lightning DDP stopped at once on Ctrl-C, losing the steps since the last checkpoint. The ranks now agree
    every --steps-per-call steps (DDP's blocks are one step) whether any of them was asked to stop. Here rank
    0 alone gets a SIGTERM (as from `kill` or a scheduler), at its first check after step 20's checkpoint,
    step 25: without the agreement, rank 0 would stop there and rank 1 wait in the next step's all-reduce
    (the test times out). Both stop after step 25, the checkpoint there resumes, and the resumed run is the
    uninterrupted one."""
    common = [*SMALL, "--model", "mlp", "--steps", "60", "--eval-every", "20", "--devices", "2", "--dropout", "0.25",
              "--loop", "lightning", "--steps-per-call", "5"]
    run_module("torch_impl", *common, "--save-weights", tmp_path / "full.npz", "--json", tmp_path / "full.json",
               check=True, timeout=300)
    ckpt, out = tmp_path / "ckpt", tmp_path / "part.json"
    args = [*common, "--checkpoint-dir", ckpt, "--checkpoint-every", "20", "--json", out]
    proc = ctrl_c_at("torch", args, ckpt, "step-0000020.ckpt", nth=1, signals="TERM")
    part = json.loads(out.read_text())
    assert proc.returncode == 130, f"exit {proc.returncode}: {part['message']} {proc.stderr[-1500:]}"
    assert part["message"] == f"interrupted at step 25; checkpoint step-0000025 in {ckpt}: continue with --resume"
    assert proc.stderr.count("stopping after the current step") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(part["train_losses"]) == 25 and [p["step"] for p in part["curve"]] == [20]
    assert sorted(p.name for p in ckpt.glob("step-*.ckpt")) == ["step-0000020.ckpt", "step-0000025.ckpt"]
    again = run_module("torch_impl", *args, "--resume", "--save-weights", tmp_path / "resumed.npz", timeout=300)
    assert again.returncode == 0 and "resumed from step 25" in again.stdout, again.stderr[-1500:]
    resumed, full = json.loads(out.read_text()), json.loads((tmp_path / "full.json").read_text())
    assert [p["step"] for p in resumed["curve"]] == [20, 40, 60] and resumed["resumed_at"] == [25]
    assert np.abs(np.array(resumed["train_losses"]) - full["train_losses"]).max() <= 1e-6
    a, b = np.load(tmp_path / "full.npz"), np.load(tmp_path / "resumed.npz")
    diff = max(np.abs(a[k] - b[k]).max() for k in a.files)
    assert diff <= 1e-6, f"resumed weights differ from the uninterrupted run by {diff:.3g}"


def test_lightning_resumes_mid_epoch_without_its_unreliable_results_warning(tmp_path):
    """Lightning warned on resumes that did not fall on its epoch's block count ("your dataloader is not
    resumable. This can cause unreliable results"): a false alarm in every such resume's log, since the
    blocks restart at the restored global step. The loader now says so (state_dict): no warning, and a run
    of 20 steps resumed to 50 is the 50-step run, weights and losses."""
    flags = [*SMALL, "--model", "mlp", "--eval-every", "5", "--checkpoint-every", "5", "--steps-per-call", "5"]
    ckpt = tmp_path / "ck"
    run_module("torch_impl", *flags, "--steps", "20", "--checkpoint-dir", ckpt, "--json", tmp_path / "r.json",
               check=True, timeout=300)
    resumed = run_module("torch_impl", *flags, "--steps", "50", "--checkpoint-dir", ckpt, "--resume",
                         "--json", tmp_path / "r.json", "--save-weights", tmp_path / "resumed.npz", check=True, timeout=300)
    assert "resumed from step 20" in resumed.stdout and "not resumable" not in resumed.stderr, resumed.stderr[-1500:]
    run_module("torch_impl", *flags, "--steps", "50", "--checkpoint-dir", tmp_path / "full", "--json",
               tmp_path / "full.json", "--save-weights", tmp_path / "full.npz", check=True, timeout=300)
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "full.npz")
    assert max(np.abs(a[k] - b[k]).max() for k in a.files) <= 1e-6
    r, full = json.loads((tmp_path / "r.json").read_text()), json.loads((tmp_path / "full.json").read_text())
    assert np.abs(np.array(r["train_losses"]) - full["train_losses"]).max() <= 1e-6 and len(r["train_losses"]) == 50


def test_sighup_stops_a_run_as_ctrl_c_does(tmp_path):
    """A closed terminal or ssh session sends SIGHUP, which killed a run with no result and no checkpoint."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = [*SMALL, "--model", "mlp", "--steps", "400", "--eval-every", "200", "--checkpoint-dir", ckpt,
            "--checkpoint-every", "200", "--loop", "raw", "--json", out]
    proc = ctrl_c_at("torch", args, ckpt, "step-0000200.pt", nth=3, signals="HUP")
    r = json.loads(out.read_text())
    assert proc.returncode == 130 and r["message"] == f"interrupted at step 201; checkpoint step-0000201 in {ckpt}: " \
        "continue with --resume", f"exit {proc.returncode}: {r['message']} {proc.stderr[-1500:]}"


@pytest.mark.parametrize("backend,loop", [("tf", "custom"), ("torch", "lightning")])
def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path, backend, loop):
    """Two signals in a row (here both at one stop check): the second raises KeyboardInterrupt where it lands
    instead of waiting for a step boundary, so no stop checkpoint is written (mid-step, tf's weights may be
    ahead of the recorded step); the result still is, with the steps recorded so far."""
    ckpt = tmp_path / "ckpt"
    args = [*SMALL, "--model", "mlp", "--steps", "400", "--eval-every", "100", "--checkpoint-dir", ckpt,
            "--checkpoint-every", "100", "--loop", loop, "--json", tmp_path / "r.json"]
    proc = ctrl_c_at(backend, args, ckpt, f"step-0000100.{WRITTEN[loop]}", nth=2, signals="INT,INT")
    r = json.loads((tmp_path / "r.json").read_text())
    assert proc.returncode == 130 and r["status"] == "interrupted", f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    assert r["message"] == f"interrupted at step {r['final']['steps']}" and len(r["train_losses"]) == r["final"]["steps"]
    assert 100 <= r["final"]["steps"] < 400 and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert sorted(p.name for p in ckpt.glob(f"step-*.{WRITTEN[loop]}")) == [f"step-0000100.{WRITTEN[loop]}"]


def test_lightning_checkpoints_a_last_step_off_the_evaluation_grid(tmp_path):
    """40 steps, evaluated every 15, checkpointed every 20: step 40 is a checkpoint step where Lightning's fit
    loop does not validate (the end is validated after fit), so its checkpoint is written at the block end.
    It was not (the rule for 'an evaluation follows' counted the end), and --resume then trained the
    finished run again from step 20."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = [*SMALL, "--model", "mlp", "--steps", "40", "--eval-every", "15", "--checkpoint-dir", ckpt,
            "--checkpoint-every", "20", "--loop", "lightning", "--json", out]
    run_module("torch_impl", *args, check=True, timeout=300)
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-0000020.ckpt", "step-0000040.ckpt"]
    again = run_module("torch_impl", *args, "--resume", timeout=300)
    assert again.returncode == 0 and "holds its finished result" in again.stdout, again.stdout[-1500:] + again.stderr[-1500:]


def test_a_lightning_training_checkpoint_loads_with_lightnings_own_loader(tmp_path):
    """`LitClassifier.load_from_checkpoint(path)`, no other argument, on a checkpoint the training wrote: the
    module it rebuilds holds the run's final weights (its logits are those of the --save-weights file loaded
    into a fresh backbone, to float32 rounding: the same weights, the same framework), and its hparams the
    architecture and the run's settings. Without hyper-parameters in the checkpoint, the loader raised a
    TypeError for the four missing arguments. And a Trainer and DataLoader of one's own train it on (a plain
    (images, labels) batch per training_step: it took only the project's blocks of batches, and failed to
    unpack one)."""
    ckpt = tmp_path / "ckpt"
    run_module("torch_impl", *SMALL, "--model", "cnn", "--widths", "8,16,32", "--lr", "0.002", "--steps", "20",
               "--eval-every", "10", "--checkpoint-dir", ckpt, "--checkpoint-every", "10",
               "--save-weights", tmp_path / "w.npz", check=True, timeout=300)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", images=rng.random((16, 28, 28, 1), dtype=np.float32), labels=rng.integers(0, 10, 16))
    base = dict(model="cnn", input_shape=[28, 28, 1], num_classes=10, widths=[8, 16, 32], inputs=str(tmp_path / "x.npz"))
    (tmp_path / "jobs.json").write_text(json.dumps({"jobs": [
        dict(base, op="saved_logits", src=str(ckpt / "step-0000020.ckpt"), out=str(tmp_path / "loaded.npz"),
             hparams=str(tmp_path / "hparams.json")),
        dict(base, op="logits", weights=str(tmp_path / "w.npz"), out=str(tmp_path / "saved.npz")),
        dict(base, op="fit_plain", src=str(ckpt / "step-0000020.ckpt"), steps=3, out=str(tmp_path / "fit.json"))]}))
    run_module("torch_impl.jobs", tmp_path / "jobs.json", check=True, timeout=300)
    loaded, saved = (np.load(tmp_path / f"{name}.npz")["logits"] for name in ("loaded", "saved"))
    assert loaded.shape == (16, 10) and np.abs(loaded - saved).max() <= 1e-6
    hp = json.loads((tmp_path / "hparams.json").read_text())
    assert {k: hp[k] for k in ("model", "input_shape", "num_classes", "widths", "dropout", "total_steps")} == {
        "model": "cnn", "input_shape": [28, 28, 1], "num_classes": 10, "widths": [8, 16, 32], "dropout": 0.0,
        "total_steps": 20}
    assert hp["config"] == {**hp["config"], "lr": 0.002, "steps": 20, "train_limit": 2048, "batch_size": 32}
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["global_step"] == 3 and fit["moved"] > 1e-4, fit  # Adam at lr 0.002 moves some weight by ~lr a step


@pytest.mark.parametrize("backend,loop", [("tf", "custom"), ("torch", "lightning"), ("torch", "raw")])
def test_a_checkpoint_resumes_only_on_the_data_it_trained_on(tmp_path, backend, loop):
    """A resume found its checkpoint by its settings alone: a full-MNIST run resumed on the 5k subset (a
    comparison resumed without the KLC_DATA_DIR it started with) and finished without a word, its curve
    half on each. Now the same content from another folder (recompressed: other file bytes) resumes; other
    content is refused, in one line that names both, and the checkpoints stay."""
    from data_fixtures import tiny_idx_arrays, write_idx_dataset
    arrays = tiny_idx_arrays(seed=0, n_train=64, n_test=20)
    first, copy = write_idx_dataset(tmp_path / "a", arrays), write_idx_dataset(tmp_path / "copy", arrays, level=1)
    other = write_idx_dataset(tmp_path / "b", tiny_idx_arrays(seed=1, n_train=64, n_test=20))
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = ["--dataset", "mnist", "--no-verify", "--batch-size", "16", "--threads", "2", "--no-progress", "--model",
            "mlp", "--steps", "4", "--eval-every", "2", "--checkpoint-dir", ckpt, "--checkpoint-every", "2",
            "--loop", loop, "--json", out]
    assert run_module(BACKENDS[backend], *args, "--data-dir", first, timeout=300).returncode == 0
    kept = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    refused = run_module(BACKENDS[backend], *args, "--data-dir", other, "--resume", timeout=300)
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert refused.returncode == 2 and len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr[-1500:]
    said = re.search(r"\(the data \(--data-dir, \$KLC_DATA_DIR or the source found\) mnist: 64 train / 20 evaluation "
                     r"samples, content (\w+) there, mnist: 64 train / 20 evaluation samples, content (\w+) here\); "
                     r"resume with that run's data", errors[0])
    assert said and said[1] != said[2], errors[0]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == kept
    same = run_module(BACKENDS[backend], *args, "--data-dir", copy, "--resume", timeout=300)
    assert same.returncode == 0 and "holds its finished result" in same.stdout, same.stdout[-1500:] + same.stderr[-1500:]


@pytest.mark.parametrize("backend,loop", [("tf", "custom"), ("torch", "lightning"), ("torch", "raw")])
def test_checkpoints_of_another_run_are_refused_and_kept(tmp_path, backend, loop):
    """A new run in a folder of checkpoints deleted its own (the newest two by name were kept) and a
    --resume with other settings either crashed loading (another model) or silently went on (another lr)."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = [*SMALL, "--model", "mlp", "--steps", "40", "--eval-every", "20", "--checkpoint-dir", ckpt,
            "--checkpoint-every", "20", "--loop", loop, "--json", out]
    assert run_module(BACKENDS[backend], *args, timeout=300).returncode == 0
    kept, result = {p.name: p.read_bytes() for p in ckpt.iterdir()}, out.read_bytes()
    again = run_module(BACKENDS[backend], *args, timeout=300)
    errors = [l for l in again.stderr.splitlines() if "error" in l]
    assert again.returncode == 2 and len(errors) == 1, again.stderr[-1500:]
    assert "already holds checkpoints (step-0000040" in errors[0] and "--resume" in errors[0]
    # Lightning counts evaluations in blocks restored from the checkpoint: resumed with another block size
    # (--steps-per-call, or the step budget's quarter-run cap) they fell on other steps. The other loops
    # may continue with either changed (constant schedule).
    block = "; Lightning's steps per training_step (from --steps, --eval-every, --checkpoint-every and " \
            "--steps-per-call) {} there, {} here"
    for flags, said in ((["--lr", "0.01", "--steps", "80"], "--lr 0.001 there, 0.01 here"
                         + (block.format(10, 20) if loop == "lightning" else "") + ")"),
                        (["--model", "cnn", "--steps-per-call", "1"], "--model mlp there, cnn here"
                         + (block.format(10, 1) if loop == "lightning" else "") + ")")):
        other = run_module(BACKENDS[backend], *args, *flags, "--resume", timeout=300)
        errors = [l for l in other.stderr.splitlines() if "error" in l]
        assert other.returncode == 2 and len(errors) == 1 and "Traceback" not in other.stderr, other.stderr[-1500:]
        assert "is a checkpoint of another run" in errors[0] and said in errors[0], errors[0]
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == kept
    # the same command again with --resume: the run had finished, so its result stays as it was (it was
    # rewritten with nothing timed: null samples/s)
    done = run_module(BACKENDS[backend], *args, "--resume", timeout=300)
    assert done.returncode == 0 and "holds its finished result" in done.stdout, done.stdout[-1500:] + done.stderr[-1500:]
    assert out.read_bytes() == result and {p.name: p.read_bytes() for p in ckpt.iterdir()} == kept
    # a newest checkpoint cut short (a crash while it was written) is passed over for the one before it
    newest = max(ckpt.glob("step-0000040.*"), key=lambda p: p.suffix != ".json")
    newest.write_bytes(newest.read_bytes()[:200])
    again = run_module(BACKENDS[backend], *args, "--resume", timeout=300)
    assert again.returncode == 0, again.stderr[-1500:]
    assert f"{newest.name}: " in again.stdout and "cannot be read, trying the one before it" in again.stdout
    assert "resumed from step 20" in again.stdout
    r = json.loads(out.read_text())
    assert r["status"] == "ok" and len(r["train_losses"]) == 40 and [c["step"] for c in r["curve"]] == [20, 40]


@pytest.mark.parametrize("backend,loop", [("tf", "custom"), ("torch", "lightning"), ("torch", "raw")])
def test_resume_with_fewer_steps_left_than_the_evaluation_interval(tmp_path, backend, loop):
    """Checkpoint every 100, evaluate every 200, stopped after 300: 100 steps (Lightning: 75) remain, fewer than one
    evaluation interval. Lightning must count val_check_interval over the whole run (not per pass of
    the resumed loader, which would be refused as longer than the loader) and still evaluate at 400."""
    ckpt = tmp_path / "ckpt"
    args = [*SMALL, "--model", "cnn", "--widths", "8,16,32", "--steps", "400", "--eval-every", "200",
            "--checkpoint-dir", ckpt, "--checkpoint-every", "100", "--loop", loop, "--json", tmp_path / "r.json"]
    # Ctrl-C right after the checkpoint at 300: the custom loops stop there (their next stop check comes
    # before the next chunk: no second checkpoint), Lightning after the block it is in (25 steps)
    stop = ctrl_c_at(backend, args, ckpt, f"step-0000300.{WRITTEN[loop]}", nth=1)
    at = {"custom": 300, "lightning": 325, "raw": 300}[loop]
    assert stop.returncode == 130, f"exit {stop.returncode}: {stop.stderr[-1500:]}"
    assert len(list(ckpt.glob(f"step-*.{WRITTEN[loop]}"))) == 2 and (ckpt / f"step-{at:07d}.{WRITTEN[loop]}").exists()
    proc = run_module(BACKENDS[backend], *args, "--resume", timeout=300)
    r = json.loads((tmp_path / "r.json").read_text())
    assert proc.returncode == 0 and r["status"] == "ok", proc.stderr[-1500:]
    assert f"resumed from step {at}" in proc.stdout + proc.stderr
    assert len(r["train_losses"]) == 400 and [p["step"] for p in r["curve"]] == [200, 400]
    assert r["resumed_at"] == [at] and 0 < r["throughput"]["timed_steps"] <= 400 - 10 - (10 if loop != "lightning" else 25)


@pytest.mark.parametrize("backend,loop", LOOPS)
def test_a_finished_run_resumed_with_a_larger_budget_keeps_its_last_evaluation(tmp_path, backend, loop):
    """--resume may raise --steps. The checkpoint at a run's last step must hold that step's evaluation
    (the end of the run, off the --eval-every grid): Lightning wrote it before that evaluation, so its
    resumed curve lacked step 30 while the other loops kept it, and steps-to-beat could differ."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = [*SMALL, "--model", "mlp", "--eval-every", "20", "--checkpoint-dir", ckpt, "--checkpoint-every", "10",
            "--steps-per-call", "5", "--loop", loop, "--json", out]
    first = run_module(BACKENDS[backend], *args, "--steps", "30", timeout=300)
    assert first.returncode == 0, first.stderr[-1500:]
    at_30 = json.loads(out.read_text())["curve"][-1]
    assert at_30["step"] == 30
    more = run_module(BACKENDS[backend], *args, "--steps", "60", "--resume", timeout=300)
    assert more.returncode == 0 and "resumed from step 30" in more.stdout, more.stderr[-1500:]
    r = json.loads(out.read_text())
    assert [p["step"] for p in r["curve"]] == [20, 30, 40, 60] and r["curve"][1] == at_30
    assert len(r["train_losses"]) == 60 and r["resumed_at"] == [30]


@pytest.mark.parametrize("backend,loop", LOOPS)
def test_evaluation_flags_held_out_share_and_target_accuracy(tmp_path, backend, loop):
    """--val-fraction evaluates on the held-out share; --target-accuracy stops at the first evaluation
    that reaches it (status ok); --init native and --eval-batch-size are accepted and recorded."""
    out = tmp_path / "r.json"
    proc = run_module(BACKENDS[backend], *SMALL, "--model", "mlp", "--steps", "300", "--eval-every", "20",
                      "--val-fraction", "0.3", "--target-accuracy", "0.8", "--init", "native", "--eval-batch-size",
                      "100", "--loop", loop, "--json", out, timeout=300)
    r = json.loads(out.read_text())
    assert proc.returncode == 0 and r["status"] == "ok", proc.stderr[-1500:]
    assert "evaluated on 614 training samples held out (--val-fraction 0.3)" in proc.stdout
    assert r["config"]["val_fraction"] == 0.3 and r["config"]["init"] == "native" and r["config"]["eval_batch_size"] == 100
    accs = [p["test_accuracy"] for p in r["curve"]]
    for a in accs:  # round(2048 * 0.3) = 614 samples: accuracies are k / 614, not k / (test split size)
        assert abs(a * 614 - round(a * 614)) < 1e-3 and a != 0.5, a
    assert accs[-1] >= 0.8 and all(a < 0.8 for a in accs[:-1])  # stopped at the first evaluation at 0.8
    assert r["final"]["steps"] == r["curve"][-1]["step"] < 300 and len(r["train_losses"]) == r["final"]["steps"]
    assert "reached test accuracy" in r["message"] and r["final"]["test_accuracy"] == accs[-1]


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_init_flag_decides_the_starting_weights(tmp_path, backend):
    """--init shared starts from the numpy draw (data.weights), --init native from the framework's own
    initialisers: after one Adam step (each weight moves by about lr = 1e-3) the shared run's weights lie
    within 2e-3 of the draw, the native run's far from it (other values; torch's biases are not zero).
    A backend that ignored --init (or always loaded the draw) passed every other test."""
    from data import arch, weights as neutral
    draw = neutral.initial_weights(arch.build_layers("mlp", (28, 28, 1), 10), 0)
    gaps = {}
    for init in ("shared", "native"):
        out = tmp_path / f"{init}.npz"
        run_module(BACKENDS[backend], *SMALL, "--model", "mlp", "--steps", "1", "--eval-every", "0", "--init", init,
                   "--save-weights", out, check=True, timeout=300)
        w = np.load(out)
        gaps[init] = max(np.abs(w[k] - draw[k]).max() for k in draw)
    assert gaps["shared"] <= 2e-3 and gaps["native"] > 1e-2, gaps


@pytest.mark.parametrize("backend,loop", LOOPS)
def test_divergence_stops_with_status(tmp_path, backend, loop):
    out = tmp_path / "r.json"
    proc = run_module(BACKENDS[backend], *SMALL, "--model", "mlp", "--steps", "60", "--eval-every", "20",
                      "--optimizer", "sgd", "--lr", "1e9", "--loop", loop, "--json", out, timeout=300)
    r = json.loads(out.read_text())
    assert proc.returncode == 3, proc.stderr[-1500:]
    assert r["status"] == "diverged" and "last finite loss" in r["message"]
    if loop == "fit":  # fit reports one mean per call: the NaN is somewhere in that call's steps (the warm-up's 10)
        assert "loss became nan in steps 1-10 (the loop reports one mean loss per call)" in r["message"], r["message"]
    else:
        assert re.search(r"loss became (nan|inf) at step [2-9] ", r["message"]), r["message"]
    assert all(math.isfinite(v) for v in r["train_losses"])
    assert len([l for l in proc.stderr.splitlines() if "diverged" in l]) == 1


def at_each_evaluation(hook: str) -> str:
    """A child script running `python -m MODULE ARGS...` (argv: MODULE, then ARGS) with `hook`'s at_evaluation()
    called at every evaluation's start: Run.evaluate in tf's loops and the raw loop, the first validation batch in
    Lightning. `hook` may take its own arguments from sys.argv[2:] first."""
    return """
import sys
from data.cli import run_cli
module = sys.argv[1]
train = __import__(module + ".train", fromlist=["Run"])
""" + hook + """
evaluate = train.Run.evaluate
def hooked_evaluate(self):  # tf's loops and the raw loop
    at_evaluation()
    return evaluate(self)
train.Run.evaluate = hooked_evaluate
if module == "torch_impl":  # Lightning validates through its module
    import torch_impl.module as lit
    step = lit.LitClassifier.validation_step
    def hooked_step(self, batch, batch_idx):
        if batch_idx == 0:
            at_evaluation()
        return step(self, batch, batch_idx)
    lit.LitClassifier.validation_step = hooked_step
sys.argv = [module, *sys.argv[2:]]
sys.exit(run_cli(__import__(module + ".__main__", fromlist=["main"]).main, prog=module))
"""


# A framework's allocation failure at the second evaluation, as each raises it: torch's CPU allocator (its
# message verbatim, from a --widths 65536,64,128 --batch-size 1024 run here) or CUDA's OutOfMemoryError; TF's
# ResourceExhaustedError (on a CPU, TF segfaults on such a failure instead: the memory floor guards it).
OOM_AT_SECOND_EVAL = """
kind, calls = sys.argv.pop(2), []
def at_evaluation():
    calls.append(1)
    if len(calls) == 2:
        if kind == "tf":
            import tensorflow as tf
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1024,8192,28,28]")
        import torch
        if kind == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.50 GiB.")
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 210453397504 bytes. Error code 12 (Cannot allocate memory)")
"""


@pytest.mark.parametrize("backend,loop,kind", [("tf", "custom", "tf"), ("tf", "fit", "tf"), ("torch", "lightning", "cpu"),
                                               ("torch", "lightning", "cuda"), ("torch", "raw", "cpu")])
def test_running_out_of_memory_is_one_line_and_keeps_the_result(tmp_path, backend, loop, kind):
    """Out of memory mid-run ended in the framework's traceback (torch: exit 1) with no result JSON, losing the
    curve so far. Now the run fails in one line (exit 1) naming the flags to lower, the result holds the steps
    and evaluations made before it."""
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-c", at_each_evaluation(OOM_AT_SECOND_EVAL), BACKENDS[backend], kind,
                           *SMALL, "--model", "mlp", "--steps", "40", "--eval-every", "20", "--loop", loop,
                           "--json", str(out)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and out.exists(), f"exit {proc.returncode}: {proc.stderr[-1500:]}"
    r = json.loads(out.read_text())
    assert r["status"] == "failed" and [p["step"] for p in r["curve"]] == [20] and len(r["train_losses"]) == 40
    assert r["message"].startswith("out of memory after step 40 (") and r["message"].endswith(
        "); lower --batch-size, --eval-batch-size or --widths"), r["message"]
    assert ("allocate" in r["message"] or "OOM" in r["message"]) and "Traceback" not in proc.stderr, proc.stderr[-1500:]
    assert [l for l in proc.stderr.splitlines() if "out of memory" in l] == [f"{backend}: failed: {r['message']}"]


NAN_LOSS_RUN = """
import sys
import numpy as np
from data.contract import RunConfig
from data.loop import prepare
backend, loop = sys.argv[1], sys.argv[2]
Run = __import__(f"{backend}_impl.train", fromlist=["Run"]).Run
cfg = RunConfig(dataset="mnist", model="mlp", train_limit=256, batch_size=32, steps=1, eval_every=0, threads=1,
                eval_batch_size=100, loop=loop)
data, stream, total, layers = prepare(cfg, backend, say=lambda s: None)
stream.test_images, stream.test_labels = stream.test_images[:300].copy(), stream.test_labels[:300]
stream.test_images[150] = np.nan  # one sample of the middle batch
r = Run(cfg, stream, total, layers)
if backend == "tf":  # tf.function's fused Dense+ReLU maps nan to 0 on this CPU: the nan never reaches the loss,
    r.loss_metric.update_state(np.array([0.5, np.nan, 1.5], np.float32))  # so its own loss metric gets one
    print(float(r.loss_metric.result()), float("nan"), len(stream.test_labels))
else:
    loss, acc, _, n = r.evaluate()  # the evaluation the raw loop calls: nan logits for that sample
    print(loss, acc, n)
"""
NAN_LOSS_LIGHTNING = """
import torch
from torch_impl.module import LitClassifier
module = LitClassifier("mlp", [4], 4, backbone=torch.nn.Flatten())  # logits = the 4 input values
module.on_validation_epoch_start()
images = torch.tensor([[9.0, 0, 0, 0], [float("nan"), 0, 0, 0], [0, 9.0, 0, 0]])
module.validation_step((images, torch.tensor([0, 0, 1])), 0)
print(float(module.test_loss.compute()), float(module.test_acc.compute()))
"""


def test_a_nan_test_loss_stays_nan_in_both_backends(tmp_path):
    """torchmetrics' MeanMetric drops NaNs by default (with a warning), so a half-broken model's
    Lightning test loss was the mean of the finite ones while Keras's Mean (and the raw loop's sum) say nan.
    The raw loop runs its evaluation (Run.evaluate) on a test split with one nan image; Lightning its
    module's validation step; tf custom (and model.fit, which shares its evaluate) its Run's own loss metric,
    fed a nan directly: in tf's compiled graph the fused Dense+ReLU turns a nan activation into 0 on
    this CPU (eager Keras keeps it), so a nan image gives finite logits there."""
    outs = {}
    for name, script in (("tf custom", [NAN_LOSS_RUN, "tf", "custom"]), ("torch raw", [NAN_LOSS_RUN, "torch", "raw"]),
                         ("lightning", [NAN_LOSS_LIGHTNING])):
        proc = subprocess.run([sys.executable, "-c", *script], capture_output=True, text=True, timeout=300,
                              env=child_env(), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[name] = [float(v) for v in proc.stdout.split()]
    assert outs["torch raw"][2] == 300, outs  # every sample evaluated, none dropped
    assert all(math.isnan(v[0]) for v in outs.values()), outs


def test_peak_probes_count_every_chained_product(tmp_path):
    """Both peak probes run the same chain of products (10 per host sync on a GPU). Checked on the CPU
    with 1 and 4 products per sync: were products merged or skipped, 4 would read ~4x the peak of 1."""
    order = (1, 4, 1, 4)  # alternated; each m's best counts (the second of each overwrote the first, so one busy
    jobs = [{"op": "peak", "n_cpu": 512, "budget_s": 0.4, "matmuls": m,  # window on a shared machine failed it)
             "out": str(tmp_path / f"peak{m}-{i}_BK.json")} for i, m in enumerate(order)]
    run_jobs_in_both(tmp_path, "peak", jobs, threads=2)
    for backend in ("tf", "torch"):
        got = {m: [json.loads((tmp_path / f"peak{m}-{i}_{backend}.json").read_text())
                   for i, mm in enumerate(order) if mm == m] for m in (1, 4)}
        assert {r["matmuls_per_sync"] for r in got[4]} == {4} and {r["matmuls_per_sync"] for r in got[1]} == {1}
        ratio = max(r["peak_flops"] for r in got[4]) / max(r["peak_flops"] for r in got[1])
        assert 0.5 < ratio < 2.0, (backend, ratio)


FP32_FLAGS = {"tf": "from tf_impl.train import configure; tf, _ = configure(RunConfig(precision=P)); "
                    "print(tf.config.experimental.tensor_float_32_execution_enabled())",
              "torch": "from torch_impl.train import configure; t = configure(RunConfig(precision=P)); "
                       "print(t.backends.cuda.matmul.allow_tf32 or t.backends.cudnn.allow_tf32)"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp32_runs_turn_tf32_off(backend):
    """On Ampere and later GPUs TensorFlow (matmuls) and cuDNN (torch's convolutions) default to TF32, a
    10-bit mantissa: the ports would neither be fp32 nor agree. --precision 32 turns it off in both;
    bf16 runs leave the defaults."""
    for precision, expected in (("32", "False"), ("bf16", "True")):  # bf16: TensorFlow's and cuDNN's defaults
        code = f"from data.contract import RunConfig; P = {precision!r}; " + FP32_FLAGS[backend]
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(),
                              cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr[-1500:]
        assert proc.stdout.strip().splitlines()[-1] == expected, (precision, proc.stdout)


GPU_CONFIG = """
import os, torch
from data.contract import ConfigError, RunConfig
from torch_impl.train import configure
torch.cuda.is_available, torch.cuda.device_count = (lambda: True), (lambda: 1)  # one GPU, as torch would say it
try:
    configure(RunConfig(devices=2))
except ConfigError as e:
    print("refused:", e)
from types import SimpleNamespace  # an 8 GiB GPU: the memory floor is its, and a batch split over 2 is each one's
torch.cuda.get_device_properties = lambda i: SimpleNamespace(total_memory=8 * 2**30, name="Fake GPU")
for devices in (1, 2):
    torch.cuda.device_count = lambda: devices
    try:
        configure(RunConfig(model="cnn", widths=(512, 64, 128), batch_size=8192, devices=devices))
        print("trains on", devices)
    except ConfigError as e:
        print("refused:", e)
torch.cuda.is_available = lambda: False
configure(RunConfig(deterministic=True))
print("cublas:", os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
"""


CPU_BUILD_ON_A_GPU_MACHINE = """
import sys
from data.contract import ConfigError, RunConfig
import data.contract
train = __import__(sys.argv[1] + ".train", fromlist=["configure"])
data.contract.accelerator_visible = lambda: True  # a GPU machine: the parser checked the weights alone
try:
    train.configure(RunConfig(model="cnn", widths=(4096, 64, 128), batch_size=60000))
except ConfigError as e:
    print("refused:", e)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_cpu_build_on_a_gpu_machine_checks_the_batch_against_host_memory(backend):
    """Where a GPU is visible the parser leaves the activations to the backend; a CPU build (tensorflow-cpu, torch
    +cpu) then trains in host memory and must check them there: TensorFlow segfaults on a CPU allocation failure."""
    proc = subprocess.run([sys.executable, "-c", CPU_BUILD_ON_A_GPU_MACHINE, BACKENDS[backend]], capture_output=True,
                          text=True, env=child_env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.startswith("refused: --batch-size 60000 with --widths 4096,64,128 for --model cnn: to train, "
                                  "a batch's activations"), proc.stdout


def test_torch_gpu_settings_are_made_before_the_first_cuda_call():
    """Read on a review, for the GPU this machine lacks: `--devices 2` on a one-GPU machine was Lightning's
    MisconfigurationException (a traceback, exit 1; tf says it in one line), and `--deterministic` left
    CUBLAS_WORKSPACE_CONFIG unset until Lightning's Trainer, after cuBLAS had read it at the first matmul (the
    raw loop never set it): every CUDA matmul refused under deterministic algorithms. The memory floor for a GPU
    run is the GPU's (the parser checks only the weights against host memory where a GPU is visible)."""
    env = {k: v for k, v in child_env().items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    proc = subprocess.run([sys.executable, "-c", GPU_CONFIG], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "refused: --devices 2: only 1 GPU(s) visible to torch" in proc.stdout, proc.stdout
    assert "cublas: :4096:8" in proc.stdout, proc.stdout
    assert ("refused: --batch-size 8192 with --widths 512,64,128 for --model cnn: to train, a batch's activations"
            in proc.stdout and "GPU 0 (Fake GPU) has 8.0 GiB" in proc.stdout and "trains on 2" in proc.stdout), proc.stdout


def test_a_raw_loop_checkpoint_written_on_a_gpu_resumes_on_a_cpu(tmp_path):
    """The raw loop read its checkpoint with map_location=None: a checkpoint saved on a GPU names cuda:0, and on
    a machine without one torch refused it, read as damaged: "no readable checkpoint". Simulated here by
    saving this machine's checkpoint with every tensor tagged cuda:0."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "r.json"
    args = [*SMALL, "--model", "mlp", "--eval-every", "10", "--checkpoint-dir", ckpt, "--checkpoint-every", "10",
            "--loop", "raw", "--json", out]
    assert run_module("torch_impl", *args, "--steps", "10", timeout=300).returncode == 0
    retag = ("import sys, torch, torch.serialization as s; p = sys.argv[1]; state = torch.load(p, weights_only=False); "
             "s.location_tag = lambda storage: 'cuda:0'; torch.save(state, p); "
             "torch.load(p, weights_only=False)")  # as a GPU wrote it: unreadable here without a map_location
    path = ckpt / "step-0000010.pt"
    proc = subprocess.run([sys.executable, "-c", retag, str(path)], capture_output=True, text=True, env=child_env(),
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "CUDA" in proc.stderr, proc.stderr[-1500:]
    more = run_module("torch_impl", *args, "--steps", "20", "--resume", timeout=300)
    assert more.returncode == 0 and "resumed from step 10" in more.stdout, more.stdout[-1500:] + more.stderr[-1500:]
    assert [p["step"] for p in json.loads(out.read_text())["curve"]] == [10, 20]


# An evaluation made slow on purpose (SLEEP seconds more each): training seconds must not count it.
SLOW_EVAL = """
import time
JUMP = float(sys.argv.pop(2))
real, skipped = time.perf_counter, [0.0]
time.perf_counter = lambda: real() + skipped[0]  # every timer of the run reads time.perf_counter() when it runs
def at_evaluation():
    skipped[0] += JUMP  # the clock jumps as if each evaluation took JUMP seconds; nothing waits
"""


@pytest.mark.parametrize("backend,loop", LOOPS)
def test_evaluation_time_is_not_training_time(tmp_path, backend, loop):
    """A mutation that passed the suite: Lightning's callback restarting its clock at a block's end, before the
    validation, so the evaluation went into the next block's training seconds (samples/s fell 6x, curve and
    time-to-beat seconds grew). Each evaluation moves the child's clock on by 1000 s, so training seconds that
    include one grow by 1000 s; 20 MLP steps (0.03 s measured here) cannot take 500 s of real time within the
    300 s timeout, so CPU contention cannot fail this test (a 2 s sleep against a 1 s bound once did)."""
    out, jump = tmp_path / "r.json", 1000.0
    proc = subprocess.run([sys.executable, "-c", at_each_evaluation(SLOW_EVAL), BACKENDS[backend], str(jump),
                           *SMALL, "--model", "mlp", "--steps", "60", "--eval-every", "20", "--loop", loop,
                           "--json", str(out)],
                          cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    r = json.loads(out.read_text())
    seconds = [p["seconds"] for p in r["curve"]]
    assert [p["step"] for p in r["curve"]] == [20, 40, 60]
    assert all(0 < b - a < jump / 2 for a, b in zip([0.0, *seconds], seconds)), seconds
    assert r["final"]["wall_seconds"] > 2 * jump, "the clock did not jump: the hook missed the evaluations"
    assert r["final"]["train_seconds"] == pytest.approx(seconds[-1], abs=1e-3)
