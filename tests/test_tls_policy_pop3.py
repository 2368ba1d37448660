"""Issue 7 item 4, POP3 side: no password in clear unless the configuration
says ``none``.  Against a real Dovecot without TLS (so it offers no STLS),
behind a proxy that records every byte the client sent: with the default
``opportunistic`` no USER and no PASS ever reach the server, the error says
why and which setting allows it, the retriever logs it and keeps the mail
for a later poll; with ``none`` it logs in; with ``required`` it refuses.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted

from phaserlink.net.pop3_client import POP3CleartextRefused, POP3TLSError, connect
from phaserlink.printer.remote_source import RemoteMailSource
from support.dovecot import Dovecot
from support.e2e import phaserlink, user_env
from support.mailbox_printer import remote_printer
from support.recording_proxy import RecordingProxy

pytestmark = pytest.mark.peer

PASSWORD = "do not leak me"
USERS = {"printer1": PASSWORD, "printer2": PASSWORD, "status": PASSWORD}


@pytest.fixture(scope="module")
def plain_dovecot():
    d = Dovecot()  # no certificate: ssl = no, no STLS in CAPA
    try:
        d.start(USERS)
        yield d
    finally:
        d.stop()


@pytest.fixture
def proxy(plain_dovecot):
    with RecordingProxy(plain_dovecot.port) as p:
        yield p


def reactor():
    from twisted.internet import reactor as r

    return r


def assert_no_login_sent(proxy: RecordingProxy) -> None:
    sent = proxy.received
    assert proxy.connections >= 1
    assert b"USER" not in sent and b"PASS" not in sent and PASSWORD.encode() not in sent, sent


@pytest_twisted.inlineCallbacks
def test_opportunistic_sends_no_user_or_pass_to_a_server_without_stls(proxy, plain_dovecot):
    with pytest.raises(POP3CleartextRefused) as e:
        yield connect(reactor(), "127.0.0.1", proxy.port, username="printer1", password=PASSWORD,
                      tls="opportunistic", timeout=10, tls_setting="mailbox_tls")
    assert str(e.value) == (f"pop3://127.0.0.1:{proxy.port} does not offer STLS; not sending the password "
                            "in clear (set mailbox_tls = none to allow it)")
    assert_no_login_sent(proxy)
    assert proxy.received.startswith(b"CAPA\r\n")  # then a polite QUIT (maybe still on its way)
    assert plain_dovecot.logins("printer1") == []


@pytest_twisted.inlineCallbacks
def test_none_logs_in_without_tls(proxy, plain_dovecot):
    session = yield connect(reactor(), "127.0.0.1", proxy.port, username="printer2", password=PASSWORD,
                            tls="none", timeout=10)
    assert not session.tls_active
    assert (yield session.list_uidl()) == []
    yield session.quit()
    assert b"PASS " + PASSWORD.encode() + b"\r\n" in proxy.received
    assert len(plain_dovecot.logins("printer2")) >= 1


@pytest_twisted.inlineCallbacks
def test_required_refuses_before_user(proxy):
    with pytest.raises(POP3TLSError) as e:
        yield connect(reactor(), "127.0.0.1", proxy.port, username="printer1", password=PASSWORD,
                      tls="required", timeout=10)
    assert "does not offer STLS" in str(e.value)
    assert_no_login_sent(proxy)


@pytest_twisted.inlineCallbacks
def test_remote_source_default_policy_names_mailbox_tls(proxy, tmp_path):
    """site.ini without mailbox_tls (default opportunistic)."""
    printer = remote_printer(tmp_path, f"pop3://printer1@127.0.0.1:{proxy.port}", password=PASSWORD)
    assert printer.mailbox.tls == "opportunistic"
    with pytest.raises(POP3CleartextRefused) as e:
        yield RemoteMailSource(printer, reactor(), timeout=10).open()
    assert "set mailbox_tls = none to allow it" in str(e.value)
    assert_no_login_sent(proxy)


def test_retriever_logs_the_refusal_keeps_the_mail_and_prints_once_allowed(appliance, plain_dovecot, tmp_path):
    """The real appliance polls a Dovecot without STLS with the default
    policy: every poll is refused (logged, with the reason), no password
    reaches Dovecot, the mail stays there; allowed with mailbox_tls = none,
    the same job prints once."""
    from test_printer_appliance import POSTSCRIPT, job_mail, printed_files, printer_section

    user = "printer1"
    password = tmp_path / "mailbox.password"
    password.write_text(PASSWORD + "\n")
    out = tmp_path / "printed"
    mail = bytes(job_mail(to="remote@phaserlink.test", Message_ID="<policy-1@example.com>"))
    plain_dovecot.deliver(user, mail)
    reason = "does not offer STLS; not sending the password in clear (set mailbox_tls = none to allow it)"
    with RecordingProxy(plain_dovecot.port) as proxy:
        section = dict(mailbox=f"pop3://{user}@127.0.0.1:{proxy.port}", mailbox_password_file=str(password),
                       poll_interval="1s")
        appliance.sections = printer_section("remote", f"file:{out}", **section)
        appliance.start()
        # The first refusal and at least one later poll, each logged.
        appliance.wait_for(lambda: appliance.log().count(reason) >= 2 and proxy.connections >= 2,
                           timeout=15, what="two refused polls in the log")
        assert_no_login_sent(proxy)
        assert printed_files(out) == []
        assert len(plain_dovecot.messages(user)) == 1  # the job waits at the server, not lost
        appliance.stop()

        appliance.sections = printer_section("remote", f"file:{out}", mailbox_tls="none", **section)
        appliance.start()
        [job] = appliance.wait_for(lambda: printed_files(out), timeout=20, what="the job, allowed in clear")
        assert job.read_bytes() == POSTSCRIPT
        appliance.wait_for(lambda: plain_dovecot.messages(user) == [], timeout=20, what="Dovecot emptied")
        assert b"PASS " + PASSWORD.encode() in proxy.received
        time.sleep(1.5)  # another poll: nothing more
        assert len(printed_files(out)) == 1


@pytest.fixture
def home(tmp_path):
    """A fresh user whose password (PHASERLINK_PASSWORD) is PASSWORD."""
    return dict(user_env(tmp_path / "home"), PHASERLINK_PASSWORD=PASSWORD)


def test_phaserlink_status_refuses_to_log_in_in_clear_and_says_why(proxy, plain_dovecot, home):
    """`phaserlink status` (and `send --wait`, which reads the same mailbox
    the same way) with the default [mailbox] tls."""
    assert phaserlink(home, "destinations", "set-mailbox", f"pop3://127.0.0.1:{proxy.port}",
                      "--username", "status").returncode == 0
    out = phaserlink(home, "status")
    assert out.returncode == 75, out.stdout + out.stderr
    assert (f"pop3://127.0.0.1:{proxy.port} does not offer STLS; not sending the password in clear "
            "(set [mailbox] tls = none to allow it)") in out.stderr
    assert_no_login_sent(proxy)
    assert plain_dovecot.logins("status") == []

    assert phaserlink(home, "destinations", "set-mailbox", f"pop3://127.0.0.1:{proxy.port}",
                      "--username", "status", "--tls", "none").returncode == 0
    out = phaserlink(home, "status")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no status mail" in out.stdout
    assert b"PASS " + PASSWORD.encode() in proxy.received


def test_send_wait_does_not_log_in_in_clear_and_stops_waiting(appliance, proxy, plain_dovecot, home, tmp_path):
    """`phaserlink send --wait`: the job goes out, the status mailbox
    without STLS gets no password, and the wait ends at once (asking again
    changes nothing until the configuration does) with exit 75."""
    from test_printer_appliance import POSTSCRIPT, printed_files, printer_section

    out_dir = tmp_path / "printed"
    appliance.sections = printer_section("demo", f"file:{out_dir}")
    appliance.start()
    assert phaserlink(home, "destinations", "set-mailbox", f"pop3://127.0.0.1:{proxy.port}",
                      "--username", "status").returncode == 0
    job = tmp_path / "job.ps"
    job.write_bytes(POSTSCRIPT)
    started = time.monotonic()
    out = phaserlink(home, "send", str(job), "--to", "demo@phaserlink.test", "--server",
                     f"127.0.0.1:{appliance.smtp_port}", "--from", "alice@example.com", "-q", "--wait",
                     "--wait-interval", "0.5", "--wait-timeout", "30")
    assert out.returncode == 75, out.stdout + out.stderr
    assert time.monotonic() - started < 20
    assert "does not offer STLS; not sending the password in clear (set [mailbox] tls = none to allow it)" \
        in out.stderr
    assert "not waiting for the status mail" in out.stderr
    assert_no_login_sent(proxy)
    [printed] = appliance.wait_for(lambda: printed_files(out_dir), what="the job")
    assert printed.read_bytes() == POSTSCRIPT
