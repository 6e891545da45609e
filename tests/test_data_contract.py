"""The framework-free contract both backends share, tested in this process (no child, no framework): the
learning-rate schedules at their edges, the flags config_from_args refuses or accepts, the budget checks,
the layer list and the parameter layout of the neutral weights, the shared glorot draw, the batch stream's
hold-out, and the atomic JSON writer. Each test names the defect it guards against: a mutation of the
source that passed every other fast test of the suite.
Run: pytest tests/test_data_contract.py"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data import arch, registry, weights as neutral
from data import contract
from data.contract import (LOOPS, ConfigError, RunConfig, atomic_path, build_parser, check_budget, check_memory,
                           config_from_args, ineffective_flags, lr_at, lr_table, write_json_atomic)
from data.sources import LoadedData
from data.stream import batch_hash, make_stream


def _config(*argv: str) -> RunConfig:
    """RunConfig as a backend CLI builds it from `argv` (tf's parser; both backends share it)."""
    return config_from_args(build_parser("x", "x", LOOPS["tf"]).parse_args(list(argv)))


# --- learning-rate schedules ------------------------------------------------------------------------

def test_warm_up_ends_at_the_peak_rate_on_step_warmup_steps():
    """Steps 0 .. w-1 ramp lr/w .. lr; step w is the first at the schedule's own rate. `step <= w` gave step w
    lr * (w+1)/w, 25 % above the peak here. Exact: each value is one product and one division of small
    integers and 0.1, so approx's default 1e-6 relative is ample."""
    cfg = RunConfig(lr=0.1, warmup_steps=4)
    assert lr_table(cfg, 6) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])


def test_cosine_with_decay_steps_shorter_than_the_run_stays_at_zero_after_it():
    """--decay-steps 10 in a 30-step run: the rate reaches 0 at step 10 and stays there. Without the clamp the
    cosine rose again, back to the full rate at step 20."""
    cfg = RunConfig(lr=0.1, schedule="cosine", decay_steps=10)
    table = lr_table(cfg, 30)
    assert table[5] == pytest.approx(0.05)
    assert all(lr == pytest.approx(0.0, abs=1e-12) for lr in table[10:])


def test_exponential_and_step_decay_default_to_a_1000_step_period():
    """Without --decay-steps, exponential and step decay halve (--decay-rate 0.5) every 1000 steps; a run's
    schedule must not change under it between versions (--resume would continue at another rate). --help
    does not name the 1000 (it says only 'period')."""
    step, expo = RunConfig(lr=0.1, schedule="step"), RunConfig(lr=0.1, schedule="exponential")
    assert lr_at(step, 999, 5000) == pytest.approx(0.1) and lr_at(step, 1000, 5000) == pytest.approx(0.05)
    assert lr_at(expo, 500, 5000) == pytest.approx(0.1 * 0.5 ** 0.5)
    # after a warm-up the decay counts from its end
    assert lr_at(RunConfig(lr=0.1, schedule="step", warmup_steps=10), 1009, 5000) == pytest.approx(0.1)


def test_lr_table_has_one_entry_past_the_last_step():
    """Both backends look the rate up by step; the table ends one past the run so a lookup at step total never
    falls off (an IndexError after the last update)."""
    cfg = RunConfig(lr=0.1, schedule="cosine", warmup_steps=2)
    table = lr_table(cfg, 12)
    assert len(table) == 13 and table == [lr_at(cfg, s, 12) for s in range(13)]


# --- flags: config_from_args ----------------------------------------------------------------------

def test_the_default_evaluation_interval_on_a_shorter_run_evaluates_at_its_end_only():
    """`--steps 50` without --eval-every must run (it was refused for a flag the user never gave), evaluating at
    its end; `--eval-every 100` given outright on that run is refused, not silently dropped to end-only."""
    auto = _config("--steps", "50")
    assert auto.eval_every_auto and auto.eval_every == 100
    assert check_budget(auto, 1000, 10) == 50 and auto.eval_every == 0
    given = _config("--steps", "50", "--eval-every", "100")
    assert not given.eval_every_auto
    with pytest.raises(ConfigError, match=r"--eval-every 100 is larger than the run \(50 steps\)"):
        check_budget(given, 1000, 10)
    longer = _config("--steps", "500")  # a run longer than the interval keeps it
    assert check_budget(longer, 1000, 10) == 500 and longer.eval_every == 100
    assert "eval_every_auto" not in auto.to_dict()  # how it was chosen is not a setting the result records


def test_check_budget_edges():
    """A batch of exactly the training set is one step an epoch, not an error; a checkpoint interval longer
    than the run never writes a checkpoint and is refused; --epochs rounds to the nearest step count (0.37 of
    10 steps is 4, not 3) and never to 0."""
    assert check_budget(RunConfig(batch_size=100, steps=5, eval_every=0), 100, 1) == 5
    with pytest.raises(ConfigError, match=r"--batch-size 101 is larger than the training set \(100 samples\)"):
        check_budget(RunConfig(batch_size=101, steps=5, eval_every=0), 100, 1)
    assert check_budget(RunConfig(steps=20, eval_every=0, checkpoint_dir="c", checkpoint_every=20), 1000, 10) == 20
    with pytest.raises(ConfigError, match=r"--checkpoint-every 21 is larger than the run \(20 steps\)"):
        check_budget(RunConfig(steps=20, eval_every=0, checkpoint_dir="c", checkpoint_every=21), 1000, 10)
    assert RunConfig(epochs=0.37).total_steps(10) == 4
    assert RunConfig(epochs=0.01).total_steps(10) == 1
    assert RunConfig().total_steps(7) == 7 and RunConfig(steps=3, epochs=5).total_steps(7) == 3


def test_flag_combinations_that_cannot_work_are_refused():
    """--resume without a folder had nothing to resume from; --val-fraction 1 holds out every sample (an
    --init-file with --init native: test_an_init_file_with_native_initialisers_is_refused)."""
    with pytest.raises(ConfigError, match="--resume needs --checkpoint-dir"):
        _config("--resume")
    with pytest.raises(ConfigError, match="--val-fraction must be below 1, got 1.0"):
        _config("--val-fraction", "1")
    assert _config("--val-fraction", "0.5").val_fraction == 0.5
    assert _config("--init", "native").init == "native"


def test_an_init_file_with_native_initialisers_is_refused():
    """--init native --init-file F trained from F and printed "init shared", the explicit flag dropped."""
    with pytest.raises(ConfigError, match="--init-file starts from that file's weights and --init native"):
        _config("--init", "native", "--init-file", "w.npz")
    assert _config("--init-file", "w.npz").init == "shared" == _config("--init", "shared", "--init-file", "w.npz").init


def test_flags_a_schedule_or_optimizer_reads_are_accepted_with_it():
    """ineffective_flags refuses flags the chosen optimizer or schedule never reads, and only those: cosine
    reads --decay-steps (its length), exponential and step read --decay-steps and --decay-rate, SGD its
    momentum; a default value given outright changes nothing and is accepted."""
    assert _config("--schedule", "cosine", "--decay-steps", "30").decay_steps == 30
    assert _config("--schedule", "step", "--decay-steps", "30", "--decay-rate", "0.1").decay_rate == 0.1
    assert _config("--schedule", "exponential", "--decay-rate", "0.1").decay_rate == 0.1
    assert _config("--optimizer", "sgd", "--momentum", "0.5", "--nesterov").nesterov
    assert _config("--optimizer", "sgd", "--beta-1", "0.9").optimizer == "sgd"  # Adam's default, given: no effect
    with pytest.raises(ConfigError, match=r"^--beta-1, --epsilon do nothing with --optimizer sgd: they apply to "
                                          r"--optimizer adam$"):
        _config("--optimizer", "sgd", "--beta-1", "0.8", "--epsilon", "1e-3")
    with pytest.raises(ConfigError, match="--decay-rate does nothing with --schedule cosine: it applies to "
                                          "--schedule exponential or step"):
        _config("--schedule", "cosine", "--decay-rate", "0.1")
    assert ineffective_flags({"nesterov": True}) == ("--nesterov does nothing with --optimizer adam: it applies "
                                                     "to --optimizer sgd")  # a partial dict: the defaults fill in


def test_flag_limits_accept_their_largest_valid_value():
    """numpy takes seeds up to 2**32 - 1 and --threads allows 1024: a bound off by one refused a valid value."""
    assert _config("--seed", str(2**32 - 1)).seed == 2**32 - 1
    assert _config("--threads", "1024").threads == 1024


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_flag_that_must_be_positive_says_so_for_any_refused_value(value, capsys):
    """--lr -1 said "must be a finite number >= 0", a bound that 0 fails too."""
    with pytest.raises(SystemExit):
        _config("--lr", value)
    assert f"argument --lr: must be a finite number > 0, got {value}" in capsys.readouterr().err


def test_comma_lists_read_the_same_in_the_harness_and_the_benchmarks():
    """compare's --models took "mlp, cnn" and a stray comma ("mlp,,cnn") and returned a list; the benchmarks'
    --models refused the space ("unknown model  cnn") and returned the text for each script to split. One parser
    now: spaces around an entry dropped, an empty entry or a repeat refused, the values come back as a list."""
    import argparse
    from benchmarks import common
    from compare.__main__ import build_parser as compare_parser
    models = contract.comma_list("model", ("mlp", "cnn"))
    assert models("mlp, cnn") == models(" mlp,cnn ") == ["mlp", "cnn"] and models("cnn") == ["cnn"]
    seeds = contract.comma_list("seed", item=contract.seed_number)
    assert seeds("2, 0,1") == [2, 0, 1]  # the item's values, in the order given
    for text, says in [("mlp,", "empty model in 'mlp,'"), (",", "empty model"), ("mlp,,cnn", "empty model"),
                       ("mlp, rnn", "unknown model rnn; choose from mlp, cnn"), ("cnn, cnn", "model cnn given twice")]:
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            models(text)
    for text, says in [("0,x", "seed x: expected a whole number"), ("1,01", "seed 01 given twice"),
                       ("0,4294967296", "seed 4294967296: must be below 2\\*\\*32")]:
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            seeds(text)
    assert common.comma_list is contract.comma_list
    bench = common.parser("x", "x.")
    common.add_data_flags(bench)
    harness = compare_parser().parse_args(["--models", "mlp, cnn", "--seeds", "0, 1"])
    assert bench.parse_args(["--models", "mlp, cnn"]).models == harness.models == ["mlp", "cnn"]
    assert harness.seeds == [0, 1] and bench.parse_args([]).models == ["mlp", "cnn"]  # the default text, parsed


def test_path_flags_expand_the_home_folder(tmp_path, monkeypatch):
    """bash leaves `~` in `--json=~/r.json`: unexpanded, a folder named `~` was made in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = _config("--json=~/r.json", "--save-weights=~/w.npz", "--data-dir=~/d", "--init-file=~/i.npz",
                  "--tensorboard=~/tb", "--checkpoint-dir=~/ck", "--checkpoint-every", "5")
    for path in (cfg.json, cfg.save_weights, cfg.data_dir, cfg.init_file, cfg.tensorboard, cfg.checkpoint_dir):
        assert path.startswith(str(tmp_path) + "/") and "~" not in path, path


# --- the memory floor -------------------------------------------------------------------------------

def test_each_device_is_checked_for_its_share_of_the_training_batch():
    """Data parallel: each of N GPUs holds the whole training state but only batch / N samples' activations
    (and evaluates whole --eval-batch-size batches). Counting the global batch on each refused DDP runs that
    fit. The floor in bytes: 16 a parameter (Adam) + 4 a value x samples x activation_floor."""
    layers = arch.build_layers("cnn", (28, 28, 1), 10)
    params, (train, infer) = arch.count_params(layers), arch.activation_floor(layers, (28, 28, 1))
    cfg = RunConfig(model="cnn", batch_size=1024, eval_batch_size=1)
    need = 16 * params + 4 * 256 * train  # a quarter of the batch on each of 4 devices
    assert need > 4 * params + 4 * infer  # the training share, not evaluation, sets the floor here
    check_memory(cfg, need, "GPU 0", devices=4)
    with pytest.raises(ConfigError, match=r"^--batch-size 256 with --model cnn \(widths 32,64,128\): to train"):
        check_memory(cfg, need - 1, "GPU 0", devices=4)


def test_cuda_visible_devices_empty_or_minus_1_hides_the_gpus(monkeypatch):
    """CUDA_VISIBLE_DEVICES= (empty) hides every GPU as -1 does: the run trains in host memory, so the parser
    must check its activations there (TensorFlow segfaults on a CPU allocation failure). Here a GPU is faked."""
    class Present:
        def __init__(self, path):
            pass

        def iterdir(self):
            return iter(["0000:00:01.0"])

        def exists(self):
            return True
    monkeypatch.setattr(contract, "Path", Present)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert contract.accelerator_visible()
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not contract.accelerator_visible(), repr(hidden)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert contract.accelerator_visible()


# --- the atomic JSON writer -------------------------------------------------------------------------

def test_json_holds_numpy_scalars_as_numbers_and_tuples_as_lists(tmp_path):
    """Losses and counts arrive as numpy scalars: they must be JSON numbers, not strings a reader cannot add."""
    path = tmp_path / "r.json"
    write_json_atomic(path, {"loss": np.float32(0.5), "steps": np.int64(7), "widths": (8, 16)})
    assert json.loads(path.read_text()) == {"loss": 0.5, "steps": 7, "widths": [8, 16]}


def test_ctrl_c_while_writing_keeps_the_old_file_and_no_temp(tmp_path):
    """KeyboardInterrupt is no Exception: an `except Exception` cleanup left the half-written temp file behind."""
    path = tmp_path / "r.json"
    write_json_atomic(path, {"runs": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path) as tmp:
            tmp.write_text('{"runs": ')
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"runs": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


# --- architecture -----------------------------------------------------------------------------------

def test_parameter_shapes_are_keras_layout_in_layer_order():
    """The neutral .npz holds conv kernels HWIO and dense kernels (in, out), in layer order. (out, in) or OIHW
    passed every count (a product does not see the order) and both backends read the same wrong list; a
    third conv stage on 28x28 floors 7 to 3 (Keras and torch pool 'valid')."""
    layers = arch.build_layers("cnn", (28, 28, 1), 10, (8, 16, 32, 64))
    assert list(arch.param_shapes(layers).items()) == [
        ("conv_0/kernel", (3, 3, 1, 8)), ("conv_0/bias", (8,)), ("conv_1/kernel", (3, 3, 8, 16)),
        ("conv_1/bias", (16,)), ("conv_2/kernel", (3, 3, 16, 32)), ("conv_2/bias", (32,)),
        ("dense_0/kernel", (3 * 3 * 32, 64)), ("dense_0/bias", (64,)), ("dense_1/kernel", (64, 10)),
        ("dense_1/bias", (10,))]
    assert list(arch.param_shapes(arch.build_layers("mlp", (32, 32, 3), 100, (64,))).values()) == [
        (32 * 32 * 3, 64), (64,), (64, 100), (100,)]


def test_hidden_layers_apply_relu_and_the_output_layer_gives_raw_logits():
    """Both backends build from this list: a ReLU on the output layer clipped every negative logit to 0 in both
    (parity still held), and a hidden layer without one made the network linear."""
    for model in arch.MODELS:
        layers = [l for l in arch.build_layers(model, (28, 28, 1), 10) if l.kind in ("conv", "dense")]
        assert [l.relu for l in layers] == [True] * (len(layers) - 1) + [False], model


def test_build_layers_refuses_a_dropout_rate_outside_0_to_1():
    """The job runners pass --dropout past the parser: a rate of 1 drops every unit (inverted dropout divides by 0)."""
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout rate must be in"):
            arch.build_layers("mlp", (28, 28, 1), 10, dropout=rate)


# --- the shared initial weights -------------------------------------------------------------------------

@pytest.mark.parametrize("model,shape,classes", [("mlp", (28, 28, 1), 10), ("cnn", (28, 28, 1), 10),
                                                 ("cnn", (32, 32, 3), 100)])
def test_shared_draw_is_keras_glorot_uniform_with_zero_biases(model, shape, classes):
    """Kernels uniform in [-L, L], L = sqrt(6 / (fan_in + fan_out)) with both fans times kh * kw for a conv;
    biases 0. The smallest kernel has 288 draws: its largest value falls below 0.95 L (or its smallest above
    -0.95 L) with probability 0.95^288 ~ 4e-7 (the seed is fixed, so this never flakes). A receptive field
    left out (L x3), 3 for 6 (L / sqrt 2), a draw in [0, L] or non-zero biases each fail. The parity tests
    check the same rule but only after both frameworks ran (minutes); this one takes milliseconds."""
    w = neutral.initial_weights(arch.build_layers(model, shape, classes), seed=0)
    for name, value in w.items():
        assert value.dtype == np.float32, name
        if name.endswith("/bias"):
            assert not value.any(), name
            continue
        receptive = 9 if value.ndim == 4 else 1
        limit = math.sqrt(6 / (receptive * (value.shape[-2] + value.shape[-1])))
        assert 0.95 * limit < value.max() <= limit and -limit <= value.min() < -0.95 * limit, (name, limit)


def test_shared_draw_follows_the_seed_and_is_pinned_across_versions():
    """--seed picks the initial weights (seed 0 and 1 start apart); the draw for a seed is fixed (every
    kernel from one Generator, in layer order), so a comparison resumed or rerun later starts where the first
    did. Values as float32 from numpy's Generator; 1e-6 relative covers a float32 rounding of the limit."""
    layers = arch.build_layers("mlp", (28, 28, 1), 10)
    a, b = neutral.initial_weights(layers, 0), neutral.initial_weights(layers, 1)
    assert all(not np.array_equal(a[k], b[k]) for k in a if k.endswith("/kernel"))
    assert all(np.array_equal(a[k], v) for k, v in neutral.initial_weights(layers, 0).items())
    np.testing.assert_allclose(a["dense_0/kernel"].ravel()[:2], [0.020805973559617996, -0.03497190773487091], rtol=1e-6)
    np.testing.assert_allclose(a["dense_1/kernel"].ravel()[:2], [-0.12164504081010818, 0.09729129821062088], rtol=1e-6)
    np.testing.assert_allclose(a["dense_2/kernel"].ravel()[:2], [0.13214610517024994, -0.13545013964176178], rtol=1e-6)


def test_saved_weights_are_float32(tmp_path):
    """The neutral format is float32: a float64 array saved as is doubled the file and loaded as float64."""
    layers = arch.build_layers("mlp", (28, 28, 1), 10, (16,))
    w = {k: v.astype(np.float64) for k, v in neutral.initial_weights(layers, 0).items()}
    neutral.save(tmp_path / "w.npz", w)
    back = neutral.load(tmp_path / "w.npz", layers)
    assert all(v.dtype == np.float32 and np.array_equal(v, w[k].astype(np.float32)) for k, v in back.items())


# --- the batch stream ---------------------------------------------------------------------------

def _indexed(n: int = 103) -> LoadedData:
    """n training images whose first pixel is their index (recoverable after normalisation), 5 test images."""
    images = np.zeros((n, 28, 28, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return LoadedData(registry.MNIST, "test", images, np.arange(n) % 10, images[:5], np.arange(5))


def _indices(images: np.ndarray) -> list:
    return np.rint(images[:, 0, 0, 0] * 255).astype(int).tolist()


def test_a_batch_of_the_whole_training_set_is_one_step_an_epoch():
    """Only a batch larger than the training set is refused; one of exactly its size was refused too."""
    assert make_stream(_indexed(), 103, seed=0).steps_per_epoch == 1


def test_hold_out_is_cut_from_the_train_limited_samples_and_pinned():
    """--train-limit 40 --val-fraction 0.25 holds out 10 of the first 40 and trains on the other 30 (what
    compare and the memory floor count); holding out of all 103 first evaluated on samples past the limit.
    The held-out samples for a seed are fixed across versions, as the epoch order is."""
    s = make_stream(_indexed(), 10, seed=0, train_limit=40, val_fraction=0.25)
    held, kept = _indices(s.test_images), _indices(s.train_images)
    assert len(held) == 10 and len(kept) == 30 and sorted(held + kept) == list(range(40))
    assert held == [2, 4, 5, 10, 12, 16, 19, 23, 26, 31]
    assert _indices(make_stream(_indexed(), 10, seed=0, val_fraction=0.1).test_images) == \
        [5, 16, 24, 40, 65, 68, 71, 82, 90, 91]


def test_batch_hash_covers_the_labels():
    """The data-order parity test compares batch hashes: labels shuffled apart from their images went unseen."""
    images = np.zeros((4, 28, 28, 1), np.float32)
    assert batch_hash(images, np.array([0, 1, 2, 3])) != batch_hash(images, np.array([1, 0, 2, 3]))
