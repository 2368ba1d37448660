"""How often a raw 9100 printer that resets the connection right after
reading the whole job is still sent the job again (docs/outputs.md, "What
TCP cannot tell", point 2).

The printer side reads to our FIN and closes with SO_LINGER 0 after
``--pause`` seconds; the sender then asks the kernel, as
``phaserlink.printer.output.raw_socket`` does, how many bytes were never
acknowledged.  A job with any is sent again (printed twice); one with none
is delivered.  Loopback only, so it measures the Linux receiver's delayed
ACK, not a real printer's:

    python3 bench/raw9100_reset_window.py --tries 50
    python3 bench/raw9100_reset_window.py --tries 50 --pause 0.05
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time

from phaserlink.printer.output.raw_socket import unacknowledged_bytes

SIZES = (1_000, 100_000, 3_000_000, 30_000_000)


def printer(listener: socket.socket, pause: float) -> None:
    conn, _ = listener.accept()
    while conn.recv(65536):
        pass
    if pause:
        time.sleep(pause)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def one(size: int, pause: float) -> int | None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    thread = threading.Thread(target=printer, args=(listener, pause))
    thread.start()
    sender = socket.create_connection(listener.getsockname())
    try:
        sender.sendall(b"x" * size)
        sender.shutdown(socket.SHUT_WR)
        try:
            sender.recv(1)
        except OSError:
            pass  # the reset
        thread.join()
        return unacknowledged_bytes(sender, size)
    finally:
        sender.close()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds the printer waits before the reset")
    args = parser.parse_args()
    print(f"printer resets {args.pause * 1000:g} ms after reading to EOF; {args.tries} jobs per size")
    for size in SIZES:
        results = [one(size, args.pause) for _ in range(args.tries)]
        again = sum(1 for r in results if r != 0)
        worst = max((r for r in results if r), default=0)
        print(f"{size:>11,} bytes: sent again {again:>3}/{args.tries}  (most unacknowledged: {worst:,} bytes)")


if __name__ == "__main__":
    main()
