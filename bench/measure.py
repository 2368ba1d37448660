"""Peak memory of a process, as the kernel counts it (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def vm_hwm_kb(pid: int) -> int:
    """The resident-set high-water mark (VmHWM) of *pid*, in KiB; 0 for a
    process that has exited (Postfix's daemons come and go while we sum)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def reset_hwm(pid: int) -> None:
    """Start a new high-water mark (writing 5 to clear_refs resets VmHWM)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
