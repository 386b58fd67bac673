"""One writer per run folder, tested with real processes: a second `drivemtl train` on the folder
a first one is writing is refused with the holder's PID, and the lock of a killed run is gone
(the kernel drops it with the process), so a resume is never blocked by a stale lock file.
Non-zero ranks of a distributed run take no lock: the run's launcher holds it for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_fixtures import make_config

from drivemtl.config.loader import dump_config
from drivemtl.engine.run_lock import (
    LOCK_FILE,
    RunLockedError,
    acquire_run_lock,
    release_run_lock,
)

DRIVEMTL = str(Path(sys.executable).parent / "drivemtl")


def long_run(tiny_data: Path, tmp_path: Path) -> Path:
    stages = [{"name": "long", "steps": 100000, "batch_size": 2, "optimizer": {"lr": 1e-3}}]
    path = tmp_path / "long.yaml"
    dump_config(make_config(tiny_data, stages), path)
    return path


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 400.0) -> None:
    start = time.monotonic()
    while not path.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_writer_is_refused_and_a_dead_holder_blocks_nothing(
    tiny_data: Path, tmp_path: Path
) -> None:
    config, out = long_run(tiny_data, tmp_path), tmp_path / "run"
    first = subprocess.Popen(
        [DRIVEMTL, "train", str(config), "--out", str(out), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(out / "stages" / "00-long" / "checkpoints" / "last.ckpt", first)
        second = subprocess.run(
            [DRIVEMTL, "train", str(config), "--out", str(out), "--resume", "--no-progress"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert second.returncode == 2
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert f"being written by another run (pid {first.pid} " in message
        with pytest.raises(RunLockedError, match=f"pid {first.pid}"):
            acquire_run_lock(out)  # this process is refused too
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert f"pid {first.pid}" in (out / LOCK_FILE).read_text()  # the stale file is still there
    assert acquire_run_lock(out) == (out / LOCK_FILE).resolve()  # ...and blocks nothing
    assert f"pid {os.getpid()}" in (out / LOCK_FILE).read_text()
    release_run_lock(out)


def test_other_ranks_of_a_run_take_no_lock(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path;"
         "from drivemtl.engine.run_lock import acquire_run_lock;"
         f"acquire_run_lock(Path({str(out)!r})); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError):
            acquire_run_lock(out)
        monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP worker Lightning starts for this run
        assert acquire_run_lock(out) is None
    finally:
        holder.kill()
        holder.wait()
