"""Child processes for the Ctrl-C tests (tests/test_cli_errors.py, tests/test_runtime_cli.py):
``python ARGS`` started with SIGINT's default action, as a terminal's shell starts a command.

A test run started in the background without job control (``cmd &`` in a script, ``nohup``
wrappers, some CI runners) has SIGINT ignored, and every child inherits that. Python installs
its KeyboardInterrupt handler only where SIGINT is not ignored at start-up, so the CLI under
test would run on through the test's Ctrl-C, exactly as it should in such a background job.
The Ctrl-C tests are about a user pressing Ctrl-C, so their child puts SIGINT back to its
default action and then execs the interpreter (same process id) with the real arguments."""
from __future__ import annotations

import sys

_DEFAULT_SIGINT_THEN_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def python_as_from_a_terminal(*args: str) -> list[str]:
    """The command line that runs ``python ARGS`` (interpreter options such as ``-X`` included)
    with SIGINT at its default action, whatever the test process inherited."""
    return [sys.executable, "-c", _DEFAULT_SIGINT_THEN_EXEC, *args]
