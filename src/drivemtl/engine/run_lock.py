"""One writer per run folder: an exclusive advisory lock held by the run's launching process.

`OUT/.lock` is locked with `fcntl.flock` for as long as the run's process lives and carries the
holder's PID and host. The kernel drops the lock when that process exits, however it dies, so a
lock file left by a killed run never blocks a resume. Processes that Lightning starts for the
other ranks of the same run (`RANK` / `LOCAL_RANK` / `NODE_RANK` > 0) take no lock: only the
run's own processes write, and the launcher holds it for them.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from drivemtl.errors import DriveMTLError

LOCK_FILE = ".lock"
_HELD: dict[Path, IO[str]] = {}


class RunLockedError(DriveMTLError):
    """Another process is writing the run folder."""


def is_secondary_rank() -> bool:
    """Whether this process is a non-zero rank started for a distributed run."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def acquire_run_lock(out_dir: Path) -> Path | None:
    """Lock `out_dir` for this process (idempotent); RunLockedError naming the holder's PID when
    another process holds it. Secondary ranks take no lock (None)."""
    if is_secondary_rank():
        return None
    out_dir = Path(out_dir).resolve()
    if out_dir in _HELD:
        return out_dir / LOCK_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "an unknown process"
        handle.close()
        raise RunLockedError(
            f"{out_dir} is being written by another run ({holder}); wait for it to finish, "
            f"stop it, or choose another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _HELD[out_dir] = handle
    return path


def release_run_lock(out_dir: Path) -> None:
    """Release this process's lock of `out_dir` (no-op when it holds none)."""
    handle = _HELD.pop(Path(out_dir).resolve(), None)
    if handle is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
