"""Why the torch CNN trains slower per sample at large batches on a Linux CPU: page faults. torch's
CPU allocator hands each activation buffer back to glibc's malloc, which serves blocks this large
with mmap and returns them to the system when freed, so every step faults fresh pages in again.
This measures, for each batch size in one invocation: tf (its allocator keeps memory), torch as
is, and torch with glibc told never to mmap nor trim (GLIBC_TUNABLES below), one training process
each (raw loop, so Lightning plays no part): samples/s, minor page faults per sample, system CPU s.

    python -m benchmarks.large_batch [--batches 128,1024] [--epochs 1] [--threads 2] [--json FILE]
"""
from __future__ import annotations

import datetime
import resource

from .common import (DATASET_NAMES, add_json_flag, comma_list, machine, parser, positive_float, positive_int,
                     results_file, row_line, run_threads, table, train)

KEEP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"  # never mmap, never give memory back
HEADS = ["batch", "run", "train samples/s", "page faults / sample", "system CPU s", "user CPU s"]
RUNS = (("tf", "custom", {}), ("torch", "raw", {}), ("torch", "raw", {"GLIBC_TUNABLES": KEEP}))


def build_parser():
    p = parser("large_batch", __doc__)
    p.add_argument("--dataset", choices=DATASET_NAMES, default="fashion_mnist", help="dataset every run trains on")
    p.add_argument("--batches", type=comma_list("batch size", item=positive_int), default="128,1024",
                   help="comma-separated batch sizes; each runs tf, torch, and torch with GLIBC_TUNABLES")
    p.add_argument("--epochs", type=positive_float, default=1.0, help="epochs each run trains")
    p.add_argument("--threads", type=run_threads, default=2, help="intra-op threads of each run, 0 = all cores")
    add_json_flag(p, "large_batch")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    rows, out = [], []
    doc = {"date": str(datetime.date.today()), "machine": machine(), "tunables": KEEP, "runs": out}
    with results_file(args.json, doc, "benchmarks.large_batch", lambda: bool(out)):
        for batch in args.batches:
            for backend, loop, env in RUNS:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = train(backend, "--dataset", args.dataset, "--model", "cnn", "--batch-size", batch, "--epochs",
                          args.epochs, "--eval-every", 0, "--threads", args.threads, "--loop", loop, env=env)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the whole child: start-up and evaluation too
                samples = r["final"]["steps"] * batch
                faults, sys_s = after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime
                label = f"{backend} {loop}" + (" + GLIBC_TUNABLES" if env else "")
                out.append({"batch": batch, "backend": backend, "loop": loop, "env": env, "data": r["dataset"],
                            "train_samples_per_s": r["throughput"]["train_samples_per_s"], "minor_faults": faults,
                            "faults_per_sample": faults / samples, "system_cpu_s": sys_s,
                            "user_cpu_s": after.ru_utime - before.ru_utime})
                rows.append([batch, label, f"{out[-1]['train_samples_per_s']:,.0f}", f"{faults / samples:.1f}",
                             f"{sys_s:.1f}", f"{out[-1]['user_cpu_s']:.1f}"])
                print(row_line(rows[-1], HEADS), flush=True)
        print(f"\nCNN, {args.dataset}, {args.epochs:g} epoch(s), {args.threads} threads; {machine()}; "
              f"{datetime.date.today()}; GLIBC_TUNABLES={KEEP}")
        print(table(rows, HEADS))

if __name__ == "__main__":
    main()
