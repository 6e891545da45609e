"""Test accuracy at a fixed budget, per backend and seed: the end-of-run figures the backend issues
ask for (CNN, batch 128: Fashion-MNIST after 1 epoch >= 0.86, MNIST after 3 epochs >= 0.990), for
the plain recipe (constant Adam 1e-3) and for the cosine recipes this project recommends.

Each row is one training process per (backend, seed); the table gives every seed's figure, the mean
and the minimum, and whether the minimum meets the target (a recipe that passes on average but not
for every seed does not count).

    python -m benchmarks.accuracy [--seeds 0,1,2] [--recipes NAME,...] [--data-dir DIR] [--json FILE]
"""
from __future__ import annotations

import datetime
import statistics

from .common import (add_json_flag, comma_list, machine, parser, results_file, run_seed, run_threads, table, train,
                     user_path)

# name: (dataset, epochs, target, extra flags)
RECIPES = {
    "fashion-constant": ("fashion_mnist", 1, 0.86, ["--lr", "1e-3", "--schedule", "constant"]),
    "fashion-cosine": ("fashion_mnist", 1, 0.86, ["--lr", "1e-3", "--schedule", "cosine"]),
    "mnist-constant": ("mnist", 3, 0.990, ["--lr", "1e-3", "--schedule", "constant"]),
    "mnist-cosine": ("mnist", 3, 0.990, ["--lr", "2e-3", "--schedule", "cosine"]),
}


def build_parser():
    p = parser("accuracy", __doc__)
    p.add_argument("--recipes", type=comma_list("recipe", tuple(RECIPES)), default=",".join(RECIPES),
                   help=f"comma-separated, from {', '.join(RECIPES)}")
    p.add_argument("--seeds", type=comma_list("seed", item=run_seed), default="0,1,2",
                   help="comma-separated seeds: one run per recipe, backend and seed")
    p.add_argument("--threads", type=run_threads, default=2, help="intra-op threads of each run, 0 = all cores")
    p.add_argument("--data-dir", type=user_path, metavar="DIR",
                   help="folder with the datasets' files (default: none; the usual sources)")
    add_json_flag(p, "accuracy")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    seeds = args.seeds
    rows, out = [], []
    doc = {"config": vars(args), "machine": machine(), "date": str(datetime.date.today()),
           "recipes": {k: list(map(str, v[:3])) + [v[3]] for k, v in RECIPES.items()}, "results": out}
    with results_file(args.json, doc, "benchmarks.accuracy", lambda: any(e["test_accuracy"] for e in out)):
        for name in args.recipes:
            dataset, epochs, target, extra = RECIPES[name]
            for backend in ("tf", "torch"):
                accs = []
                entry = {"recipe": name, "dataset": dataset, "epochs": epochs, "flags": extra, "backend": backend,
                         "seeds": seeds, "test_accuracy": accs, "target": target}
                out.append(entry)
                for seed in seeds:
                    flags = ["--dataset", dataset, "--model", "cnn", "--epochs", epochs, "--batch-size", 128,
                             "--optimizer", "adam", *extra, "--seed", seed, "--eval-every", 0, "--threads", args.threads]
                    if args.data_dir:
                        flags += ["--data-dir", args.data_dir]
                    r = train(backend, *flags)
                    accs.append(r["final"]["test_accuracy"])
                    entry.update(data=r["dataset"], data_source=r.get("data_source"),  # "mnist (5k subset)" when
                                 met_by_every_seed=min(accs) >= target if len(accs) == len(seeds) else None)
                    print(f"{name} {backend} seed {seed}: {accs[-1]:.4f} ({r['dataset']})", flush=True)
                rows.append([name, r["dataset"], backend, " ".join(f"{a:.4f}" for a in accs),
                             f"{statistics.mean(accs):.4f}", f"{min(accs):.4f}",
                             f">= {target}: {'yes' if min(accs) >= target else 'no'}"])
        print()
        print(f"CNN, batch 128, {args.threads} threads; {machine()}; {datetime.date.today()}")
        print(table(rows, ["recipe", "data", "backend", f"test accuracy, seeds {','.join(map(str, seeds))}", "mean",
                           "min", "target"]))

if __name__ == "__main__":
    main()
