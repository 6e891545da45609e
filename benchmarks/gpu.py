"""The torch side on one accelerator (issue #7's GPU line; the accelerator machine has PyTorch, not
TensorFlow): train samples/s of the CNN and the MLP at batch 128 and 512, Lightning and the raw
loop alternating, the Lightning / raw ratio, and utilisation against torch's own matmul peak on the
same device in the same precision (fp32 and bf16).

    python -m benchmarks.gpu [--dataset fashion_mnist] [--batches 128,512] [--precisions 32,bf16]
                             [--repeats 2] [--epochs 1] [--data-dir DIR] [--json FILE]

It runs on whatever torch sees (a CUDA GPU when present, else the CPU), so it can be checked on a
CPU before device time is spent. On the GPU, fp32 runs leave torch's TF32 defaults as they are
(matmul off, cuDNN convolutions on) and the fp32 peak is measured with TF32 off.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys

from .common import ROOT, machine, median, table, train, write_json

PEAK_SCRIPT = """
import json, sys, torch
sys.path.insert(0, {root!r})
from data.loop import time_peak
dev = "cuda" if torch.cuda.is_available() else "cpu"
n = {n} if dev == "cuda" else 1024
name = torch.cuda.get_device_name(0) if dev == "cuda" else "cpu"
out = {{}}
for prec, dtype in (("32", torch.float32), ("bf16", torch.bfloat16)):
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    def run():
        a @ b
        if dev == "cuda":
            torch.cuda.synchronize()
    out[prec] = time_peak(run, n, name, prec)
print(json.dumps(out))
"""


def peaks(n: int) -> dict:
    """torch's fp32 and bf16 matmul peaks (FLOP/s) on the device, in a child process."""
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT.format(root=str(ROOT), n=n)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"peak probe failed: {proc.stderr[-800:]}")
    import json
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--models", default="cnn,mlp")
    p.add_argument("--batches", default="128,512")
    p.add_argument("--precisions", default="32,bf16")
    p.add_argument("--repeats", type=int, default=2, help="Lightning/raw pairs per configuration (default: 2)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--steps", type=int, help="train this many steps instead of --epochs (quick checks)")
    p.add_argument("--peak-n", type=int, default=8192, help="square matmul size of the GPU peak probe")
    p.add_argument("--data-dir", help="folder with the dataset files (else the usual sources)")
    p.add_argument("--json", default="bench-out/gpu.json")
    args = p.parse_args(argv)
    peak = peaks(args.peak_n)
    print(f"peak on {peak['32']['device']}: fp32 {peak['32']['peak_flops'] / 1e12:.1f} TFLOP/s, "
          f"bf16 {peak['bf16']['peak_flops'] / 1e12:.1f} TFLOP/s", flush=True)
    budget = ["--steps", args.steps] if args.steps else ["--epochs", args.epochs]
    rows, out = [], []
    for prec in args.precisions.split(","):
        for model in args.models.split(","):
            for batch in map(int, args.batches.split(",")):
                flags = ["--dataset", args.dataset, "--model", model, *budget, "--batch-size", batch,
                         "--precision", prec, "--eval-every", 0]
                if args.data_dir:
                    flags += ["--data-dir", args.data_dir]
                lit, raw, ratios, device, fps = [], [], [], "", 0
                for rep in range(args.repeats):
                    a = train("torch", *flags, "--loop", "lightning", "--seed", rep)
                    b = train("torch", *flags, "--loop", "raw", "--seed", rep)
                    lit.append(a["throughput"]["train_samples_per_s"])
                    raw.append(b["throughput"]["train_samples_per_s"])
                    ratios.append(lit[-1] / raw[-1])
                    device, fps = a["device"], a["flops_per_sample"]
                    print(f"{prec} {model} batch {batch} rep {rep}: lightning {lit[-1]:,.0f}  raw {raw[-1]:,.0f}  "
                          f"ratio {ratios[-1]:.3f}", flush=True)
                util = fps * median(lit) / peak[prec]["peak_flops"]
                rows.append([prec, model, batch, f"{median(lit):,.0f}", f"{median(raw):,.0f}", f"{median(ratios):.3f}",
                             f"{100 * util:.1f} %"])
                out.append({"precision": prec, "model": model, "batch_size": batch, "device": device,
                            "lightning_samples_per_s": lit, "raw_samples_per_s": raw, "ratios": ratios,
                            "flops_per_sample": fps, "utilisation_lightning": util})
    print()
    print(f"{args.dataset}, {args.repeats} alternating pairs, {' '.join(map(str, budget))}; device {out[0]['device'] if out else '?'}; "
          f"{machine()}; {datetime.date.today()}")
    print(table(rows, ["precision", "model", "batch", "Lightning samples/s", "raw samples/s", "Lightning / raw",
                       "utilisation (Lightning, vs same-precision peak)"]))
    write_json(args.json, {"config": vars(args), "machine": machine(), "date": str(datetime.date.today()),
                           "peak": peak, "results": out})


if __name__ == "__main__":
    main()
