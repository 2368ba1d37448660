"""The POP3 store in the real appliance (``twistd -n phaserlink``), pulled by
real clients: fetchmail over STLS verifying the test CA, and Python's poplib."""

from __future__ import annotations

import hashlib
import poplib
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest

from support.appliance import pull_printer
from support.fetchmail import Fetchmail

pytestmark = pytest.mark.peer

MESSAGES = [
    b"From: alice@example.org\nTo: pull@phaserlink.test\nSubject: first\nMessage-ID: <1@example.org>\n\n"
    b"%!PS-Adobe-3.0\n.\n..two dots\n.tail\nshowpage\n",
    b"From: bob@example.org\nTo: pull@phaserlink.test\nSubject: second\nMessage-ID: <2@example.org>\n\n"
    + b"line of text\n" * 2000,
]


def dotted_message() -> bytes:
    """A body with a "." line at byte 16384 and at the 64 KiB read size."""
    data = bytearray(b"From: carol@example.org\nSubject: dots\nMessage-ID: <3@example.org>\n\n")
    for offset in (16384, 65536, 131071):
        while offset - len(data) > 76:  # ordinary 76-octet lines (RFC 5322 limits lines)
            data.extend(b"x" * 75 + b"\n")
        data.extend(b"y" * (offset - len(data) - 1) + b"\n")
        data.extend(b".\n")
    data.extend(b"end\n")
    assert data[16384:16386] == b".\n"
    return bytes(data)


def put(mailbox: Path, data: bytes, name: str) -> str:
    """Deliver like the appliance does: tmp/, then link into new/ (LF on disk)."""
    for sub in ("tmp", "new", "cur"):
        (mailbox / sub).mkdir(parents=True, exist_ok=True)
    lines = data.count(b"\n")
    final = f"{name},S={len(data)},W={len(data) + lines}"
    tmp = mailbox / "tmp" / name
    tmp.write_bytes(data)
    tmp.rename(mailbox / "new" / final)
    return name


def crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


@pytest.fixture
def pull(appliance, test_ca):
    cert = test_ca.issue()
    appliance.sections = pull_printer()
    appliance.appliance_extra = f"""
        tls_certificate = {cert.certificate}
        tls_key = {cert.key}
    """
    appliance.mailbox = appliance.spool / "mail" / "pull"
    appliance.ca = cert.ca
    return appliance


def stls_client(app) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", app.pop3_port, timeout=30)
    assert "STLS" in client.capa()
    client.stls(ssl.create_default_context(cafile=str(app.ca)))
    return client


def stls_login(app) -> poplib.POP3:
    """A client over STLS (stls_client), logged in to the mailbox pull."""
    client = stls_client(app)
    client.user("pull")
    client.pass_("pull")
    return client


def test_fetchmail_pulls_over_stls_and_deletes(pull, tmp_path):
    for i, data in enumerate(MESSAGES + [dotted_message()]):
        put(pull.mailbox, data, f"170000000{i}.M1P1Q{i}.test")
    pull.start()
    fetchmail = Fetchmail(tmp_path / "fm", pull.pop3_port, pull.ca)
    result = fetchmail.run()
    assert result.returncode == 0, result.output + pull.log()[-3000:]
    assert "STLS" in result.output or "TLS" in result.output
    assert result.messages == MESSAGES + [dotted_message()], result.output
    assert list((pull.mailbox / "new").iterdir()) == []
    # nothing left: a second run finds no mail (fetchmail exit 1 = no mail)
    again = fetchmail.run()
    assert again.returncode == 1 and again.messages == [], again.output


def test_fetchmail_uidl_keeps_track_across_sessions(pull, tmp_path):
    put(pull.mailbox, MESSAGES[0], "1700000000.M1P1Q1.test")
    put(pull.mailbox, MESSAGES[1], "1700000001.M1P1Q2.test")
    pull.start()
    fetchmail = Fetchmail(tmp_path / "fm", pull.pop3_port, pull.ca)
    first = fetchmail.run(keep=True, uidl=True)
    assert first.returncode == 0, first.output
    assert first.messages == MESSAGES
    second = fetchmail.run(keep=True, uidl=True)
    assert second.messages == [], second.output
    third_message = dotted_message()
    put(pull.mailbox, third_message, "1700000002.M1P1Q3.test")
    third = fetchmail.run(keep=True, uidl=True)
    assert third.messages == [third_message], third.output
    ids = fetchmail.idfile.read_text()
    for key in ("1700000000.M1P1Q1.test", "1700000001.M1P1Q2.test", "1700000002.M1P1Q3.test"):
        assert key in ids


def test_fetchmail_refuses_a_server_it_cannot_verify(pull, tmp_path, test_ca):
    """sslcertck with another CA: fetchmail must not log in (and fetch nothing)."""
    put(pull.mailbox, MESSAGES[0], "1700000000.M1P1Q1.test")
    pull.start()
    from support.ca import TestCA

    stranger = TestCA(tmp_path / "other-ca", name="Not The Test CA")
    fetchmail = Fetchmail(tmp_path / "fm", pull.pop3_port, stranger.ca_path)
    result = fetchmail.run()
    assert result.returncode != 0 and result.messages == []
    assert len(list((pull.mailbox / "new").iterdir())) == 1
    assert "opened mailbox" not in pull.log()


def test_poplib_over_stls(pull):
    keys = [put(pull.mailbox, data, f"170000000{i}.M1P1Q{i}.test") for i, data in enumerate(MESSAGES)]
    pull.start()
    client = stls_client(pull)
    assert "STLS" not in client.capa()
    assert client.user("pull").startswith(b"+OK")
    assert client.pass_("pull").startswith(b"+OK mailbox pull has 2 messages")
    assert client.stat() == (2, sum(len(crlf(m)) for m in MESSAGES))
    resp, listing, _ = client.list()
    assert listing == [f"{i + 1} {len(crlf(m))}".encode() for i, m in enumerate(MESSAGES)]
    resp, uidls, _ = client.uidl()
    assert uidls == [f"{i + 1} {k}".encode() for i, k in enumerate(keys)]
    resp, lines, octets = client.retr(1)
    assert b"\n".join(lines) + b"\n" == MESSAGES[0]
    resp, lines, _ = client.top(2, 3)
    assert b"\n".join(lines) == MESSAGES[1].split(b"\n\n")[0] + b"\n\n" + b"line of text\n" * 2 + b"line of text"
    client.dele(1)
    assert client.quit().startswith(b"+OK")
    remaining = [p.name.partition(",")[0] for p in (pull.mailbox / "new").iterdir()]
    assert remaining == [keys[1]]


def test_poplib_plaintext_login_on_loopback(pull):
    """The demo: a pull printer on 127.0.0.1 logs in without TLS."""
    put(pull.mailbox, MESSAGES[0], "1700000000.M1P1Q1.test")
    stale = pull.mailbox / "tmp" / "1699999999.M1P1Q9.crashed"
    stale.write_bytes(b"Subject: half a delivery\n\nhal")
    pull.start()
    assert not stale.exists()  # a crashed delivery's leftovers are gone at start
    client = poplib.POP3("127.0.0.1", pull.pop3_port, timeout=30)
    assert "USER" in client.capa()
    client.user("pull")
    client.pass_("pull")
    assert client.stat()[0] == 1
    client.quit()


def test_poplib_apop_with_shared_secret(appliance, tmp_path):
    secret = tmp_path / "apop.secret"
    secret.write_bytes(b"a-long-random-shared-secret\n")
    appliance.sections = f"""
        [printer:pull]
        sender_auth = none
        output = pull
        allowed_senders = *
        pop3_apop_secret_file = {secret}
    """
    put(appliance.spool / "mail" / "pull", MESSAGES[0], "1700000000.M1P1Q1.test")
    appliance.start()
    client = poplib.POP3("127.0.0.1", appliance.pop3_port, timeout=30)
    assert client.apop("pull", "a-long-random-shared-secret").startswith(b"+OK mailbox pull has 1")
    client.quit()
    other = poplib.POP3("127.0.0.1", appliance.pop3_port, timeout=30)
    start = time.monotonic()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        other.apop("pull", "wrong")
    assert time.monotonic() - start >= 1.5  # the anti-guessing delay


def test_retr_dot_line_at_16384_is_byte_identical(pull):
    data = dotted_message()
    put(pull.mailbox, data, "1700000000.M1P1Q1.test")
    pull.start()
    client = stls_login(pull)
    # poplib undoes the stuffing; compare the raw wire too.
    client._putcmd("RETR 1")
    raw = bytearray()
    first = client.file.readline()
    assert first == f"+OK {len(crlf(data))} octets\r\n".encode()
    while True:
        line = client.file.readline()
        raw.extend(line)
        if line == b".\r\n":
            break
    expected = crlf(data).replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert bytes(raw) == expected
    resp, lines, _ = client.retr(1)
    assert b"\n".join(lines) + b"\n" == data
    client.quit()


def test_second_session_gets_in_use(pull):
    pull.start()
    first = poplib.POP3("127.0.0.1", pull.pop3_port, timeout=30)
    first.user("pull")
    first.pass_("pull")
    second = poplib.POP3("127.0.0.1", pull.pop3_port, timeout=30)
    second.user("pull")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("pull")
    first.quit()
    second.user("pull")
    assert second.pass_("pull").startswith(b"+OK")
    second.quit()


def test_kill9_right_after_quit_keeps_the_deletion(pull):
    keys = [put(pull.mailbox, data, f"170000000{i}.M1P1Q{i}.test") for i, data in enumerate(MESSAGES)]
    pull.start()
    client = stls_login(pull)
    client.dele(1)
    assert client.quit().startswith(b"+OK")
    pull.kill9()
    pull.start()
    client = stls_client(pull)
    client.user("pull")
    assert client.pass_("pull").startswith(b"+OK mailbox pull has 1 messages")
    resp, uidls, _ = client.uidl()
    assert uidls == [f"1 {keys[1]}".encode()]
    resp, lines, _ = client.retr(1)
    assert b"\n".join(lines) + b"\n" == MESSAGES[1]
    client.quit()


def test_dropped_connection_then_kill9_deletes_nothing(pull):
    keys = [put(pull.mailbox, data, f"170000000{i}.M1P1Q{i}.test") for i, data in enumerate(MESSAGES)]
    pull.start()
    client = stls_login(pull)
    client.dele(1)
    client.dele(2)
    client.close()  # no QUIT
    pull.wait_for(lambda: "without QUIT: nothing deleted" in pull.log(), what="the server to see the drop")
    pull.kill9()
    pull.start()
    client = poplib.POP3("127.0.0.1", pull.pop3_port, timeout=30)
    client.user("pull")
    client.pass_("pull")
    resp, uidls, _ = client.uidl()
    assert uidls == [f"{i + 1} {k}".encode() for i, k in enumerate(keys)]
    client.quit()


def test_smtp_delivery_then_pop3_retrieval(pull):
    """Through the appliance's own SMTP server, out through POP3, same bytes."""
    pull.start()
    body = dotted_message()
    with smtplib.SMTP("127.0.0.1", pull.smtp_port, timeout=30) as smtp:
        refused = smtp.sendmail("carol@example.org", ["pull@phaserlink.test"], crlf(body))
        assert refused == {}
    client = stls_login(pull)
    count, _ = client.stat()
    assert count == 1
    resp, lines, _ = client.retr(1)
    got = b"\n".join(lines) + b"\n"
    # the SMTP server adds a trace header (Received:) on top: the rest is ours
    assert got.endswith(body)
    assert hashlib.sha256(got[len(got) - len(body):]).digest() == hashlib.sha256(body).digest()
    client.quit()


def test_stls_drops_commands_pipelined_in_plaintext(pull):
    """STARTTLS-injection (CVE-2011-0411 class) over a real TLS stack."""
    pull.start()
    raw = socket.create_connection(("127.0.0.1", pull.pop3_port), timeout=30)
    reader = raw.makefile("rb", buffering=0)
    assert reader.readline().startswith(b"+OK PhaserLink")
    raw.sendall(b"STLS\r\nUSER pull\r\nPASS pull\r\n")  # one segment
    assert reader.readline() == b"+OK begin TLS negotiation\r\n"
    context = ssl.create_default_context(cafile=str(pull.ca))
    tls = context.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(b"STAT\r\nPASS pull\r\nQUIT\r\n")
    replies = b""
    while not replies.endswith(b"signing off\r\n"):
        chunk = tls.recv(4096)
        assert chunk, replies
        replies += chunk
    assert replies == (
        b"-ERR STAT is not valid in the AUTHORIZATION state\r\n"
        b"-ERR send USER first\r\n"
        b"+OK PhaserLink POP3 server signing off\r\n"
    )
    tls.close()
