"""fp32 matmul peak of this device, per framework (what utilisation is measured against).

Each framework runs in its own child process (never TensorFlow and torch in one).
    python -m benchmarks.peak [--n 2048] [--threads 2] [--json FILE]
    python -m benchmarks.peak --framework torch   (one framework, prints GFLOP/s as JSON)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(framework: str, n: int, threads: int, repeats: int = 10) -> dict:
    """Best-of-`repeats` time of an n x n x n fp32 matmul, after two warm-ups, in GFLOP/s."""
    if framework == "tf":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        with tf.device(device):
            a, b = tf.random.uniform((n, n)), tf.random.uniform((n, n))
            run = lambda: tf.linalg.matmul(a, b).numpy()  # noqa: E731  (.numpy() syncs)
    elif framework == "torch":
        import torch
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)

        def run():
            c = a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            return c
    else:
        from threadpoolctl import threadpool_limits
        import numpy as np
        threadpool_limits(threads)
        a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
        device = "cpu"
        run = lambda: a @ b  # noqa: E731
    for _ in range(2):
        run()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return {"framework": framework, "device": str(device), "n": n, "threads": threads, "gflops": 2 * n ** 3 / best / 1e9}


def peak_in_child(framework: str, n: int = 2048, threads: int = 2) -> dict:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peak", "--framework", framework, "--n", str(n),
                           "--threads", str(threads)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"peak {framework}: {proc.stderr[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("tf", "torch", "numpy"))
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.framework:
        print(json.dumps(measure(args.framework, args.n, args.threads)))
        return
    results = [peak_in_child(f, args.n, args.threads) for f in ("tf", "torch", "numpy")]
    for r in results:
        print(f"{r['framework']:6s} {r['device']:8s} {r['gflops']:8.1f} GFLOP/s  (fp32 {r['n']}^3 matmul, {r['threads']} threads)")
    if args.json:
        from .common import write_json
        write_json(args.json, results)


if __name__ == "__main__":
    main()
