"""fp32 matmul peak of this device, per framework (what utilisation is measured against).

tf and torch are measured by their job runners' `peak` op (the probe `python -m compare` uses),
each in its own child process (never TensorFlow and torch in one); numpy in this process.
    python -m benchmarks.peak [--n 2048] [--threads 2] [--json FILE]
    python -m benchmarks.peak --framework torch   (one framework, prints GFLOP/s as JSON)
"""
from __future__ import annotations

import json
import os

from .common import add_json_flag, own_threads, parser, peak, positive_int

FRAMEWORKS = ("tf", "torch", "numpy")


def measure(framework: str, n: int, threads: int) -> dict:
    """Best repetition of an n x n x n fp32 matmul (after two warm-ups), in GFLOP/s."""
    if framework == "numpy":
        import numpy as np
        from threadpoolctl import threadpool_limits

        from data.loop import time_peak
        threadpool_limits(threads)
        a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
        result = time_peak(lambda: a @ b, n, "cpu", "32")
    else:
        result = peak(framework, "32", n_cpu=n, n_gpu=n, threads=threads)
    return {"framework": framework, "device": result["device"], "n": n, "threads": threads,
            "gflops": result["peak_flops"] / 1e9}


def build_parser():
    p = parser("peak", __doc__)
    p.add_argument("--framework", choices=FRAMEWORKS,
                   help="measure this framework only and print its figure as one JSON line (no table, no file) "
                        "(default: all three)")
    p.add_argument("--n", type=positive_int, default=2048, help="matrix size: n x n times n x n, fp32")
    p.add_argument("--threads", type=own_threads, default=os.cpu_count() or 1,
                   help="threads of each framework (default: this machine's cores, %(default)s)")
    add_json_flag(p, "peak", help="write the table's figures here")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.framework:
        print(json.dumps(measure(args.framework, args.n, args.threads)))
        return
    results = [measure(f, args.n, args.threads) for f in FRAMEWORKS]
    from .common import stamp, table, write_json
    print(table([[r["framework"], r["device"], f"{r['gflops']:,.1f}", f"fp32 {r['n']}^3, {r['threads']} threads"]
                 for r in results], ["framework", "device", "GFLOP/s", "matmul"]))
    when = stamp()
    print(f"{when['machine']}; {when['date']}")
    write_json(args.json, {**when, "results": results})


if __name__ == "__main__":
    main()
