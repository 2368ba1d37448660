"""Issue 7 item 4, SMTP side: no AUTH in clear unless the configuration says
``none``.  A small SMTP server on a real socket offers AUTH PLAIN LOGIN but
no STARTTLS (a misconfigured or downgraded relay) and records every line it
received.  Clients: ``phaserlink send`` (subprocess, as a user runs it) and
the appliance's outbound queue with ``smarthost_user`` (real twistd)."""

from __future__ import annotations

import base64
import socket
import threading

import pytest

from support.e2e import phaserlink, user_env

PASSWORD = "smtp secret, never in clear"
PS = b"%!PS-Adobe-3.0\n72 700 moveto (policy) show\nshowpage\n"


class PlainAuthServer:
    """ESMTP with AUTH and without STARTTLS; accepts every message."""

    __test__ = False

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.lines: list[bytes] = []
        self.messages: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def received(self) -> bytes:
        with self._lock:
            return b"".join(self.lines)

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        try:
            f.write(b"220 plain.test ESMTP\r\n")
            f.flush()
            for line in f:
                with self._lock:
                    self.lines.append(line)
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"EHLO":
                    f.write(b"250-plain.test\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10000000\r\n")
                elif verb == b"AUTH":
                    f.write(b"235 2.7.0 ok\r\n")
                elif verb == b"DATA":
                    f.write(b"354 go\r\n")
                    f.flush()
                    body = b""
                    for data in f:
                        if data == b".\r\n":
                            break
                        body += data
                    with self._lock:
                        self.messages.append(body)
                    f.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    f.write(b"221 bye\r\n")
                    f.flush()
                    return
                else:
                    f.write(b"250 ok\r\n")
                f.flush()
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture
def server():
    s = PlainAuthServer()
    yield s
    s.close()


def no_auth_sent(server: PlainAuthServer) -> bool:
    sent = server.received()
    token = base64.b64encode(b"\0user\0" + PASSWORD.encode())
    return b"AUTH" not in sent and token not in sent and PASSWORD.encode() not in sent


@pytest.fixture
def home(tmp_path):
    """A fresh user whose password (PHASERLINK_PASSWORD) is PASSWORD."""
    return dict(user_env(tmp_path / "home"), PHASERLINK_PASSWORD=PASSWORD)


def test_phaserlink_send_sends_no_auth_without_starttls(server, home, tmp_path):
    job = tmp_path / "job.ps"
    job.write_bytes(PS)
    common = ("send", str(job), "--to", "lp@printer.test", "--from", "me@example.com", "-q",
              "--server", f"127.0.0.1:{server.port}", "--user", "user")
    out = phaserlink(home, *common)
    assert out.returncode == 75, out.stdout + out.stderr
    assert (f"smtp://127.0.0.1:{server.port} does not offer STARTTLS; not sending the password in clear "
            "(set --tls = none to allow it)") in out.stderr
    assert server.connections >= 1 and no_auth_sent(server)
    assert server.messages == []

    required = phaserlink(home, *common, "--tls", "required")
    assert required.returncode == 75 and "STARTTLS" in required.stderr
    assert no_auth_sent(server) and server.messages == []

    allowed = phaserlink(home, *common, "--tls", "none")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert b"AUTH PLAIN " + base64.b64encode(b"\0user\0" + PASSWORD.encode()) in server.received()
    assert len(server.messages) == 1


def test_smarthost_user_gets_no_auth_without_starttls_and_the_mail_stays_queued(appliance, server, tmp_path):
    """The appliance's status mail goes to a smarthost with smarthost_user and
    the default smarthost_tls: no AUTH, the reason in the log, retried."""
    from test_printer_appliance import job_mail, printed_files, printer_section, send

    pwfile = tmp_path / "smarthost.password"
    pwfile.write_text(PASSWORD + "\n")
    out = tmp_path / "printed"
    appliance.appliance_extra = (f"smarthost = 127.0.0.1:{server.port}\nsmarthost_user = user\n"
                                 f"smarthost_password_file = {pwfile}\nqueue_retry_min = 1s\n")
    appliance.sections = printer_section("demo", f"file:{out}", notify="printed")
    appliance.start()
    send(appliance, job_mail())
    appliance.wait_for(lambda: printed_files(out), what="the print")
    reason = "does not offer STARTTLS; not sending the password in clear"
    appliance.wait_for(lambda: appliance.log().count(reason) >= 2, timeout=15,
                       what="two refused attempts in the log")
    assert server.connections >= 2 and no_auth_sent(server)
    assert server.messages == []
    queued = [p for p in (appliance.spool / "queue").rglob("*") if p.is_file()]
    assert queued, "the status mail left the queue without being delivered"
