"""A fork server for the tests' command-line runs: imports the libraries once, forks a process per run.

A plain ``python train.py …`` spends about five seconds importing torch, Lightning and Hydra before
it reads its first option; the suite runs the command line well over a hundred times. This server
imports them once, then for every request read from its stdin (one JSON line: ``argv``, ``cwd``,
``env``, ``stdout``, ``stderr``, ``timeout``) forks a child that runs the script as ``__main__``
exactly as the interpreter would (own process group, working directory, environment, stdin from
``/dev/null``, stdout and stderr into the named files, uncaught exceptions and ``SystemExit``
handled by the interpreter itself), and answers with one JSON line: ``returncode`` (negative: the
signal that ended it, as ``subprocess``) and ``timed_out``.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import signal
import sys
import time

# As in a real run, where Hydra has configured logging before a job imports Lightning: with a root handler,
# Lightning's loggers propagate to the run's handlers (console and the run's log) instead of adding their own.
logging.getLogger().addHandler(logging.NullHandler())

import lesion.eda.run  # noqa: E402, F401  (the imports every run would otherwise repeat)
import lesion.evaluate.run  # noqa: E402, F401
import lesion.stack.run  # noqa: E402, F401
import lesion.summary  # noqa: E402, F401
import lesion.train.run  # noqa: E402, F401


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Reap ``pid``; past ``timeout`` seconds kill its process group. Returns (returncode, timed_out)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), True
        time.sleep(0.02)


def serve() -> dict | None:
    """Answer requests until stdin closes (returns ``None``); in a forked child, return its request."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        returncode, timed_out = _wait(pid, request["timeout"])
        print(json.dumps({"returncode": returncode, "timed_out": timed_out}), flush=True)
    return None


def become(request: dict) -> None:
    """In the child: take the run's process group, directory, environment, streams and argv."""
    os.setpgid(0, 0)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        os.dup2(os.open(path, flags), fd)
    sys.argv = list(request["argv"])
    sys.path[0] = os.getcwd() if request["module"] else os.path.dirname(os.path.abspath(sys.argv[0]))


if __name__ == "__main__":
    job = serve()
    if job is not None:
        become(job)
        if job["module"]:
            sys.modules.pop(job["module"], None)  # `python -m` runs a module that was not imported yet
            runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(job["argv"][0], run_name="__main__")
