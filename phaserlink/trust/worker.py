"""A verifier worker process: ``python -m phaserlink.trust.worker SETTINGS``.

Started by :class:`phaserlink.trust.verifier.ProcessVerifier` with
``reactor.spawnProcess``.  Why a process: dkimpy canonicalizes and checks
RSA signatures in Python, about a millisecond per message; in a thread of
the SMTP process that millisecond holds the GIL the reactor needs for every
other session (issue 8's benchmark: 0.72x of the unverified intake rate).
In its own process it runs on the other core.

The pipe speaks frames: a 4-byte big-endian length and a pickle of
``(request_id, operation, args)``; the answer is ``(request_id, ok,
result-or-error-text)``.  Pickle because both ends are this same package
and the pipe is private to the two processes (nothing from the network is
unpickled: only our own dataclasses and the file paths the parent wrote).
The operations are :data:`phaserlink.trust.stamp.OPERATIONS`; the message
itself is read from its file, never sent through the pipe.

Requests run in a small thread pool of this process, so one message waiting
for a slow DNS server does not delay the others.  The worker exits when its
standard input closes (the appliance stopping, or dying: nothing is left
behind), and ignores SIGINT, which a terminal sends to the whole process
group: the appliance ends it in order.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from phaserlink.limits import LOOKUP_THREADS

HEADER = struct.Struct(">I")


def settings_arg(dns_servers, timeout: float) -> str:
    """The worker's one argument: its resolver's servers and time-out, as JSON."""
    return json.dumps({"dns_servers": [list(s) for s in dns_servers], "timeout": timeout})


def frame(obj) -> bytes:
    payload = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def _read_exactly(stream, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


#: Set to a directory, each worker writes a cProfile of its request threads
#: there when it exits (``verifier-PID.prof``): the benchmark shows it.
PROFILE_ENV = "PHASERLINK_VERIFIER_PROFILE"


class _Profiles:
    """One cProfile per request thread, merged into one file at exit."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self.local = threading.local()
        self.all: list = []
        self.lock = threading.Lock()

    def profiler(self):
        if not self.directory:
            return None
        p = getattr(self.local, "profiler", None)
        if p is None:
            import cProfile

            p = self.local.profiler = cProfile.Profile()
            with self.lock:
                self.all.append(p)
        return p

    def save(self) -> None:
        if not self.directory or not self.all:
            return
        import pstats

        stats = pstats.Stats(self.all[0])
        for p in self.all[1:]:
            stats.add(p)
        stats.dump_stats(os.path.join(self.directory, f"verifier-{os.getpid()}.prof"))


def serve(settings: dict, stdin, stdout) -> None:
    # Here, not at the top: the appliance imports this module for frame()
    # and settings_arg(), and must not load the verification libraries
    # (dnspython, pyspf, dkimpy, authheaders) that only the worker runs.
    from phaserlink.trust.dns import Resolver
    from phaserlink.trust.stamp import OPERATIONS

    resolver = Resolver([tuple(s) for s in settings.get("dns_servers", ())], settings["timeout"])
    lock = threading.Lock()
    profiles = _Profiles(os.environ.get(PROFILE_ENV))

    def run(request_id: int, operation: str, args: tuple) -> None:
        profiler = profiles.profiler()
        if profiler is not None:
            profiler.enable()
        try:
            answer = (request_id, True, OPERATIONS[operation](resolver, *args))
        except Exception as e:  # the parent turns it into a 451, and logs it
            answer = (request_id, False, f"{type(e).__name__}: {e}")
        data = frame(answer)
        if profiler is not None:
            profiler.disable()
        with lock:
            stdout.write(data)
            stdout.flush()

    with ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="phaserlink-verifier") as pool:
        while True:
            header = _read_exactly(stdin, HEADER.size)
            if header is None:
                break
            body = _read_exactly(stdin, HEADER.unpack(header)[0])
            if body is None:
                break
            request_id, operation, args = pickle.loads(body)
            pool.submit(run, request_id, operation, args)
    profiles.save()


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(argv) != 2:
        print("usage: python -m phaserlink.trust.worker SETTINGS_JSON", file=sys.stderr)
        return 2
    # The frames get a private copy of fd 1; anything a library prints goes
    # to standard error (the appliance's log) instead of into the stream.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(json.loads(argv[1]), sys.stdin.buffer, frames)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
