"""The local worker processes of a study: where they come from, and that they never outlive their driver.

Kept free of torch so that the command line can start the fork server before it imports torch itself: the fork
server's imports (``PRELOAD``) and the driver's then run side by side on two cores, and every worker is forked
ready, instead of each spawned worker importing torch and the proxies again (~1.5 s a worker, measured by
``make perf``'s whole-process comparison).
"""

from __future__ import annotations

import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import current_process, get_context


def _die_with(parent: int, env: dict | None = None) -> None:
    """Worker initializer: end this process when the driver ``parent`` dies, however it dies (SIGKILL included);
    first take the driver's environment as it was when the pool started (``env``: $PROXYBENCH_DATA, the plugin
    files of $PROXYBENCH_PLUGINS, ... set after the fork server started).

    Workers are forked by the fork server (``worker_context``), which exits when the driver does. On Linux the
    kernel sends SIGKILL to the worker when the fork server exits (``PR_SET_PDEATHSIG``); everywhere a daemon
    thread also checks once a second that the driver is still alive and that the worker's parent is still the
    one it was forked by (an orphan is re-parented), and exits if not."""
    import ctypes
    import signal
    import threading

    if env:
        os.environ.update(env)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    forked_by = os.getppid()

    def gone() -> bool:
        if os.getppid() != forked_by:
            return True
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's (never ours): keep going
            return False
        return False

    if gone():  # the driver (or the fork server) died before the lines above ran
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if gone():
                os._exit(1)

    threading.Thread(target=watch, name="proxybench-parent-watch", daemon=True).start()


# what the fork server imports once, so that every worker it forks starts with them (torch, the proxies, the runner)
PRELOAD = ["proxybench.runner"]


def worker_context():
    """Worker processes come from multiprocessing's fork server where the platform has one (Linux, macOS): a clean
    single-threaded process started once per driver that imports ``PRELOAD`` (torch: seconds), then forks each
    worker ready to run; elsewhere spawned processes, each importing everything itself."""
    from multiprocessing import get_all_start_methods

    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server() -> None:
    """Start the fork server now (it imports torch and the proxies in its own process, beside this one's imports),
    so that the first pool's workers fork at once. The environment it and its workers start with is this
    process's now (``worker_pool`` passes later changes on)."""
    ctx = worker_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


_MAIN_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


def main_guard_hint() -> str | None:
    """What to add when the main module is a script file without an ``if __name__ == "__main__":`` guard (workers,
    spawned or from the fork server, re-import the main script, so one without a guard starts workers of its own and
    they die), else None."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return None  # interactive, -c, a notebook: the workers import nothing of it
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            if _MAIN_GUARD.search(f.read()):
                return None
    except OSError:
        return None
    return (f"worker processes could not start: every worker (spawned, or started by the fork server) re-imports "
            f"the main script {path}, which has "
            "no `if __name__ == \"__main__\":` guard, so each worker would start workers of its own. Put the code "
            "that runs studies under one (def main(): ...  then  if __name__ == \"__main__\": main()), or pass "
            "executor=\"inprocess\"")


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes (``worker_context``) that never outlive their driver (see ``_die_with``).

    Called while a worker is still importing the main script (a script without a main guard), it ends that
    worker with one line on stderr; the driver's executor then raises :func:`main_guard_hint`'s message."""
    if getattr(current_process(), "_inheriting", False):  # multiprocessing's own "still bootstrapping" flag
        sys.stderr.write("proxybench: a worker process stopped: the main script it re-imports starts worker "
                         "processes at import (no `if __name__ == \"__main__\":` guard)\n")
        raise SystemExit(1)
    return ProcessPoolExecutor(workers, mp_context=worker_context(), initializer=_die_with,
                               initargs=(os.getpid(), dict(os.environ)))
