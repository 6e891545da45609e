"""Weight conversion between the frameworks, as two child processes around the neutral .npz:
the source framework's job runner exports the file to neutral weights, the target's imports them.

    python -m compare convert --model cnn --dataset mnist --from model.keras --to model.ckpt
    python -m compare convert --model cnn --dataset mnist --from model.ckpt --to model.keras

File kinds by extension: .keras (a saved Keras model, tf_impl), .ckpt (a Lightning checkpoint of
torch_impl's LitClassifier), .pt (the torch Backbone's state_dict), .npz (the neutral weights file,
data/weights.py: Keras layout, stable names). The architecture comes from --model, --dataset (input
shape and classes) and --widths; the neutral file is checked against it. The converter is the same
code the parity tests use (tf_impl.jobs / torch_impl.jobs), so a round trip is bit-identical.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from data import arch, weights as neutral
from data.contract import ConfigError, OneLineParser, check_widths, parse_widths, user_path
from data.errors import DataError
from data.registry import DATASETS, get_spec

from .runner import child_env

KINDS = {".keras": "tf", ".ckpt": "torch", ".pt": "torch", ".npz": "neutral"}  # extension -> who reads/writes it
STDERR_TAIL_LINES = 8  # lines of a failed job runner's stderr quoted in the error


class ConvertError(RuntimeError):
    """A conversion step failed (a child process's error is quoted)."""


def kind_of(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in KINDS:
        raise ConfigError(f"{path}: unknown weights file type {suffix or '(none)'!r}; use one of "
                          f"{', '.join(KINDS)} (.keras: Keras model, .ckpt: Lightning checkpoint, "
                          f".pt: torch state_dict, .npz: neutral weights)")
    return KINDS[suffix]


def plan(src, dst) -> list:
    """The child jobs, in order: [(backend, op)] with op 'export' (native -> neutral) or 'import'."""
    steps = []
    if kind_of(src) != "neutral":
        steps.append((kind_of(src), "export"))
    if kind_of(dst) != "neutral":
        steps.append((kind_of(dst), "import"))
    return steps


def _run_jobs(backend: str, job: dict, work: Path, threads: int, debug: bool = False) -> None:
    """One job in the backend's job runner. A failure is a ConvertError with the child's last stderr lines,
    or with `debug` its whole stderr (the child then shows its traceback too)."""
    spec = work / f"jobs-{backend}-{job['op']}.json"
    spec.write_text(json.dumps({"threads": threads, "deterministic": False, "jobs": [job]}))
    proc = subprocess.run([sys.executable, "-m", f"{backend}_impl.jobs", str(spec), *(["--debug"] if debug else [])],
                          capture_output=True, text=True, env=child_env())
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-STDERR_TAIL_LINES:]
        said = f"; its stderr:\n{proc.stderr}" if debug else f": {' / '.join(tail) or 'no message'}"
        raise ConvertError(f"python -m {backend}_impl.jobs ({job['op']}) failed with exit status {proc.returncode}{said}")


def _check(path: Path, src: Path, layers: list, model: str, dataset: str) -> None:
    """The neutral weights at `path` (exported from `src`) fit the architecture asked for."""
    try:
        neutral.load(path, layers)
    except DataError as e:
        detail = str(e).replace(f"{path}: ", "")
        raise ConvertError(f"{src} does not hold a {model} for {dataset} ({detail}); check --model, --dataset "
                           f"and --widths") from None


def convert(model: str, dataset: str, src, dst, widths=None, threads: int = 0, log=print, debug: bool = False) -> Path:
    """Convert weights file `src` to `dst` (kinds by extension). `dst` appears only when complete."""
    src, dst = Path(src), Path(dst)
    check_widths(model, dataset, widths, slots=None)  # a bad flag (exit 2), not a ValueError (exit 1); no training
    if not src.is_file():
        raise ConfigError(f"--from {src}: no such file")
    if src.resolve() == dst.resolve():
        raise ConfigError("--from and --to are the same file; choose another --to")
    if not dst.parent.is_dir():
        raise ConfigError(f"--to {dst}: folder {dst.parent} does not exist; create it first")
    spec = get_spec(dataset)
    layers = arch.build_layers(model, spec.shape, spec.num_classes, widths)
    shape = {"model": model, "input_shape": list(spec.shape), "num_classes": spec.num_classes,
             "widths": list(widths) if widths else None}
    with tempfile.TemporaryDirectory(prefix="klc-convert-") as tmp:
        work = Path(tmp)
        weights_file = work / "weights.npz"
        if kind_of(src) == "neutral":
            _check(src, src, layers, model, dataset)
            shutil.copyfile(src, weights_file)
        else:
            backend = kind_of(src)
            log(f"convert | {backend}: {src} -> neutral weights")
            _run_jobs(backend, dict(shape, op="export", src=str(src.resolve()), out=str(weights_file)), work, threads,
                      debug)
            _check(weights_file, src, layers, model, dataset)
        # the target is written under a temporary name beside it (same suffix: the writers key on it), then renamed
        partial = dst.with_name(f".{dst.stem}.partial-{os.getpid()}{dst.suffix}")
        try:
            if kind_of(dst) == "neutral":
                shutil.copyfile(weights_file, partial)
            else:
                backend = kind_of(dst)
                log(f"convert | {backend}: neutral weights -> {dst}")
                _run_jobs(backend, dict(shape, op="import", weights=str(weights_file), out=str(partial.resolve())),
                          work, threads, debug)
            os.replace(partial, dst)
        finally:
            if partial.exists():
                if partial.is_dir():
                    shutil.rmtree(partial)
                else:
                    partial.unlink()
    log(f"convert | wrote {dst} ({model}, {dataset} shape {tuple(spec.shape)}, {spec.num_classes} classes, "
        f"{arch.count_params(layers):,} parameters)")
    return dst


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m compare convert",
                      description="Convert model weights between Keras (.keras), Lightning (.ckpt), torch "
                                  "state_dict (.pt) and the neutral .npz, each framework in its own process.")
    p.add_argument("--model", required=True, choices=arch.MODELS, help="architecture of the weights")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS),
                   help="dataset the model was built for (sets input shape and number of classes)")
    p.add_argument("--from", dest="src", required=True, type=user_path, metavar="FILE", help="source: .keras, .ckpt, .pt or .npz")
    p.add_argument("--to", dest="dst", required=True, type=user_path, metavar="FILE", help="target: .keras, .ckpt, .pt or .npz")
    p.add_argument("--widths", type=parse_widths, help="non-default widths the model was built with, e.g. 32,64,128")
    p.add_argument("--threads", type=int, default=0, help="threads for each framework, 0 = all cores (default: 0)")
    p.add_argument("--debug", action="store_true", help="show tracebacks, the job runners' too")
    return p


def main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, path in (("--from", args.src), ("--to", args.dst)):
        try:
            kind_of(path)
        except ConfigError as e:
            parser.error(f"{flag}: {e}")
    try:
        convert(args.model, args.dataset, args.src, args.dst, args.widths, args.threads, debug=args.debug)
    except ConfigError as e:
        if args.debug:
            raise
        parser.error(str(e))
    except (ConvertError, DataError) as e:
        if args.debug:
            raise
        print(f"python -m compare convert: error: {e}", file=sys.stderr)
        return 1
    return 0
