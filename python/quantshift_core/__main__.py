"""``python -m quantshift_core``: runs the operator tool ``quantshift-state``.

The tool is the Rust binary built from this crate (``cargo build --release --bin
quantshift-state``). It is looked for, in order, at ``$QUANTSHIFT_STATE_BIN``, next to this
package, in this Python environment's scripts directory, then on ``PATH``; the command-line
arguments are passed through unchanged, and so is the exit code.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

TOOL = "quantshift-state"
# The tool's own code for "the operation could not be done".
EXIT_ERROR = 3


def find_tool():
    names = [TOOL + ".exe", TOOL] if os.name == "nt" else [TOOL]
    explicit = os.environ.get("QUANTSHIFT_STATE_BIN")
    if explicit:
        return explicit
    here = os.path.dirname(os.path.abspath(__file__))
    for directory in (here, os.path.join(here, "bin"), sysconfig.get_path("scripts")):
        for name in names:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
    return shutil.which(TOOL)


def main(argv):
    tool = find_tool()
    if tool is None:
        sys.stderr.write(
            "%s: error: the %s binary was not found next to the quantshift_core package, "
            "in this environment's scripts directory or on PATH; build it with "
            "'cargo build --release --bin %s' and put it on PATH, or set "
            "QUANTSHIFT_STATE_BIN to its path\n" % (TOOL, TOOL, TOOL)
        )
        return EXIT_ERROR
    args = [tool] + list(argv)
    if os.name == "nt":
        return subprocess.call(args)
    try:
        os.execv(tool, args)
    except OSError as err:
        sys.stderr.write("%s: error: cannot run %s: %s\n" % (TOOL, tool, err.strerror))
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
