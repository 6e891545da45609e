"""Framework overheads, measured side by side: the tf custom GradientTape loop against
`model.fit`, and Lightning against a raw PyTorch loop, for the MLP and the CNN.

Runs alternate A, B, A, B ... in one invocation (a drifting machine hits both alike); each run is
a whole training process; train samples/s come from the RunResult (warm-up and evaluation
excluded). Prints medians and the median of the per-pair ratios.

    python -m benchmarks.overhead [--dataset fashion_mnist] [--repeats 3] [--epochs 1] [--json FILE]
"""
from __future__ import annotations

import argparse
import datetime

from .common import machine, median, table, train, write_json

PAIRS = [("tf", "custom", "fit"), ("torch", "lightning", "raw")]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--repeats", type=int, default=3, help="A/B pairs per comparison (default: 3)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps-per-call", type=int, default=32,
                   help="both loops of each pair (1: Lightning's textbook one step per training_step)")
    p.add_argument("--json", default="bench-out/overhead.json")
    args = p.parse_args(argv)
    flags = ["--dataset", args.dataset, "--epochs", args.epochs, "--batch-size", args.batch_size,
             "--threads", args.threads, "--eval-every", 0, "--steps-per-call", args.steps_per_call]
    rows, out = [], []
    for model in args.models.split(","):
        for backend, a, b in PAIRS:
            sa, sb, ratios = [], [], []
            for rep in range(args.repeats):
                ra = train(backend, *flags, "--model", model, "--loop", a, "--seed", rep)
                rb = train(backend, *flags, "--model", model, "--loop", b, "--seed", rep)
                sa.append(ra["throughput"]["train_samples_per_s"])
                sb.append(rb["throughput"]["train_samples_per_s"])
                ratios.append(sa[-1] / sb[-1])
                print(f"{backend} {model} rep {rep}: {a} {sa[-1]:,.0f}  {b} {sb[-1]:,.0f}  ratio {ratios[-1]:.3f}", flush=True)
            rows.append([backend, model, f"{a} / {b}", f"{median(sa):,.0f}", f"{median(sb):,.0f}",
                         f"{median(ratios):.3f}", f"{min(ratios):.3f}-{max(ratios):.3f}"])
            out.append({"backend": backend, "model": model, "a": a, "b": b, "a_samples_per_s": sa,
                        "b_samples_per_s": sb, "ratios": ratios, "median_ratio": median(ratios)})
    print()
    print(f"{args.dataset}, batch {args.batch_size}, {args.threads} threads, {args.epochs:g} epoch(s), "
          f"{args.steps_per_call} steps per call, {args.repeats} alternating pairs; {machine()}; {datetime.date.today()}")
    print(table(rows, ["backend", "model", "A / B", "A samples/s", "B samples/s", "ratio A/B (median)", "range"]))
    write_json(args.json, {"config": vars(args), "machine": machine(), "date": str(datetime.date.today()), "results": out})


if __name__ == "__main__":
    main()
