"""The operator tool ``quantshift-state``: the ``quantshift-state`` console script and
``python -m quantshift_core`` both run it.

The tool is compiled into the extension module (the same code as the Rust binary
``quantshift-state``, src/cli/), so installing the package is all it needs. The arguments are
passed through unchanged, and so is the exit code.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import NoReturn, Optional

TOOL = "quantshift-state"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the tool on ``argv`` (default: ``sys.argv[1:]``) and returns its exit code."""
    from quantshift_core._quantshift_core import run_cli

    args = sys.argv[1:] if argv is None else list(argv)
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        # Ctrl-C ends the tool as it ends the native binary (Python's handler would only run
        # once the tool returned); `watch` installs its own handler and exits 0.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    return run_cli([TOOL, *args])


def console() -> NoReturn:
    """The ``quantshift-state`` console script and ``python -m quantshift_core``: runs the
    tool, then ends the process with its exit code at once, as the native binary does.

    Threads the tool started (the exporter's HTTP workers, a refresh in flight) may still be
    logging when it returns, and before Python 3.13 a thread that waits for the GIL while the
    interpreter finalizes is ended inside ``PyGILState_Ensure`` (a crash). The tool keeps no
    Python state, so the process leaves without finalizing, stdout and stderr flushed first.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
