"""The command line that runs twistd with this interpreter (no PATH shims)."""

import sys

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
