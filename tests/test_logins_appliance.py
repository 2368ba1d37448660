"""The login rules on the running appliance (twistd, TLS, loopback): wrong
AUTH passwords get their 535 only after the delay, and the attempt after
FAILURE_BURST failures from one address is refused and cut off, over SMTP
and over POP3 alike."""

from __future__ import annotations

import base64
import poplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from phaserlink.trust import logins
from support.appliance import password_hash, pull_printer


def read_reply(f) -> bytes:
    lines = []
    while True:
        line = f.readline()
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


def auth_plain(port: int, ca, user: str, password: str) -> tuple[bytes, float, bool]:
    """One session: EHLO, STARTTLS, EHLO, AUTH PLAIN.  Returns the AUTH reply,
    the seconds it took, and whether the server closed the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        f = sock.makefile("rb")
        assert read_reply(f).startswith(b"220 ")
        sock.sendall(b"EHLO attacker.test\r\n")
        assert b"STARTTLS" in read_reply(f)
        sock.sendall(b"STARTTLS\r\n")
        assert read_reply(f).startswith(b"220 ")
        tls = ssl.create_default_context(cafile=str(ca)).wrap_socket(sock, server_hostname="localhost")
        f = tls.makefile("rb")
        tls.sendall(b"EHLO attacker.test\r\n")
        assert b"AUTH PLAIN" in read_reply(f)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        start = time.monotonic()
        tls.sendall(f"AUTH PLAIN {token}\r\n".encode())
        reply = read_reply(f)
        elapsed = time.monotonic() - start
        closed = False
        if reply.startswith(b"421"):  # the server must hang up after it
            try:
                closed = f.read(1) == b""
            except (OSError, ssl.SSLError):
                closed = True
        return reply, elapsed, closed
    finally:
        sock.close()


@pytest.fixture
def app(appliance, test_ca):
    cert = test_ca.issue("localhost")
    appliance.appliance_extra = f"tls_certificate = {cert.certificate}\ntls_key = {cert.key}\n"
    appliance.sections = pull_printer() + f"[user:alice]\npassword = {password_hash('wonderland')}\n"
    appliance.ca = cert.ca
    return appliance.start()


def test_wrong_passwords_are_answered_late_and_a_flooding_address_is_cut_off(app):
    # FAILURE_BURST wrong passwords at once, one per session.
    with ThreadPoolExecutor(logins.FAILURE_BURST) as pool:
        results = list(pool.map(lambda _: auth_plain(app.smtp_port, app.ca, "alice", "guess"),
                                range(logins.FAILURE_BURST)))
    for reply, elapsed, _closed in results:
        assert reply == b"535 5.7.8 Error: authentication failed\r\n"
        assert elapsed >= logins.FAILURE_DELAY - 0.05
    # The next attempt from this address: refused without a check (even
    # with the right password), late as well, and the session is closed.
    reply, elapsed, closed = auth_plain(app.smtp_port, app.ca, "alice", "wonderland")
    assert reply.startswith(b"421 4.7.0 ") and b"too many failed logins from your address" in reply
    assert elapsed >= logins.FAILURE_DELAY - 0.05 and closed
    # POP3 counts in the same table: the address is refused there too.
    client = poplib.POP3("127.0.0.1", app.pop3_port, timeout=20)
    client.user("pull")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] too many failed logins"):
        client.pass_("pull")
    assert "refused without a check" in app.log()
