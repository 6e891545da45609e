"""Time to accuracy (DAWNBench's measure): steps and training seconds for each backend's CNN to
reach 99 % test accuracy on MNIST and 90 % on Fashion-MNIST, mean +- std over seeds. Evaluation
every 50 steps (the resolution); evaluation time is not counted, the warm-up (tracing, first steps) is,
as a user waits for it. A seed that diverges or never gets there is a miss.

    python -m benchmarks.time_to_accuracy [--seeds 0,1,2] [--max-epochs 6] [--json FILE]
"""
from __future__ import annotations

import datetime
import statistics

from .common import (add_json_flag, comma_list, machine, parser, positive_float, positive_int, results_file, run_seed,
                     run_threads, table, train, user_path)

TARGETS = {"mnist": 0.99, "fashion_mnist": 0.90}


def build_parser():
    p = parser("time_to_accuracy", __doc__)
    targets = ", ".join(f"{name} (target {share * 100:g} %%)" for name, share in TARGETS.items())  # %% for argparse
    p.add_argument("--datasets", type=comma_list("dataset", tuple(TARGETS)), default="mnist,fashion_mnist",
                   help=f"comma-separated, from {targets}")
    p.add_argument("--seeds", type=comma_list("seed", item=run_seed), default="0,1,2",
                   help="comma-separated seeds: one run per backend and seed")
    p.add_argument("--max-epochs", type=positive_float, default=6,
                   help="epochs a run may train; one that has not reached its target by then is a miss")
    p.add_argument("--eval-every", type=positive_int, default=50,
                   help="steps between test evaluations: the resolution of the steps-to-target figure")
    p.add_argument("--threads", type=run_threads, default=2, help="intra-op threads of each run, 0 = all cores")
    p.add_argument("--data-dir", type=user_path, metavar="DIR",
                   help="folder with the datasets' files (default: none; the usual sources)")
    add_json_flag(p, "time_to_accuracy")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    rows, res, summary = [], [], []
    doc = {"machine": machine(), "date": str(datetime.date.today()), "runs": res, "summary": summary,
           "config": vars(args)}
    mean_std = lambda xs: (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else None  # noqa: E731
    with results_file(args.json, doc, "benchmarks.time_to_accuracy", lambda: bool(res)):
        for dataset in args.datasets:
            hits = {b: ([], [], [0]) for b in ("tf", "torch")}  # steps, seconds, misses
            for seed in args.seeds:
                for backend in ("tf", "torch"):  # alternating, seed by seed: a drifting machine hits both alike
                    steps, secs, misses = hits[backend]
                    flags = ["--dataset", dataset, "--model", "cnn", "--epochs", args.max_epochs, "--seed", seed,
                             "--eval-every", args.eval_every, "--target-accuracy", TARGETS[dataset],
                             "--threads", args.threads]
                    if args.data_dir:
                        flags += ["--data-dir", args.data_dir]
                    r = train(backend, *flags, accept=("ok", "diverged"))  # a diverged seed is a miss
                    hit = next((pt for pt in r["curve"] if pt["test_accuracy"] >= TARGETS[dataset]), None)
                    if hit is None:
                        misses[0] += 1
                    else:
                        steps.append(hit["step"])
                        secs.append(hit["seconds"])
                    res.append({"dataset": r["dataset"], "backend": backend, "seed": seed, "status": r["status"],
                                "hit": hit})
                    target = f"{TARGETS[dataset]:.0%}"
                    outcome = (f"{target} at step {hit['step']}, {hit['seconds']:.1f} s (test accuracy "
                               f"{hit['test_accuracy']:.4f})" if hit else f"{target} not reached")
                    status = "" if r["status"] == "ok" else f" ({r['status']})"
                    print(f"{dataset} {backend} seed {seed}: {outcome}{status}", flush=True)
            for backend, (steps, secs, misses) in hits.items():
                fmt = lambda xs, f: f"{mean_std(xs)[0]:{f}} +- {mean_std(xs)[1]:{f}}" if xs else "-"  # noqa: E731
                rows.append([dataset, backend, f"{TARGETS[dataset]:.0%}", fmt(steps, ".0f"), fmt(secs, ".1f"),
                             f"{len(steps)}/{len(steps) + misses[0]}"])
                summary.append({"dataset": dataset, "backend": backend, "target": TARGETS[dataset],
                                "reached": len(steps), "runs": len(steps) + misses[0], "steps_mean_std": mean_std(steps),
                                "seconds_mean_std": mean_std(secs)})
        print(f"CNN, Adam 1e-3, batch 128, eval every {args.eval_every} steps, {args.threads} threads; {machine()}; "
              f"{datetime.date.today()}")
        print(table(rows, ["dataset", "backend", "target", "steps (mean +- std)",
                           "train seconds (warm-up in, evaluations out)", "reached"]))

if __name__ == "__main__":
    main()
