"""Framework overheads, measured side by side: the tf custom GradientTape loop against
`model.fit`, and Lightning against a raw PyTorch loop, for the MLP and the CNN.

Runs alternate A, B, A, B ... in one invocation (a drifting machine hits both alike); each run is
a whole training process; train samples/s come from the RunResult (warm-up and evaluation
excluded). Prints medians and the median of the per-pair ratios.

    python -m benchmarks.overhead [--dataset fashion_mnist] [--repeats 3] [--epochs 1] [--json FILE]
"""
from __future__ import annotations

import datetime

from .common import (add_data_flags, add_json_flag, add_run_flags, machine, median, parser, positive_int, results_file,
                     table, train)

PAIRS = [("tf", "custom", "fit"), ("torch", "lightning", "raw")]


def build_parser():
    p = parser("overhead", __doc__)
    add_data_flags(p)
    p.add_argument("--repeats", type=positive_int, default=3, help="A/B pairs per comparison")
    add_run_flags(p)
    p.add_argument("--steps-per-call", type=positive_int, default=32,
                   help="steps per dispatch in the tf custom loop and Lightning (1: Lightning's textbook one step "
                        "per training_step); model.fit keeps Keras's default steps_per_execution=1 and the raw "
                        "loop steps one at a time whatever this says")
    add_json_flag(p, "overhead")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    flags = ["--dataset", args.dataset, "--epochs", args.epochs, "--batch-size", args.batch_size,
             "--threads", args.threads, "--eval-every", 0, "--steps-per-call", args.steps_per_call]
    rows, out = [], []
    doc = {"config": vars(args), "machine": machine(), "date": str(datetime.date.today()), "results": out}
    with results_file(args.json, doc, "benchmarks.overhead", lambda: any(e["a_samples_per_s"] for e in out)):
        for model in args.models:
            for backend, a, b in PAIRS:
                sa, sb, ratios = [], [], []
                entry = {"backend": backend, "model": model, "a": a, "b": b, "a_samples_per_s": sa,
                         "b_samples_per_s": sb, "ratios": ratios}
                out.append(entry)  # filled pair by pair: a run that fails later keeps these
                for rep in range(args.repeats):
                    ra = train(backend, *flags, "--model", model, "--loop", a, "--seed", rep)
                    sa.append(ra["throughput"]["train_samples_per_s"])
                    rb = train(backend, *flags, "--model", model, "--loop", b, "--seed", rep)
                    sb.append(rb["throughput"]["train_samples_per_s"])
                    ratios.append(sa[-1] / sb[-1])
                    entry.update(dataset=ra["dataset"], a_median=median(sa), b_median=median(sb),
                                 median_ratio=median(ratios))
                    print(f"{backend} {model} rep {rep}: {a} {sa[-1]:,.0f}  {b} {sb[-1]:,.0f}  ratio {ratios[-1]:.3f}",
                          flush=True)
                rows.append([backend, model, f"{a} / {b}", f"{median(sa):,.0f}", f"{median(sb):,.0f}",
                             f"{median(ratios):.3f}", f"{min(ratios):.3f}-{max(ratios):.3f}"])
        print()
        print(f"{out[0]['dataset'] if out else args.dataset}, batch {args.batch_size}, {args.threads} threads, "
              f"{args.epochs:g} epoch(s), {args.steps_per_call} steps per call (custom loop and Lightning), "
              f"{args.repeats} alternating pairs; {machine()}; {datetime.date.today()}")
        print(table(rows, ["backend", "model", "A / B", "A samples/s (median)", "B samples/s (median)",
                           "A/B (median of the pairs' ratios)", "range"]))

if __name__ == "__main__":
    main()
