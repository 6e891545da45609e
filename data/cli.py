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
