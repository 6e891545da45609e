"""Shared CLI plumbing: one clear line on stderr and a non-zero exit for expected failures,
a traceback only with --debug."""
from __future__ import annotations

import sys

from .contract import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, ConfigError
from .errors import DataError


def run_cli(main, argv=None, prog: str = "") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, ValueError) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, ConfigError) else EXIT_ERROR
    except (DataError, OSError) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def run_jobs(argv, ops: dict, configure) -> int:
    """The job runners' main (tf_impl.jobs, torch_impl.jobs): read {"jobs": [...]} from argv[0],
    configure the framework once (threads, determinism), run each job's op in order."""
    import json

    from .contract import RunConfig
    spec = json.loads(open(argv[0]).read())
    configure(RunConfig(threads=spec.get("threads", 0), deterministic=spec.get("deterministic", True)))
    for job in spec["jobs"]:
        if job["op"] not in ops:
            raise ValueError(f"unknown job op {job['op']!r}; choose from {', '.join(sorted(ops))}")
        ops[job["op"]](job)
    return 0

