"""File locks that die with their holder: `fcntl.flock` locks, released by the kernel when the process exits.

`waiting_lock` serialises builders of a shared file or folder (every caller waits its turn). `RunFolderLock` marks a
run folder as being written by one launch: a process of another launch that finds a live holder is refused with
the holder's PID and host, and the lock files of dead holders are taken over (removed), so no lock ever needs a
hand fix after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

WRITER_GLOB = ".writer.*.lock"


class RunFolderBusy(RuntimeError):
    """A live process of another launch is writing the run folder."""


@contextlib.contextmanager
def waiting_lock(path: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive lock on `path` (created, parents too), waiting while another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


class RunFolderLock:
    """This process's claim on a run folder, for launch `launch` (ranks of one torchrun launch share it).

    Each process holds its own `.writer.<host>.<pid>.lock` (JSON: pid, host, launch). On `acquire`, every other
    writer file is probed: one still locked by a process of another launch is a live writer (`RunFolderBusy`); one
    that can be locked belongs to a dead process and is removed.

    Args:
        folder (`str` or `os.PathLike`): the run folder (created).
        launch (`str`): the launch's token, equal on every rank of one launch.
    """

    def __init__(self, folder: str | os.PathLike, launch: str) -> None:
        self.folder = Path(folder)
        self.launch = launch
        self.host = socket.gethostname()
        self.path = self.folder / f".writer.{self.host}.{os.getpid()}.lock"
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Claims the folder.

        Raises:
            RunFolderBusy: another launch's live process holds a writer lock (names its PID and host).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        holder = json.dumps({"pid": os.getpid(), "host": self.host, "launch": self.launch}).encode()
        # Written and locked under a name no prober matches, then renamed: a prober never sees an unlocked or
        # empty writer file of a live process.
        descriptor, temporary = tempfile.mkstemp(dir=self.folder, prefix=".claim.", suffix=".tmp")
        os.write(descriptor, holder)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.replace(temporary, self.path)
        self._descriptor = descriptor
        try:
            for other in sorted(self.folder.glob(WRITER_GLOB)):
                if other != self.path:
                    self._probe(other)
        except BaseException:
            self.release()
            raise

    def _probe(self, other: Path) -> None:
        try:
            descriptor = os.open(other, os.O_RDWR)
        except FileNotFoundError:
            return  # its holder ended meanwhile
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = json.loads(other.read_bytes())
                except (OSError, ValueError):
                    holder = {}
                if holder.get("launch") != self.launch:
                    raise RunFolderBusy(
                        f"{self.folder} is being written by PID {holder.get('pid', '?')} on "
                        f"{holder.get('host', '?')} (another run, or a worker of a killed torchrun launch); "
                        f"wait for it to end or stop it, then run again"
                    ) from None
                return
            other.unlink(missing_ok=True)  # a dead holder's lock: taken over
        finally:
            os.close(descriptor)

    def release(self) -> None:
        """Gives the folder up (also done by the kernel if the process dies)."""
        if self._descriptor is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
