"""Benchmarks: whole training runs as child processes, A and B alternated in one invocation,
medians and ratios printed side by side (machines are noisy; tests never assert on time).

    python -m benchmarks.overhead         tf custom loop vs model.fit; Lightning vs raw torch
    python -m benchmarks.peak             fp32 matmul peak per framework (for utilisation)
    python -m benchmarks.scaling          batch size, training-set size and thread scaling
    python -m benchmarks.time_to_accuracy steps and seconds to 99 % MNIST / 90 % Fashion-MNIST
    python -m benchmarks.accuracy         end-of-run test accuracy per seed and recipe
    python -m benchmarks.torch_configs    torch CNN configurations against a textbook eager port
    python -m benchmarks.gpu              the torch side on an accelerator (Lightning vs raw, utilisation)
"""
