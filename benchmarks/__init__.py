"""Benchmarks: whole training runs as child processes, printed side by side with medians and ratios
(machines are noisy; tests never assert on time). overhead, gpu and onednn alternate A and B in one
invocation, time_to_accuracy alternates the backends seed by seed, torch_configs and lightning_step their
variants round by round (in one process); scaling and large_batch run each cell once. A failed run or a
Ctrl-C keeps the figures made before it.

    python -m benchmarks.overhead         tf custom loop vs model.fit; Lightning vs raw torch
    python -m benchmarks.peak             fp32 matmul peak per framework (for utilisation)
    python -m benchmarks.scaling          batch size, training-set size and thread scaling
    python -m benchmarks.time_to_accuracy steps and seconds to 99 % MNIST / 90 % Fashion-MNIST
    python -m benchmarks.accuracy         end-of-run test accuracy per seed and recipe
    python -m benchmarks.torch_configs    torch CNN configurations against a textbook eager port
    python -m benchmarks.gpu              the torch side on an accelerator (Lightning vs raw, utilisation)
    python -m benchmarks.large_batch      page faults and system time of the CNN at large batches
    python -m benchmarks.onednn           tf with its oneDNN ops off against on (TF_ENABLE_ONEDNN_OPTS)
    python -m benchmarks.lightning_step   Lightning's own cost per optimizer step, against the raw loop's step
"""
