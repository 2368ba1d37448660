"""RemoteMailSource end to end against a private Dovecot, configured the way
an administrator would: a site.ini with ``mailbox = pop3://...`` and a
password file."""

from __future__ import annotations

import pytest
import pytest_twisted
from zope.interface.verify import verifyObject

from phaserlink.net.pop3_client import POP3AuthError, POP3TLSError
from phaserlink.printer.interfaces import IMailSession, IMailSource, SourceMessage
from phaserlink.printer.remote_source import RemoteMailSource, read_password
from support.dovecot import Dovecot
from support.mailbox_printer import remote_printer

pytestmark = pytest.mark.peer

PASSWORD = "remote printer secret"


@pytest.fixture(scope="module")
def dovecot(test_ca):
    d = Dovecot(cert=test_ca.issue("localhost"))
    try:
        d.start({"printer1": PASSWORD, "printer2": PASSWORD, "printer3": PASSWORD})
        yield d
    finally:
        d.stop()


def printer_config(tmp_path, url: str, *, password: str = PASSWORD, extra: str = ""):
    """Printer ``remote`` on the mailbox at *url*; this module's Dovecot password unless told."""
    return remote_printer(tmp_path, url, password=password, extra=extra)


def reactor():
    from twisted.internet import reactor as r

    return r


def test_read_password_strips_only_the_line_end(tmp_path):
    p = tmp_path / "pw"
    p.write_bytes(b"  spaced secret \r\n")
    assert read_password(p) == "  spaced secret "


@pytest_twisted.inlineCallbacks
def test_open_list_retrieve_delete_close(dovecot, test_ca, tmp_path):
    printer = printer_config(
        tmp_path,
        f"pop3://printer1@127.0.0.1:{dovecot.port}",
        extra=f"mailbox_tls = required\nmailbox_ca = {test_ca.ca_path}\n",
    )
    first = b"From: alice@example.org\nSubject: job 1\n\n%!PS\n.\nshowpage\n"
    second = b"From: bob@example.org\nSubject: job 2\n\n%!PS\n..\nshowpage\n"
    dovecot.deliver("printer1", first)
    dovecot.deliver("printer1", second)

    source = RemoteMailSource(printer, reactor())
    assert verifyObject(IMailSource, source)
    assert source.description == f"pop3://printer1@127.0.0.1:{dovecot.port}"
    calls = []
    source.on_new_mail(lambda: calls.append(1))

    session = yield source.open()
    assert verifyObject(IMailSession, session)
    listing = yield session.list()
    assert all(isinstance(m, SourceMessage) for m in listing) and len(listing) == 2
    for m, want in zip(listing, (first, second)):
        path = tmp_path / f"{m.uidl}.eml"
        with open(path, "wb") as out:
            result = yield session.retrieve(m.uidl, out)
        assert result is None
        assert path.read_bytes() == want
    yield session.delete(listing[0].uidl)
    # Before close, Dovecot still has both.
    assert len(dovecot.messages("printer1")) == 2
    yield session.close()
    assert dovecot.messages("printer1") == [second]
    assert ", TLS," in dovecot.logins("printer1")[-1]
    assert calls == []


@pytest_twisted.inlineCallbacks
def test_abort_keeps_marked_messages(dovecot, test_ca, tmp_path):
    printer = printer_config(
        tmp_path, f"pop3://printer2@localhost:{dovecot.port}", extra=f"mailbox_ca = {test_ca.ca_path}\n"
    )
    dovecot.deliver("printer2", b"Subject: keep\n\nx\n")
    source = RemoteMailSource(printer, reactor())
    session = yield source.open()
    (m,) = yield session.list()
    yield session.delete(m.uidl)
    session.abort()
    assert dovecot.messages("printer2") == [b"Subject: keep\n\nx\n"]


@pytest_twisted.inlineCallbacks
def test_wrong_password_file(dovecot, test_ca, tmp_path):
    printer = printer_config(
        tmp_path, f"pop3://printer3@127.0.0.1:{dovecot.port}", password="nope",
        extra=f"mailbox_ca = {test_ca.ca_path}\n",
    )
    with pytest.raises(POP3AuthError):
        yield RemoteMailSource(printer, reactor()).open()


@pytest_twisted.inlineCallbacks
def test_unverifiable_server_is_refused(dovecot, tmp_path):
    # No mailbox_ca: the platform's trust store does not know the test CA.
    printer = printer_config(tmp_path, f"pop3://printer3@127.0.0.1:{dovecot.port}")
    with pytest.raises(POP3TLSError):
        yield RemoteMailSource(printer, reactor()).open()


@pytest_twisted.inlineCallbacks
def test_unreadable_password_file_fails_open_clearly(tmp_path):
    printer = printer_config(tmp_path, "pop3://printer1@127.0.0.1:1")
    printer.mailbox.password_file.unlink()
    with pytest.raises(POP3AuthError) as e:
        yield RemoteMailSource(printer, reactor()).open()
    assert "cannot read password file" in str(e.value)


@pytest_twisted.inlineCallbacks
def test_one_session_slot_goes_back_after_close_abort_and_a_refused_login(dovecot, test_ca, tmp_path):
    """[appliance] mailbox_sessions is one semaphore for every remote
    mailbox: each way a session ends must give its slot back, or after a
    few wrong passwords no printer would retrieve again."""
    from twisted.internet import defer

    slots = defer.DeferredSemaphore(1)
    good = printer_config(tmp_path, f"pop3://printer1@127.0.0.1:{dovecot.port}",
                          extra=f"mailbox_ca = {test_ca.ca_path}\n")
    source = RemoteMailSource(good, reactor(), sessions=slots)
    session = yield source.open()
    assert slots.tokens == 0
    waiting = source.open()  # no slot free: waits, does not connect
    assert not waiting.called
    yield session.close()
    second = yield waiting
    second.abort()
    assert slots.tokens == 1
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = printer_config(bad_dir, f"pop3://printer3@127.0.0.1:{dovecot.port}", password="nope",
                         extra=f"mailbox_ca = {test_ca.ca_path}\n")
    for _ in range(2):
        with pytest.raises(POP3AuthError):
            yield RemoteMailSource(bad, reactor(), sessions=slots).open()
    assert slots.tokens == 1
    held = yield source.open()
    stopped = RemoteMailSource(good, reactor(), sessions=slots)
    pending = stopped.open()
    stopped.stop()  # the retriever stops while waiting for a slot
    with pytest.raises(defer.CancelledError):
        yield pending
    yield held.close()
    assert slots.tokens == 1
