"""Scaling, both backends, both models: train and inference samples/s against batch size
(32 to 1024); epoch time against training-set size (10k, 30k, 60k: it should grow linearly);
1 thread against 2; one device against two data-parallel replicas (--devices 2: Lightning DDP, two
processes that share the threads; tf.distribute.MirroredStrategy over two logical devices of one
process), the same global batch of 128 and threads. Each point is one training run; samples/s are
counted after the warm-up, the epoch times include it (what one waits for) and are shown beside the
steady-state cost per sample.

    python -m benchmarks.scaling [--dataset fashion_mnist] [--parts batch,size,threads,devices] [--json FILE]
"""
from __future__ import annotations

import datetime

from .common import (DATASET_NAMES, add_json_flag, comma_list, machine, parser, results_file, row_line, run_threads,
                     table, train)

BACKENDS = {"tf": "custom", "torch": "lightning"}
PARTS = ("batch", "size", "threads", "devices")


def build_parser():
    p = parser("scaling", __doc__)
    p.add_argument("--dataset", choices=DATASET_NAMES, default="fashion_mnist", help="dataset every run trains on")
    p.add_argument("--parts", type=comma_list("part", PARTS), default=",".join(PARTS),
                   help=f"comma-separated parts to run, from {', '.join(PARTS)}")
    p.add_argument("--threads", type=run_threads, default=2,
                   help="intra-op threads of each run in the batch and size parts, 0 = all cores (the threads part "
                        "compares 1 and 2; the devices part runs both with these)")
    add_json_flag(p, "scaling")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    base = ["--dataset", args.dataset, "--eval-every", 0]
    out = {"machine": machine(), "date": str(datetime.date.today()), "dataset": args.dataset, "threads": args.threads,
           "loops": dict(BACKENDS)}
    def measured():  # a part's list of points (before the threads part runs, out["threads"] is the thread count)
        return any(isinstance(out.get(part), list) and out[part] for part in PARTS)
    with results_file(args.json, out, "benchmarks.scaling", measured):
        parts = args.parts
        if "batch" in parts:
            rows, res = [], []
            heads = ["backend", "model", "batch", "train samples/s", "infer samples/s"]
            out["batch"] = res  # filled run by run: a run that fails later keeps these
            for model in ("mlp", "cnn"):
                for batch in (32, 64, 128, 256, 512, 1024):
                    steps = max(30, min(200, (60 if model == "cnn" else 300) * 128 // batch))
                    for backend, loop in BACKENDS.items():
                        r = train(backend, *base, "--model", model, "--batch-size", batch, "--steps", steps,
                                  "--threads", args.threads, "--loop", loop)
                        out.setdefault("data", r["dataset"])  # "mnist (5k subset)" when the full set was not found
                        t = r["throughput"]
                        res.append({"backend": backend, "model": model, "batch": batch, "steps": steps,
                                    "train": t["train_samples_per_s"], "infer": t["infer_samples_per_s"]})
                        rows.append([backend, model, batch, f"{t['train_samples_per_s']:,.0f}",
                                     f"{t['infer_samples_per_s']:,.0f}"])
                        print(row_line(rows[-1], heads), flush=True)
            print(table(rows, heads))
        if "size" in parts:
            rows, res = [], []
            heads = ["backend", "model", "train samples", "epoch train s (warm-up in)", "us / sample",
                     "us / sample after warm-up"]
            out["size"] = res
            for backend, loop in BACKENDS.items():
                for n in (10_000, 30_000, 60_000):
                    r = train(backend, *base, "--model", "cnn", "--batch-size", 128, "--epochs", 1,
                              "--train-limit", n, "--threads", args.threads, "--loop", loop)
                    secs = r["final"]["train_seconds"]  # the whole epoch's training time, warm-up included
                    steady = 1e6 / r["throughput"]["train_samples_per_s"]
                    res.append({"backend": backend, "train_size": n, "epoch_seconds": secs,
                                "us_per_sample": secs / n * 1e6, "steady_us_per_sample": steady})
                    rows.append([backend, "cnn", f"{n:,}", f"{secs:.2f}", f"{secs / n * 1e6:.1f}", f"{steady:.1f}"])
                    print(row_line(rows[-1], heads), flush=True)
            print(table(rows, heads))
        if "threads" in parts:
            one_against_two(out, "threads", base, lambda t: ("--threads", t), ("1 thread", "2 threads"))
        if "devices" in parts:
            one_against_two(out, "devices", base, lambda d: ("--threads", args.threads, "--devices", d),
                            ("1 device", "2 devices (data parallel)"))


def one_against_two(out: dict, part: str, base: list, flags, heads: tuple) -> None:
    """A part that sets one flag to 1 and to 2 (flags(v): that run's flags), both models and backends at
    batch 128: train samples/s and the speed-up, into out[part] run by run."""
    rows, res = [], []
    cols = ["backend", "model", *heads, "speed-up"]
    out[part] = res
    for model in ("mlp", "cnn"):
        for backend, loop in BACKENDS.items():
            tput = {}
            for v in (1, 2):
                r = train(backend, *base, "--model", model, "--batch-size", 128,
                          "--steps", 100 if model == "cnn" else 400, "--loop", loop, *flags(v))
                tput[v] = r["throughput"]["train_samples_per_s"]
            res.append({"backend": backend, "model": model, "1": tput[1], "2": tput[2]})
            rows.append([backend, model, f"{tput[1]:,.0f}", f"{tput[2]:,.0f}", f"{tput[2] / tput[1]:.2f}x"])
            print(row_line(rows[-1], cols), flush=True)
    print(table(rows, cols))


if __name__ == "__main__":
    main()
