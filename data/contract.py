"""What every backend accepts and writes: RunConfig (one argparse builder for all CLIs), the
learning-rate schedules (defined once, in steps), RunResult JSON, atomic writes, exit codes.

Both backends call `build_parser` and `config_from_args`, so their flags cannot drift apart.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .arch import DEFAULT_WIDTHS, MODELS
from .registry import DATASETS

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "exponential", "step")

# exit codes shared by every CLI of the project
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class ConfigError(ValueError):
    """A flag value that cannot work (caught by the CLIs: one line, exit 2)."""


@dataclass
class RunConfig:
    dataset: str = "mnist"
    model: str = "cnn"
    steps: int | None = None  # optimizer steps; None -> epochs * steps_per_epoch
    epochs: float | None = None  # used when steps is None (default 1 epoch)
    batch_size: int = 128  # samples per optimizer step (global batch)
    optimizer: str = "adam"
    lr: float = 1e-3  # peak learning rate, shared by both backends
    beta_1: float = 0.9  # Adam first-moment decay
    beta_2: float = 0.999  # Adam second-moment decay
    epsilon: float = 1e-7  # Adam epsilon, Keras placement and Keras default (torch's default is 1e-8)
    adam_impl: str = "keras"  # torch only: "keras" = Keras's update, "torch" = stock torch.optim.Adam
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False
    schedule: str = "constant"
    warmup_steps: int = 0  # linear warm-up from lr / warmup_steps to lr
    decay_steps: int | None = None  # cosine: steps to reach 0 (default: the rest of the run); exp/step: period
    decay_rate: float = 0.5  # exponential / step decay factor per decay_steps
    eval_every: int = 100  # steps between test-set evaluations (drives steps-to-beat-MLP); 0 = end only
    eval_every_auto: bool = False  # --eval-every not given: a run shorter than it evaluates at its end only
    eval_batch_size: int = 256
    target_accuracy: float | None = None  # stop at the first evaluation reaching this (time-to-accuracy runs)
    seed: int = 0  # data order and shared initial weights
    threads: int = 0  # intra-op threads; 0 = all cores
    init: str = "shared"  # shared = numpy glorot draw both backends load; native = framework defaults
    init_file: str | None = None  # neutral .npz to start from (the harness passes the run's draw)
    widths: tuple | None = None  # mlp hidden widths / cnn filters then dense width
    dropout: float = 0.0  # Dropout rate after every hidden Dense layer; 0 = none (the default)
    data_dir: str | None = None
    verify: bool = True  # False: accept files in --data-dir whose hashes are not the registry's (own data)
    train_limit: int | None = None  # use only the first N training samples
    val_fraction: float = 0.0  # hold out this share of train for evaluation instead of the test split
    json: str | None = None  # write the RunResult here
    save_weights: str | None = None  # write the final weights (neutral .npz) here
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # steps between checkpoints; 0 = none
    resume: bool = False  # continue from the newest checkpoint in checkpoint_dir
    deterministic: bool = False
    precision: str = "32"  # "32" or "bf16"
    loop: str = ""  # tf: custom | fit; torch: lightning | raw (empty = the backend's default)
    steps_per_call: int = 32  # optimizer steps per dispatch: per tf.function call / per Lightning training_step
    devices: int = 1  # data-parallel replicas (Lightning DDP / tf.distribute.MirroredStrategy); batch_size stays global
    tensorboard: str | None = None  # log scalars under DIR/<dataset>/<backend>[-<loop>]-<model>-s<seed>[-N]/
    progress: bool = True
    debug: bool = False
    extra: dict = field(default_factory=dict)

    def total_steps(self, steps_per_epoch: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, int(round((self.epochs or 1.0) * steps_per_epoch)))

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    @property
    def checkpoints(self) -> bool:
        """Checkpoints are on: --checkpoint-dir and --checkpoint-every, which config_from_args requires together."""
        return bool(self.checkpoint_dir and self.checkpoint_every)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths) if self.widths else None
        del d["eval_every_auto"]  # how eval_every was chosen; the RunResult records the interval the run used
        return d


# --- argument parsing --------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def nonnegative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def user_path(text: str) -> str:
    """A path flag's value with `~` expanded: bash leaves it in `--json=~/r.json`, and a folder named `~` was made."""
    return os.path.expanduser(text)


MAX_THREADS = 1024  # more than any machine's cores; far beyond it the frameworks fail in their own words (exit 1)


def thread_count(text: str) -> int:
    v = nonnegative_int(text)
    if v > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS}, got {v}")
    return v


def _finite_nonneg(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):  # ">= 0" said of a -1 where 0 is refused too misled
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return v


def _dropout_rate(text: str) -> float:
    v = _finite_nonneg(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be below 1 (the share of units dropped), got {text}")
    return v


def _decay(text: str) -> float:
    """An Adam beta: 1 or more never forgets (Keras's bias correction divides by 1 - beta^t = 0)."""
    v = _finite_nonneg(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (a moment's decay rate), got {text}")
    return v


def _momentum(text: str) -> float:
    """SGD momentum: Keras's SGD refuses values outside [0, 1], so both backends do."""
    v = _finite_nonneg(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return v


SEED_LIMIT = 2 ** 32  # numpy (and so Keras's set_random_seed) takes seeds below it


def seed_number(text: str) -> int:
    v = nonnegative_int(text)
    if v >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2**32 = {SEED_LIMIT}, got {v}")
    return v


def comma_list(what: str, choices=None, item=None):
    """An argparse type for a comma-separated list, the same in the harness and the benchmarks: `mlp,cnn` or
    `"mlp, cnn"` (spaces around an entry are dropped), each entry one of `choices` or accepted by `item` (a flag
    type such as positive_int, whose value it keeps), none twice, none empty (`mlp,` is a slip, not a list of
    one). Returns the list of values, in the order given."""
    def parse(text: str) -> list:
        values = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                raise argparse.ArgumentTypeError(f"empty {what} in {text!r} (a stray comma?)")
            if choices is not None and entry not in choices:
                raise argparse.ArgumentTypeError(f"unknown {what} {entry}; choose from {', '.join(choices)}")
            value = entry
            if item is not None:
                try:
                    value = item(entry)
                except argparse.ArgumentTypeError as e:
                    raise argparse.ArgumentTypeError(f"{what} {entry}: {e}") from None
            if value in values:
                raise argparse.ArgumentTypeError(f"{what} {entry} given twice")
            values.append(value)
        return values
    parse.__name__ = what  # argparse's "invalid <what> value" for any other error
    return parse


def _accuracy(text: str) -> float:
    v = _finite_nonneg(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"is a share of the test set, in [0, 1], got {text}")
    return v


def parse_widths(text: str) -> tuple:
    try:
        out = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 256,128, got {text!r}") from None
    if not out or min(out) <= 0:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return out


# Each backend's training loops, its default first: the tf GradientTape loop or Keras model.fit; the
# Lightning Trainer or a plain PyTorch loop (the references the overhead benchmarks measure against).
LOOPS = {"tf": ("custom", "fit"), "torch": ("lightning", "raw")}


def default_loop(backend: str) -> str:
    """The loop a backend runs without --loop ('' for a backend this table does not know)."""
    return LOOPS.get(backend, ("",))[0]


def add_run_arguments(p: argparse.ArgumentParser, loops: tuple = ()) -> None:
    """The training flags every backend accepts (the harness reuses most of them)."""
    d = RunConfig()
    p.add_argument("--dataset", choices=sorted(DATASETS), default=d.dataset, help=f"dataset (default: {d.dataset})")
    p.add_argument("--model", choices=MODELS, default=d.model, help=f"model (default: {d.model})")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, help="optimizer steps to train (default: 1 epoch)")
    budget.add_argument("--epochs", type=positive_float, help="epochs to train (default: 1)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help=f"(default: {d.batch_size})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help=f"(default: {d.optimizer})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"peak learning rate (default: {d.lr})")
    p.add_argument("--beta-1", type=_decay, default=d.beta_1, help=f"Adam (default: {d.beta_1})")
    p.add_argument("--beta-2", type=_decay, default=d.beta_2, help=f"Adam (default: {d.beta_2})")
    p.add_argument("--epsilon", type=positive_float, default=d.epsilon,
                   help=f"Adam epsilon, Keras placement (default: {d.epsilon}, Keras's default)")
    p.add_argument("--adam-impl", choices=("keras", "torch"), default=d.adam_impl,
                   help="torch backend: 'keras' computes Keras's Adam update, 'torch' uses torch.optim.Adam "
                        "(epsilon added after bias correction; differs from Keras) (default: keras)")
    p.add_argument("--momentum", type=_momentum, default=d.momentum, help=f"SGD (default: {d.momentum})")
    p.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help=f"LR schedule in steps (default: {d.schedule})")
    p.add_argument("--warmup-steps", type=nonnegative_int, default=d.warmup_steps, help="linear LR warm-up steps (default: 0)")
    p.add_argument("--decay-steps", type=positive_int,
                   help="cosine: length (default: rest of run); exponential/step: period (default: 1000)")
    p.add_argument("--decay-rate", type=positive_float, default=d.decay_rate, help=f"(default: {d.decay_rate})")
    p.add_argument("--eval-every", type=nonnegative_int,
                   help=f"steps between test evaluations, 0 = only at the end (default: {d.eval_every}, or only at "
                        f"the end of a shorter run)")
    p.add_argument("--target-accuracy", type=_accuracy,
                   help="stop at the first evaluation with test accuracy >= this share, e.g. 0.99 (default: none, "
                        "train the whole budget)")
    p.add_argument("--eval-batch-size", type=positive_int, default=d.eval_batch_size, help=f"(default: {d.eval_batch_size})")
    p.add_argument("--seed", type=seed_number, default=d.seed,
                   help=f"data order, initial weights and dropout masks (default: {d.seed})")
    p.add_argument("--threads", type=thread_count, default=d.threads, help="intra-op threads, 0 = all cores (default: 0)")
    p.add_argument("--init", choices=("shared", "native"), default=d.init,
                   help="shared: numpy glorot draw both backends load; native: the framework's own (default: shared)")
    p.add_argument("--init-file", type=user_path, help="start from this neutral weights .npz (implies --init shared) (default: none)")
    p.add_argument("--widths", type=parse_widths,
                   help="mlp: hidden widths; cnn: conv filters then the dense width (default: "
                        + ", ".join(f"{','.join(map(str, w))} for {m}" for m, w in DEFAULT_WIDTHS.items()) + ")")
    p.add_argument("--dropout", type=_dropout_rate, default=d.dropout,
                   help="Dropout after every hidden Dense layer, this share of units dropped in training (default: 0, off)")
    p.add_argument("--data-dir", type=user_path,
                   help="folder holding the dataset's files (default: none; then $KLC_DATA_DIR, cache, system folder, "
                        "download)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="accept files in --data-dir that fail the registry's checksums (your own data; reported as unverified)")
    p.add_argument("--train-limit", type=positive_int, help="use only the first N training samples (default: all)")
    p.add_argument("--val-fraction", type=_finite_nonneg, default=0.0,
                   help="evaluate on this held-out share of train instead of the test split (default: 0, the test split)")
    p.add_argument("--precision", choices=("32", "bf16"), default=d.precision, help="(default: 32)")
    p.add_argument("--steps-per-call", type=positive_int, default=d.steps_per_call,
                   help="optimizer steps per dispatch, like Keras's steps_per_execution: per compiled call in the tf "
                        "custom loop, per training_step in Lightning (one device; its evaluation and checkpoint "
                        "steps must fall on block ends, so blocks shrink to fit); with --devices N > 1, steps between "
                        f"the ranks' checks for a Ctrl-C (default: {d.steps_per_call})")
    p.add_argument("--devices", type=positive_int, default=d.devices,
                   help="data-parallel replicas: Lightning DDP / tf MirroredStrategy; --batch-size stays the global "
                        "batch and must divide by N (default: 1)")
    p.add_argument("--tensorboard", metavar="DIR", type=user_path,
                   help="write TensorBoard scalars under DIR/<dataset>/<backend>[-<loop>]-<model>-s<seed>/ (a rerun: -2, -3, "
                        "...) (default: none, no logs)")
    if loops:
        p.add_argument("--loop", choices=loops, default=loops[0], help=f"training loop (default: {loops[0]})")
        p.add_argument("--json", type=user_path, help="write the RunResult JSON here (default: none, no file)")
        p.add_argument("--save-weights", type=user_path, help="write the final weights (neutral .npz) here (default: none, no file)")
        p.add_argument("--checkpoint-dir", type=user_path, help="folder for checkpoints (default: none, no checkpoints)")
        p.add_argument("--checkpoint-every", type=nonnegative_int, default=0, help="steps between checkpoints (default: 0, none)")
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --checkpoint-dir")
        p.add_argument("--deterministic", action="store_true", help="seeded, deterministic kernels")
        p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
        p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser(prog: str, description: str, loops: tuple) -> OneLineParser:
    p = OneLineParser(prog=prog, description=description)
    add_run_arguments(p, loops)
    return p


# settings that only one optimizer or schedule reads: given with another, they would change nothing
ONLY_FOR = {"optimizer": {"adam": ("beta_1", "beta_2", "epsilon", "adam_impl"), "sgd": ("momentum", "nesterov")},
            "schedule": {"cosine": ("decay_steps",), "exponential": ("decay_steps", "decay_rate"),
                         "step": ("decay_steps", "decay_rate")}}


def ineffective_flags(values: dict) -> str | None:
    """The error for flags set away from their defaults that the chosen optimizer or schedule never reads
    (--nesterov with Adam, --decay-rate with a constant rate), else None: a run that silently ignores a
    flag reports settings it did not train with, and --resume would refuse it for a difference that made
    none."""
    d = RunConfig().to_dict()
    for choice, users in ONLY_FOR.items():
        chosen = values.get(choice) or d[choice]
        used = set(users.get(chosen, ()))
        unused = list(dict.fromkeys(k for names in users.values() for k in names if k not in used
                                    and values.get(k) is not None and values.get(k) != d[k]))
        if unused:
            flags = ", ".join("--" + k.replace("_", "-") for k in unused)
            readers = sorted({name for name, ks in users.items() for k in unused if k in ks})
            return (f"{flags} {'does' if len(unused) == 1 else 'do'} nothing with --{choice} {chosen}: "
                    f"{'it applies' if len(unused) == 1 else 'they apply'} to --{choice} {' or '.join(readers)}")
    return None


def config_from_args(args: argparse.Namespace) -> RunConfig:
    names = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    cfg.eval_every_auto = getattr(args, "eval_every", None) is None
    unused = ineffective_flags(cfg.to_dict())
    if unused:
        raise ConfigError(unused)
    if cfg.init_file:
        if cfg.init == "native":  # was overridden without a word: the header said "init shared"
            raise ConfigError("--init-file starts from that file's weights and --init native from the framework's "
                              "own initialisers: give one of them")
        cfg.init = "shared"
    if cfg.resume and not cfg.checkpoint_dir:
        raise ConfigError("--resume needs --checkpoint-dir")
    if cfg.checkpoint_every and not cfg.checkpoint_dir:
        raise ConfigError("--checkpoint-every needs --checkpoint-dir (where the checkpoints go)")
    if cfg.checkpoint_dir and not cfg.checkpoint_every:  # with --resume too: the run goes on checkpointing, and
        raise ConfigError("--checkpoint-dir needs --checkpoint-every K (checkpoint every K steps; with --resume, "
                          "the K the run was started with)")  # Lightning's blocks depend on K
    if cfg.val_fraction and not cfg.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be below 1, got {cfg.val_fraction}")
    check_batch_split(cfg.batch_size, cfg.devices)
    check_memory(cfg)
    return cfg


def check_batch_split(batch_size: int, devices: int) -> None:
    if batch_size % devices:
        raise ConfigError(f"--batch-size {batch_size} does not split over --devices {devices}: the global "
                          f"batch is cut into equal per-device shares; use a multiple of {devices}")


def check_widths(model: str, dataset: str, widths, slots: int | None = 2, batch_size: int | None = None,
                 eval_batch_size: int | None = None, memory: int | None = None, where: str = "this machine", *,
                 precision: str = "32", train_limit: int | None = None, val_fraction: float = 0.0) -> None:
    """--widths that cannot build `model` on `dataset`'s images (too few, too many conv stages) is a bad flag
    (exit 2), found before anything is loaded or written; it surfaced as a ValueError (exit 1, bad data).
    So is a run that cannot fit in `memory` bytes (default: the host's; where there is a GPU, only the
    weights, which the host draws, and the backend checks the rest against the GPU): float32 weights,
    gradients and `slots` optimizer slots a parameter (Adam 2, SGD 1 with momentum, 0 without; None:
    weights only, no training), plus the activations a `batch_size` batch must hold at once to train and
    an `eval_batch_size` batch to evaluate (data.arch.activation_floor; 2 bytes a value in bf16, 4 in fp32;
    a batch counted at most at the data it is cut from: the training set, `train_limit` of it, the test
    split, or the `val_fraction` held out). It failed late, in the framework: a traceback (exit 1) or, in
    TensorFlow on a CPU, a segmentation fault with no result written."""
    from .arch import activation_floor, build_layers, count_params
    spec = DATASETS[dataset]
    given = (f"--widths {','.join(map(str, widths))} for --model {model}" if widths else
             f"--model {model} (widths {','.join(map(str, DEFAULT_WIDTHS[model]))})")
    try:
        layers = build_layers(model, spec.shape, spec.num_classes, widths)
    except ValueError as e:
        raise ConfigError(f"{given}: {e}") from None
    params, have = count_params(layers), memory
    if have is None:
        have = host_memory()
        if accelerator_visible():
            slots = batch_size = eval_batch_size = None
    if not have:
        return
    need = 4 * params * (1 if slots is None else 2 + slots)  # a floor, before any activation
    if need > have:
        what = ("to hold (float32 weights)" if slots is None else
                f"to train (float32 weights, gradients{f' and {slots} optimizer slots' if slots else ''})")
        raise ConfigError(f"{given}: {params:,} parameters need at least {need / 2**30:,.0f} GiB {what}; "
                          f"{where} has {have / 2**30:,.0f} GiB")
    train, infer = activation_floor(layers, spec.shape)
    value = 2 if precision == "bf16" else 4  # bf16 runs hold their activations in bfloat16 (weights stay float32)
    n_train = min(train_limit, spec.train_size) if train_limit and spec.train_size else spec.train_size
    n_eval = (max(1, int(round(n_train * val_fraction)))  # data.stream.held_out_count's rounding, without its
              if val_fraction and n_train else spec.test_size)  # errors: a bad split is refused when it is cut
    most = {"--batch-size": n_train, "--eval-batch-size": n_eval}  # no batch holds more than the data it is cut
    for flag, batch, state, per_sample, what in (  # from (your own files may hold more: still a floor)
            ("--batch-size", batch_size if slots is not None else None, need, train, "to train"),
            ("--eval-batch-size", eval_batch_size, 4 * params, infer, "to evaluate")):
        if not batch:
            continue
        counted = min(batch, most[flag] or batch)
        total = state + value * counted * per_sample
        if total > have:
            capped = f" (counted at the data's {counted:,})" if counted < batch else ""
            raise ConfigError(
                f"{flag} {batch}{capped} with {given}: {what}, a batch's activations ({value * per_sample:,} bytes "
                f"a sample at the least) and the model's state need at least {total / 2**30:,.1f} GiB; {where} has "
                f"{have / 2**30:,.1f} GiB: lower {flag} or --widths")


def check_memory(cfg: RunConfig, memory: int | None = None, where: str = "this machine", devices: int = 1) -> None:
    """check_widths for a run's flags. At parse time `memory` is None (check_widths' default: the host's).
    Once a backend knows the device it trains on, it passes that device's `memory` bytes, on each of
    `devices` (GPUs: each holds the whole state and its share of the training batch, and evaluates whole
    batches; 1: the host holds them all)."""
    check_widths(cfg.model, cfg.dataset, cfg.widths, optimizer_slots(cfg.optimizer, cfg.momentum),
                 cfg.batch_size // devices, cfg.eval_batch_size, memory=memory, where=where,
                 precision=cfg.precision, train_limit=cfg.train_limit, val_fraction=cfg.val_fraction)


def optimizer_slots(optimizer: str | None, momentum: float | None) -> int:
    """Per-parameter state the optimizer keeps: Adam's two moments, SGD's momentum buffer (none at momentum 0)."""
    if (optimizer or RunConfig.optimizer) == "adam":
        return 2
    return 0 if momentum == 0 else 1


def accelerator_visible() -> bool:
    """An NVIDIA or AMD GPU this process may use, seen without a framework: its activations would live
    there, not in host memory."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    try:
        if any(Path("/proc/driver/nvidia/gpus").iterdir()):
            return True
    except OSError:
        pass
    return Path("/dev/kfd").exists() or Path("/dev/dxg").exists()  # AMD ROCm; WSL2's GPU (no /proc/driver/nvidia)


def host_memory() -> int | None:
    """Physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_budget(cfg: RunConfig, train_size: int, steps_per_epoch: int) -> int:
    """Validate flags that depend on the data; return the total number of steps."""
    if cfg.batch_size > train_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the training set ({train_size} samples)")
    total = cfg.total_steps(steps_per_epoch)
    if cfg.eval_every_auto and cfg.eval_every > total:  # the default interval on a shorter run: a
        cfg.eval_every = 0  # `--steps 50` was refused for a flag the user never gave; it evaluates at the end
    if cfg.eval_every > total:
        raise ConfigError(f"--eval-every {cfg.eval_every} is larger than the run ({total} steps); "
                          f"use at most {total} or 0 for end-only")
    if cfg.checkpoint_every and cfg.checkpoint_every > total:
        raise ConfigError(f"--checkpoint-every {cfg.checkpoint_every} is larger than the run ({total} steps)")
    return total


# --- learning-rate schedules, in optimizer steps ----------------------------------------------------

def lr_at(cfg: RunConfig, step: int, total_steps: int) -> float:
    """Learning rate for the update made at optimizer step `step` (0-based). Both backends use this."""
    w = cfg.warmup_steps
    if step < w:
        return cfg.lr * (step + 1) / w
    t = step - w
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        span = cfg.decay_steps or max(1, total_steps - w)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))
    span = cfg.decay_steps or 1000
    if cfg.schedule == "exponential":
        return cfg.lr * cfg.decay_rate ** (t / span)
    if cfg.schedule == "step":
        return cfg.lr * cfg.decay_rate ** (t // span)
    raise ConfigError(f"unknown schedule {cfg.schedule!r}; choose from {', '.join(SCHEDULES)}")


def lr_table(cfg: RunConfig, total_steps: int) -> list:
    """lr_at for steps 0 .. total_steps (one extra so a lookup at the end never falls off)."""
    return [lr_at(cfg, s, total_steps) for s in range(total_steps + 1)]


# --- results -----------------------------------------------------------------------------------------

def versions(*packages: str) -> dict:
    """Installed versions of python, numpy and `packages` (from package metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in ("numpy",) + packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def new_result(cfg: RunConfig, backend: str) -> dict:
    """A RunResult skeleton (the schema: README, "The RunResult JSON"); training fills it in."""
    return {
        "backend": backend, "model": cfg.model, "dataset": cfg.dataset, "data_source": None,
        "status": "failed", "message": "", "config": cfg.to_dict(), "versions": {}, "device": "cpu", "onednn": None,
        "threads": cfg.resolved_threads(), "params": None, "flops_per_sample": None,
        "forward_flops_per_sample": None, "precision": cfg.precision, "loop": cfg.loop,
        "curve": [], "train_losses": [], "final": None,
        "throughput": {"train_samples_per_s": None, "infer_samples_per_s": None,
                       "warmup_s": None, "timed_steps": 0},
    }


def ensure_folder(path: str | os.PathLike) -> Path:
    """Create the folder that will hold `path`; a clear OSError when it cannot exist."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OSError(f"cannot write {path}: {path.parent} (or a folder above it) is a file, not a folder") from None
    except PermissionError:
        raise OSError(f"cannot write {path}: no permission to create {path.parent}") from None
    return path


def check_writable(flag: str, folder: str | os.PathLike, target: str | os.PathLike | None = None) -> None:
    """ConfigError naming `flag` when `folder` cannot be made or written in (a read-only file system, a file in
    the way, no permission; root passes permission bits, so a file is written and removed to find out): checked
    before training, since a --json or --save-weights that failed after it lost the run's result."""
    import tempfile
    folder, given = Path(folder), f"{flag} {target if target is not None else folder}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".klc-write-test-"):
            pass
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{given}: {folder} (or a folder above it) is a file, not a folder") from None
    except OSError as e:
        raise ConfigError(f"{given}: cannot write in {folder} ({e.strerror or e})") from None


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path in `path`'s folder to write; on success it is synced and renamed to `path`, on any
    exception (a Ctrl-C included) removed: `path` holds the old file or the whole new one, never half."""
    path = ensure_folder(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON via a temp file in the same folder and a rename: readers never see half a file."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False, default=_json_default)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def finite_or_none(x):
    return float(x) if x is not None and math.isfinite(float(x)) else None
