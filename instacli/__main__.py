"""`python -m instacli` (and so `accelerate launch -m instacli ...`, and the processes that
:func:`instacli.launch.relaunch_cpu_processes` starts) runs the CLI."""

import os
import sys

if getattr(sys.modules.get("instacli"), "__file__", None) is None:
    # Run from a folder that holds a folder named `instacli` (the folder above a checkout), Python put
    # that folder first on sys.path and made it an empty namespace package in place of the installed
    # one (editable installs resolve after the path). Forget both, then import the real package.
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
    for name in [n for n in sys.modules if n == "instacli" or n.startswith("instacli.")]:
        del sys.modules[name]

from instacli.cli.main import main  # noqa: E402

if __name__ == "__main__":
    main()
