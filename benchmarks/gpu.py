"""The torch side on one accelerator (issue #7's GPU line; the accelerator machine has PyTorch, not
TensorFlow): train samples/s of the CNN and the MLP at batch 128 and 512, Lightning and the raw
loop alternating, the Lightning / raw ratio, and utilisation against torch's own matmul peak on the
same device: fp32 runs against the fp32 peak, bf16-mixed runs against the faster of the bf16 and fp32
peaks (mixed precision may use either; on a CPU without bf16 units torch's bf16 matmul ran at 1 GFLOP/s
against fp32's 181 here, AMD EPYC, 2026-11-30, and the bf16 CNN showed 729 % of that bf16 "peak").

    python -m benchmarks.gpu [--dataset fashion_mnist] [--batches 128,512] [--precisions 32,bf16]
                             [--repeats 2] [--epochs 1] [--data-dir DIR] [--json FILE]

Last, it checks data parallel's dropout on that device (torch_impl.jobs' dropout op with world 2): two
replicas' masks against one device's, which must be the same (on a GPU, from its fused dropout kernel).

It runs on whatever torch sees (a CUDA GPU when present, else the CPU), so it can be checked on a
CPU before device time is spent. fp32 runs are IEEE fp32 (torch_impl turns cuDNN's TF32 off); the peaks
come from torch_impl.jobs' `peak` op, the probe `python -m compare` uses (1024^3 on a CPU, --peak-n
on a GPU).
"""
from __future__ import annotations

import datetime

from .common import (add_data_flags, add_json_flag, comma_list, machine, median, parser, peak, positive_float,
                     positive_int, results_file, run_job, table, train, user_path)

PRECISIONS = ("32", "bf16")

def build_parser():
    p = parser("gpu", __doc__)
    add_data_flags(p, models="cnn,mlp")
    p.add_argument("--batches", type=comma_list("batch size", item=positive_int), default="128,512",
                   help="comma-separated batch sizes")
    p.add_argument("--precisions", type=comma_list("precision", PRECISIONS), default=",".join(PRECISIONS),
                   help="comma-separated, from 32 (IEEE fp32), bf16")
    p.add_argument("--repeats", type=positive_int, default=2, help="Lightning/raw pairs per configuration")
    p.add_argument("--epochs", type=positive_float, default=1.0, help="epochs each run trains (unless --steps)")
    p.add_argument("--steps", type=positive_int,
                   help="train this many steps instead of --epochs, for quick checks (default: none, --epochs)")
    p.add_argument("--peak-n", type=positive_int, default=8192, help="square matmul size of the GPU peak probe")
    p.add_argument("--data-dir", type=user_path, metavar="DIR",
                   help="folder with the dataset's files (default: none; the usual sources)")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="accept files that fail the checksums")
    add_json_flag(p, "gpu")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    rows, out = [], []
    doc = {"config": vars(args), "machine": machine(), "date": str(datetime.date.today()), "results": out}
    measured = lambda: "peak" in doc or any(e["lightning_samples_per_s"] for e in out)  # noqa: E731
    with results_file(args.json, doc, "benchmarks.gpu", measured):
        peaks = doc["peak"] = {prec: peak("torch", prec, n_gpu=args.peak_n) for prec in PRECISIONS}
        print(f"peak on {peaks['32']['device']}: fp32 {peaks['32']['peak_flops'] / 1e12:.1f} TFLOP/s, "
              f"bf16 {peaks['bf16']['peak_flops'] / 1e12:.1f} TFLOP/s", flush=True)
        budget = ["--steps", args.steps] if args.steps else ["--epochs", args.epochs]
        for prec in args.precisions:
            for model in args.models:
                for batch in args.batches:
                    flags = ["--dataset", args.dataset, "--model", model, *budget, "--batch-size", batch,
                             "--precision", prec, "--eval-every", 0]
                    if args.data_dir:
                        flags += ["--data-dir", args.data_dir]
                    if not args.verify:
                        flags += ["--no-verify"]
                    lit, raw, ratios = [], [], []
                    best = max((peaks[prec], peaks["32"]), key=lambda q: q["peak_flops"])  # the run's ceiling
                    entry = {"precision": prec, "model": model, "batch_size": batch, "lightning_samples_per_s": lit,
                             "raw_samples_per_s": raw, "ratios": ratios}
                    out.append(entry)  # filled pair by pair: a run that fails later keeps these
                    for rep in range(args.repeats):
                        a = train("torch", *flags, "--loop", "lightning", "--seed", rep)
                        lit.append(a["throughput"]["train_samples_per_s"])
                        b = train("torch", *flags, "--loop", "raw", "--seed", rep)
                        raw.append(b["throughput"]["train_samples_per_s"])
                        ratios.append(lit[-1] / raw[-1])
                        entry.update(device=a["device"], data=a["dataset"], flops_per_sample=a["flops_per_sample"],
                                     lightning_median=median(lit), raw_median=median(raw), median_ratio=median(ratios),
                                     utilisation_lightning=a["flops_per_sample"] * median(lit) / best["peak_flops"],
                                     utilisation_peak=best["precision"])
                        print(f"{prec} {model} batch {batch} rep {rep}: lightning {lit[-1]:,.0f}  raw {raw[-1]:,.0f}  "
                              f"ratio {ratios[-1]:.3f}", flush=True)
                    rows.append([prec, model, batch, f"{median(lit):,.0f}", f"{median(raw):,.0f}", f"{median(ratios):.3f}",
                                 f"{100 * entry['utilisation_lightning']:.1f} %"])
        print()
        print(f"{args.dataset}, {args.repeats} alternating pairs, {' '.join(map(str, budget))}; device "
              f"{out[0]['device'] if out else '?'}; {machine()}; {datetime.date.today()}")
        print(table(rows, ["precision", "model", "batch", "Lightning samples/s", "raw samples/s",
                           "Lightning / raw (median of the pairs' ratios)",
                           "utilisation (Lightning, vs the faster of its precision's and fp32's peaks)"]))
        rd = doc["replica_dropout"] = run_job("torch", {"op": "dropout", "model": "mlp", "input_shape": [28, 28, 1],
                                                        "num_classes": 10, "dropout": 0.5, "world": 2},
                                              "torch replica dropout")
        same = "the same" if rd["replica_max_abs_diff"] == 0 else "NOT the same"
        print(f"replica dropout on {rd['device']}: {rd['world']} replicas' masks against one device's, largest "
              f"difference {rd['replica_max_abs_diff']:g} ({same})")


if __name__ == "__main__":
    main()
