"""Benchmark child processes die with their parent (lepton_nn.bench.lifeline), tested on real
processes: a parent that started them is killed with SIGKILL (no cleanup runs) while they
are busy, and they must be gone within seconds, not after their round."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lepton_nn.bench import lifeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX process semantics")

# The parent: starts one child in the given way, makes it busy, prints its pid, waits.
_PARENT = """
import json, os, subprocess, sys, time
sys.path.insert(0, {root!r})
mode = sys.argv[1]
if mode == "worker":  # a real benchmark worker, in the middle of a very long round
    from lepton_nn.bench.worker import Worker
    w = Worker("numpy", 1, sys.argv[2])
    w.receive(timeout=300)
    case = w.ask(op="setup", workload="W1", timeout=300)["cases"][0]["id"]
    w.proc.stdin.write(json.dumps({{"op": "round", "case": case, "n": 10**9}}) + "\\n")
    w.proc.stdin.flush()
    pid = w.proc.pid
else:
    from lepton_nn.bench.lifeline import child_env, wrap
    if mode == "wrap":  # any command, through the launcher
        cmd = wrap([sys.executable, "-c", "import time; time.sleep(300)"])
    else:  # a Python child with only the polling thread (no prctl: as off Linux)
        code = ("import sys, time; sys.path.insert(0, {root!r}); "
                "import lepton_nn.bench.lifeline as l; l.kill_on_parent_death = lambda: False; "
                "l.die_with_parent(); print('ready', flush=True); time.sleep(300)")
        cmd = [sys.executable, "-c", code]
    p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, text=True)
    if mode == "poll":
        assert p.stdout.readline().strip() == "ready"
    pid = p.pid
print(pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.parametrize("mode", ["worker", "wrap", "poll"])
def test_children_die_when_the_parent_is_killed(tmp_path, mode):
    if mode != "poll" and not sys.platform.startswith("linux"):
        pytest.skip("the kernel's parent-death signal is Linux only")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT.format(root=ROOT), mode, str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    child = None
    try:
        child = int(parent.stdout.readline())
        time.sleep(1.0)  # the worker is inside its round, the others asleep
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), f"{mode} child {child} outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_ends_at_once():
    """Started for a parent that is not its parent any more (it died first, the child was
    re-parented): the child ends before doing anything."""
    code = (
        "from lepton_nn.bench.lifeline import die_with_parent\n"
        "die_with_parent()\n"
        "print('still here')\n"
    )
    env = {**os.environ, lifeline.ENV: str(os.getpid() + 10**6)}
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "still here" not in out.stdout
    # without the variable (a worker started by hand) nothing changes
    env.pop(lifeline.ENV)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)  # fmt: skip
    assert out.returncode == 0 and "still here" in out.stdout


def test_the_launcher_runs_the_command_in_its_own_process():
    """``wrap(cmd)`` becomes ``cmd`` (exec: same pid, its exit status, its output)."""
    cmd = lifeline.wrap([sys.executable, "-c", "import os, sys; print(os.getpid()); sys.exit(3)"])
    env = lifeline.child_env()
    env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 3 and int(out) == p.pid
