"""A printer's mail source on a remote POP3 server (``mailbox = pop3://...``).

This is the seed's "POP3 server attached to the printer" (Dovecot, say): the
retriever logs in every ``poll_interval``, lists, retrieves each message into
its spool, fsyncs, deletes, and QUITs (which is when the server commits the
deletions).  Nothing tells us when mail arrives there, so ``on_new_mail`` is a
no-op and the retriever polls.

All the appliance's remote mailboxes share one bound on sessions at once
(``[appliance] mailbox_sessions``, a :class:`~twisted.internet.defer.DeferredSemaphore`
the printer service gives every source): without it, 250 printers on one
Dovecot log in at the same instant at start and after every poll, and a
Dovecot sized as Debian ships it (``process_limit = 100`` for pop3-login)
drops connections ("process_limit reached") and some polls fail.  A
session holds its slot from before the TCP connect until QUIT or abort.

A mailbox that another session holds (Dovecot's ``pop3_lock_session = yes``
answers ``-ERR [IN-USE]``) fails ``open`` with :class:`SourceBusy`: two
appliances wrongly given one mailbox, or an appliance and a mail client,
take turns instead of both retrieving it, and the log says so.

The password is read from ``mailbox_password_file`` at each login, so it can
be changed without a restart and is never in site.ini.  It is sent only over
TLS unless ``mailbox_tls = none`` (docs/tls.md): with the default
``opportunistic`` a server without STLS gets no login, and the retriever logs
the reason and tries again at its next poll; the mail stays on the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable

from twisted.internet import defer
from zope.interface import implementer

from phaserlink.net import pop3_client
from phaserlink.printer.interfaces import IMailSession, IMailSource, SourceBusy, SourceMessage

__all__ = ["MAILBOX_TLS_SETTING", "RemoteMailSource", "RemoteMailSession", "read_password"]

#: The site.ini key that allows a password in clear, named when the login
#: is refused because the server offers no STLS (docs/tls.md).
MAILBOX_TLS_SETTING = "mailbox_tls"


def read_password(path: Path) -> str:
    """The first line of *path* without its line end (trailing spaces kept:
    they may be part of the password)."""
    text = Path(path).read_text(encoding="utf-8")
    return text.split("\n", 1)[0].rstrip("\r")


@implementer(IMailSource)
class RemoteMailSource:
    """One printer's remote POP3 mailbox."""

    def __init__(self, printer, reactor, *, timeout: float = pop3_client.DEFAULT_TIMEOUT,
                 sessions: defer.DeferredSemaphore | None = None):
        """*sessions*: the appliance-wide bound on remote sessions at once
        (None: unbounded, for tests of one source)."""
        if printer.mailbox is None:
            raise ValueError(f"printer {printer.name!r} has a local mailbox, not a remote one")
        self.printer = printer
        self.mailbox = printer.mailbox
        self.reactor = reactor
        self.timeout = timeout
        mb = self.mailbox
        scheme = "pop3s" if mb.implicit_tls else "pop3"
        self.description = f"{scheme}://{mb.username}@{mb.host}:{mb.port}"
        self.sessions = sessions
        self._waiting: defer.Deferred | None = None  # a slot asked for, not yet given

    def open(self) -> defer.Deferred:
        """Wait for a session slot, then log in; the slot goes back when the
        session ends (close or abort) or the login fails."""
        if self.sessions is None:
            return self._login().addCallback(RemoteMailSession)
        sessions = self.sessions
        self._waiting = sessions.acquire()

        def slot(_):
            self._waiting = None
            d = defer.maybeDeferred(self._login)  # even a synchronous error gives the slot back

            def lost(f):
                sessions.release()
                return f

            return d.addCallbacks(lambda s: RemoteMailSession(s, release=sessions.release), lost)

        return self._waiting.addCallback(slot)

    def stop(self) -> None:
        """The retriever stops: a pass still waiting for a slot gives up
        (CancelledError) instead of logging in only to quit."""
        if self._waiting is not None and not self._waiting.called:
            waiting, self._waiting = self._waiting, None
            waiting.cancel()

    def _login(self) -> defer.Deferred:
        mb = self.mailbox
        try:
            if mb.password_file is None:
                raise pop3_client.POP3AuthError(f"{self.description}: no mailbox_password_file configured")
            password = read_password(mb.password_file)
        except OSError as e:
            return defer.fail(
                pop3_client.POP3AuthError(f"{self.description}: cannot read password file: {e}")
            )
        except pop3_client.POP3Error as e:
            return defer.fail(e)
        d = pop3_client.connect(
            self.reactor,
            mb.host,
            mb.port,
            username=mb.username,
            password=password,
            tls=mb.tls,
            implicit_tls=mb.implicit_tls,
            ca_file=mb.ca_file,
            timeout=self.timeout,
            tls_setting=MAILBOX_TLS_SETTING,
        )
        return d.addErrback(self._busy)

    def _busy(self, failure):
        """``[IN-USE]`` at login: another session holds this mailbox."""
        if failure.check(pop3_client.POP3MailboxInUse):
            raise SourceBusy(
                f"{self.description} is locked by another POP3 session (the server said "
                f"-ERR {failure.value.server_text}): is another appliance or a mail client "
                "retrieving this mailbox? The mail stays there"
            )
        return failure

    def on_new_mail(self, callback: Callable[[], None]) -> None:
        """Never called back: a remote server gives no event; the retriever polls."""

    def __repr__(self) -> str:
        return f"<RemoteMailSource {self.description}>"


@implementer(IMailSession)
class RemoteMailSession:
    """IMailSession over a logged-in :class:`pop3_client.POP3Session`;
    *release* (the session slot) is called once, when the session ends."""

    def __init__(self, session: pop3_client.POP3Session, release: Callable[[], object] | None = None):
        self.session = session
        self._release = release

    def _ended(self, result=None):
        release, self._release = self._release, None
        if release is not None:
            release()
        return result

    def list(self) -> defer.Deferred:
        d = self.session.list_uidl()
        return d.addCallback(lambda entries: [SourceMessage(uidl, size) for uidl, size in entries])

    def retrieve(self, uidl: str, out: BinaryIO) -> defer.Deferred:
        return self.session.retrieve(uidl, out).addCallback(lambda _: None)

    def delete(self, uidl: str) -> defer.Deferred:
        return self.session.delete(uidl)

    def close(self) -> defer.Deferred:
        return self.session.quit().addBoth(self._ended)

    def abort(self) -> None:
        try:
            self.session.abort()
        finally:
            self._ended()
