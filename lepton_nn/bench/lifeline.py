"""Child processes of a benchmark end with it.

A benchmark's workers (one per engine) and helper processes (a server, a reader) read their
parent's requests, but while one is busy in a long round it does not read, so a parent
killed (``kill -9``, a CI timeout, the OOM killer) or interrupted would leave it running
for minutes, loading the cores the next run measures. Two ways, each checked against the
parent's pid that the parent puts in the child's environment (``LEPTON_PARENT_PID``, see
:func:`child_env`), so a parent already gone when the child starts is caught too:

- in a Python child of ours, :func:`die_with_parent` at its start: on Linux the kernel sends
  it SIGKILL when the parent dies (``prctl(PR_SET_PDEATHSIG)``, through ctypes; it fires when
  the parent *thread* that started the child ends, so start children from a thread that
  outlives them, such as the main one); everywhere a daemon thread also checks
  ``os.getppid()`` twice a second and ends the process once it was re-parented;
- any other command runs through :func:`wrap`: ``python -m lepton_nn.bench.lifeline CMD...``
  sets the same signal on Linux and then becomes ``CMD`` (``exec`` keeps the setting).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

ENV = "LEPTON_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 0.5


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) naming this process as the parent."""
    out = dict(os.environ if env is None else env)
    out[ENV] = str(os.getpid())
    return out


def _parent() -> int | None:
    try:
        return int(os.environ.get(ENV, ""))
    except ValueError:
        return None


def kill_on_parent_death() -> bool:
    """Linux: ask the kernel for SIGKILL when the parent dies (kept across ``exec``).
    Returns whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """End this process when the parent named in ``LEPTON_PARENT_PID`` ends (module
    docstring). Without that variable (started by hand): nothing."""
    parent = _parent()
    if parent is None:
        return
    kill_on_parent_death()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(POLL_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="lepton-lifeline", daemon=True).start()


def wrap(cmd: list[str]) -> list[str]:
    """``cmd`` run so that it dies with this process (start it with :func:`child_env`)."""
    return [sys.executable, "-m", "lepton_nn.bench.lifeline", *cmd]


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m lepton_nn.bench.lifeline CMD [ARGS...]", file=sys.stderr)
        return 2
    parent = _parent()
    if parent is not None:
        kill_on_parent_death()
        if os.getppid() != parent:
            return 1
    os.execvp(argv[0], argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
