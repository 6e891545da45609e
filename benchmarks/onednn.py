"""TensorFlow with and without its oneDNN ops, measured side by side: the same tf training run with
TF_ENABLE_ONEDNN_OPTS=0 and =1 in its environment, for the MLP and the CNN.

TensorFlow turns its oneDNN ops on by default only on x86 CPUs with AVX-512 VNNI, BF16 or AMX; elsewhere
(an AMD EPYC with AVX2, for one) its convolutions and matmuls run on Eigen unless the variable says 1.
This shows what that default costs or saves on the machine at hand. Runs alternate off, on, off, on ... in
one invocation (a drifting machine hits both alike); each run is a whole training process; train
samples/s come from the RunResult (warm-up and evaluation excluded), which also records whether the
run had the ops on: a run that did not get the setting asked for stops the script.

    python -m benchmarks.onednn [--dataset fashion_mnist] [--models mlp,cnn] [--loops custom] [--repeats 3]
"""
from __future__ import annotations

import datetime

from .common import (RunFailed, add_data_flags, add_json_flag, add_run_flags, comma_list, machine, median, parser,
                     positive_int, results_file, table, train)

TF_LOOPS = ("custom", "fit")


def build_parser():
    p = parser("onednn", __doc__)
    add_data_flags(p)
    p.add_argument("--loops", type=comma_list("loop", TF_LOOPS), default="custom",
                   help=f"tf training loops, comma-separated, from {', '.join(TF_LOOPS)}")
    p.add_argument("--repeats", type=positive_int, default=3, help="off/on pairs per model and loop")
    add_run_flags(p)
    add_json_flag(p, "onednn")
    return p


def run(flags: list, setting: str) -> float:
    """One tf run with TF_ENABLE_ONEDNN_OPTS=setting; its train samples/s."""
    r = train("tf", *flags, env={"TF_ENABLE_ONEDNN_OPTS": setting})
    if r.get("onednn") is not (setting == "1"):
        raise RunFailed(f"tf {' '.join(map(str, flags))} with TF_ENABLE_ONEDNN_OPTS={setting} ran with oneDNN ops "
                        f"{'on' if r.get('onednn') else 'off' if r.get('onednn') is False else 'unknown'}")
    return r["throughput"]["train_samples_per_s"]


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    flags = ["--dataset", args.dataset, "--epochs", args.epochs, "--batch-size", args.batch_size,
             "--threads", args.threads, "--eval-every", 0]
    rows, out = [], []
    doc = {"config": vars(args), "machine": machine(), "date": str(datetime.date.today()), "results": out}
    with results_file(args.json, doc, "benchmarks.onednn", lambda: any(e["off_samples_per_s"] for e in out)):
        for model in args.models:
            for loop in args.loops:
                off, on, ratios = [], [], []
                entry = {"model": model, "loop": loop, "off_samples_per_s": off, "on_samples_per_s": on,
                         "ratios": ratios}
                out.append(entry)  # filled pair by pair: a run that fails later keeps these
                for rep in range(args.repeats):
                    run_flags = [*flags, "--model", model, "--loop", loop, "--seed", rep]
                    off.append(run(run_flags, "0"))
                    on.append(run(run_flags, "1"))
                    ratios.append(on[-1] / off[-1])
                    entry.update(off_median=median(off), on_median=median(on), median_ratio=median(ratios))
                    print(f"tf {model} {loop} rep {rep}: off {off[-1]:,.0f}  on {on[-1]:,.0f}  on/off {ratios[-1]:.3f}",
                          flush=True)
                rows.append([model, loop, f"{median(off):,.0f}", f"{median(on):,.0f}", f"{median(ratios):.3f}",
                             f"{min(ratios):.3f}-{max(ratios):.3f}"])
        print()
        print(f"{args.dataset}, batch {args.batch_size}, {args.threads} threads, {args.epochs:g} epoch(s), "
              f"{args.repeats} alternating pairs; {machine()}; {datetime.date.today()}")
        print(table(rows, ["model", "tf loop", "oneDNN off samples/s (median)", "oneDNN on samples/s (median)",
                           "on/off (median of the pairs' ratios)", "range"]))


if __name__ == "__main__":
    main()
