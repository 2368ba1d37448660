"""The process's resources at site scale (issue 11): its file limit,
raised as twistd starts, and the cyclic collector, told to leave alone what
start-up made.

Every SMTP or POP3 session is a socket, every printer keeps its seen index
open (two SQLite connections, about five descriptors) and a send in flight
is one more socket.  systemd and most shells start a process with a soft
``RLIMIT_NOFILE`` of 1,024 and a much higher hard limit; 500 printers alone
need about 2,500.  A process may raise its own soft limit up to the hard
one without privilege, so the appliance does that at start, to what its
configuration needs (``max_sessions`` twice, for SMTP and POP3, plus the
printers), and says in its log when even the hard limit is too low: then
``accept`` fails with EMFILE long before ``max_sessions`` is reached, and
the 421 the sender should get never comes.

The collector: a full collection walks every tracked object, and at 500
printers start-up leaves a few hundred thousand of them (configuration,
services, spools, Twisted's own) that live as long as the process.
bench/scale.py measured full collections of up to a second in the reactor
thread, 14 in 100 s, while 1,000 sessions were open: they were the probe's
p99.  Once every printer has started, :func:`freeze_start_up` collects once
and moves what is left into the permanent generation (``gc.freeze``), which
no later collection walks, and makes full collections rarer
(``GC_YOUNG_PER_FULL``): with start-up frozen, Python's own rule ran one
every few seconds.
"""

from __future__ import annotations

import gc
import resource
from typing import Callable

from twisted.logger import Logger

from phaserlink.limits import FDS_BASE, FDS_PER_PRINTER, GC_YOUNG_PER_FULL

log = Logger()


def needed_files(max_sessions: int, printers: int) -> int:
    """Descriptors a configuration needs at its busiest (SMTP and POP3
    each up to ``max_sessions``)."""
    return FDS_BASE + 2 * max_sessions + FDS_PER_PRINTER * printers


def raise_file_limit(need: int, *, getrlimit: Callable = resource.getrlimit,
                     setrlimit: Callable = resource.setrlimit) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to *need* (never above the hard
    limit, never lower than it was); return (old soft, new soft)."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    unlimited = hard == resource.RLIM_INFINITY
    target = need if unlimited else min(need, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("file limit raised from {old} to {new} open files (the configuration needs about {need})",
                 old=soft, new=target, need=need)
        soft_new = target
    else:
        soft_new = soft
    if not unlimited and hard < need:
        log.warn("file limit: the hard limit is {hard} open files but max_sessions and the printers need about "
                 "{need}; sessions beyond it fail to connect instead of getting 421 (raise LimitNOFILE= in the "
                 "systemd unit, or ulimit -Hn)", hard=hard, need=need)
    return soft, soft_new


def freeze_start_up() -> int:
    """Collect what start-up left as garbage, then freeze the rest out of
    the collector's sight; return how many objects were frozen."""
    gc.collect()
    gc.freeze()
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, max(full, GC_YOUNG_PER_FULL))
    frozen = gc.get_freeze_count()
    log.info("start-up done: {n} long-lived objects moved out of the collector's walks", n=frozen)
    return frozen
