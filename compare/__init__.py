"""The comparison harness: runs each (backend, model) in its own child process and reports them side by side.

    python -m compare --dataset mnist        (see compare/__main__.py)

Framework-free by rule: this package imports data, the standard library, numpy, rich and matplotlib, never
tensorflow or torch; the backends are reached only as child processes.
"""
