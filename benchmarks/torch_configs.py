"""Which PyTorch configuration trains the CNN fastest on this CPU, against a naive eager loop.

Variants, alternated round by round in one process (so machine drift hits all alike), each
training the same CNN with Adam at batch 128 on Fashion-MNIST-shaped data:
  naive          the textbook port: Conv -> ReLU -> MaxPool, DataLoader(TensorDataset) with
                 per-sample collate, NCHW, torch.optim.Adam
  gather         the port's backbone (ReLU after MaxPool: identical function, 4x fewer ReLU values),
                 whole set as one tensor, batches gathered by index
  channels_last  gather + channels_last model and inputs (oneDNN's preferred layout)
  cl+keras_adam  channels_last + the port's KerasAdam (what torch_impl trains with)
  relu_first     cl+keras_adam with the textbook layer order (ReLU before MaxPool): what the
                 port's order is worth on its own
Prints samples/s medians and the ratio to naive.

    python -m benchmarks.torch_configs [--rounds 5] [--steps 40] [--threads 2] [--model cnn]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from .common import MODEL_NAMES, add_json_flag, own_threads, parser, positive_int

SAMPLES = 60_000  # random images drawn once, MNIST's training-set size


def batch_size(text: str) -> int:
    """At most the images drawn: the naive variant's DataLoader (drop_last) would yield no batch and spin forever."""
    v = positive_int(text)
    if v > SAMPLES:
        raise argparse.ArgumentTypeError(f"at most the {SAMPLES:,} images it trains on, got {v}")
    return v


def build_parser():
    p = parser("torch_configs", __doc__)
    p.add_argument("--rounds", type=positive_int, default=5, help="rounds; each times every variant once, in turn")
    p.add_argument("--steps", type=positive_int, default=40, help="timed optimizer steps per variant and round")
    p.add_argument("--threads", type=own_threads, default=2, help="torch intra-op threads")
    p.add_argument("--batch-size", type=batch_size, default=128, help=f"samples per step, at most {SAMPLES:,}")
    p.add_argument("--model", choices=MODEL_NAMES, default="cnn", help="model every variant trains")
    add_json_flag(p, "torch_configs", help="write the table's figures here")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    import torch
    import torch.nn.functional as F

    from torch_impl.models import build_model
    from torch_impl.optim import KerasAdam
    torch.set_num_threads(args.threads)
    B, n = args.batch_size, SAMPLES
    images = np.random.default_rng(0).random((n, 28, 28, 1), dtype=np.float32)  # (N, H, W, C) as data.stream gives
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 10, n))
    x_cl = torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, C, H, W) view with channels_last strides
    x_cf = x_cl.contiguous()  # (N, C, H, W) contiguous

    def textbook(model):
        """Keras's layer order written the obvious way in torch (what a first port looks like)."""
        from torch import nn

        from torch_impl.models import FlattenNHWC
        if model == "mlp":
            return build_model(model, (28, 28, 1), 10)
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             FlattenNHWC(), nn.Linear(7 * 7 * 64, 128), nn.ReLU(), nn.Linear(128, 10))

    def naive():
        m = textbook(args.model)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_cf, labels), batch_size=B, shuffle=True,
                                             drop_last=True)  # every step a full batch, as the others
        batches = (b for _ in iter(int, 1) for b in loader)  # epoch after epoch: large batches ran out (StopIteration)
        return lambda: step(m, opt, *next(batches))

    def gather(cl=False, keras=False, relu_first=False):
        m = textbook(args.model) if relu_first else build_model(args.model, (28, 28, 1), 10)
        if cl:
            m = m.to(memory_format=torch.channels_last)
        opt = (KerasAdam if keras else torch.optim.Adam)(m.parameters(), lr=1e-3)
        x = x_cl if cl else x_cf
        gen = torch.Generator().manual_seed(0)

        def one():
            idx = torch.randint(0, n, (B,), generator=gen)
            return step(m, opt, x[idx], labels[idx])
        return one

    def step(m, opt, xb, yb):
        loss = F.cross_entropy(m(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    variants = {"naive": naive(), "gather": gather(), "channels_last": gather(cl=True),
                "cl+keras_adam": gather(cl=True, keras=True), "relu_first": gather(cl=True, keras=True, relu_first=True)}
    for fn in variants.values():  # warm-up: allocator, oneDNN primitive caches
        for _ in range(5):
            fn()
    results = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                loss = fn()
            loss.item()
            results[name].append(B * args.steps / (time.perf_counter() - t0))
    base = statistics.median(results["naive"])
    from .common import stamp, table, write_json
    when = stamp()
    print(f"{args.model}, batch {B}, {args.threads} threads, {args.rounds} rounds of {args.steps} steps, torch "
          f"{torch.__version__}; {when['machine']}; {when['date']}")
    rows = [[name, f"{statistics.median(xs):,.0f}", f"{statistics.median(xs) / base:.2f}x", f"{min(xs):,.0f}",
             f"{max(xs):,.0f}"] for name, xs in results.items()]
    print(table(rows, ["variant", "samples/s (median)", "vs naive", "min", "max"]))
    write_json(args.json, {**when, "model": args.model, "batch_size": B, "threads": args.threads, "rounds": args.rounds,
                           "steps": args.steps, "torch": torch.__version__,
                           "samples_per_s": results, "ratio_to_naive": {k: statistics.median(v) / base
                                                                         for k, v in results.items()}})


if __name__ == "__main__":
    main()
