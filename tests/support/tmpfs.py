"""A small real file system that can be filled to ENOSPC, for fault injection.

A tmpfs mount (root only) of a few megabytes stands in for a full spool
disk: the kernel's own ENOSPC, at the exact write that crosses the limit,
not a mocked ``open``.  ``fill()`` takes the free space down to what a test
wants left, ``release()`` gives it back (the disk was cleaned up).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from support.peers import require_root

FILLER = ".filler"


class SmallDisk:
    def __init__(self, path: Path, size: str = "8m"):
        self.path = Path(path)
        self.size = size
        self.mounted = False

    def mount(self) -> "SmallDisk":
        require_root("mounting a tmpfs to fill it (ENOSPC tests)")
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
                       check=True)
        self.mounted = True
        return self

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Write a filler file until only about *leave* bytes are free."""
        filler = self.path / FILLER
        with open(filler, "ab") as f:
            block = b"\0" * 65536
            while self.free() > leave + len(block):
                try:
                    f.write(block)
                    f.flush()
                except OSError:
                    break
            while self.free() > leave:
                try:
                    f.write(b"\0" * 4096)
                    f.flush()
                except OSError:
                    break

    def release(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)
