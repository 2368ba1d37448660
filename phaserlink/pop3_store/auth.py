"""Who may open which mailbox: twisted.cred portal, realm and checkers.

A POP3 login names a printer's mailbox (``pop3_user``).  Two ways in:

``USER``/``PASS``
    checked against the printer's ``pop3_password`` (a PBKDF2 hash in
    site.ini).  PBKDF2 is deliberately slow (~0.05 s at 200 000 rounds), so
    the check runs in the appliance's ``cpu`` thread pool (the runner the
    server passes, docs/threads.md): a login must not stall everyone else's
    RETR, nor the fsync before someone's 250.  An unknown user is checked
    against a dummy hash of the same cost (docs/logins.md).

``APOP``
    RFC 1939 section 7: the client sends ``MD5(banner + secret)``.  The server
    must know the *clear* secret to compute the same digest, and a one-way
    hash cannot give it back, so APOP works only for printers with
    ``pop3_apop_secret_file`` set (a file holding the shared secret).
    Printers with only ``pop3_password`` cannot use APOP.

Only printers with ``output = pull`` (and a local mailbox) may log in at
all: the others' mailboxes belong to the appliance's own retriever.

The realm hands out a :class:`MailboxAvatar` over the printer's Maildir and
keeps RFC 1939's exclusive-access rule: one session per mailbox at a time
(a second login gets :class:`MailboxInUse`, answered ``-ERR [IN-USE]``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import BinaryIO, Callable

from twisted.cred import credentials as _credentials
from twisted.cred import error as cred_error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from zope.interface import Attribute, Interface, implementer

from phaserlink.config import PrinterConfig, SiteConfig
from phaserlink.pop3_store.maildir import Maildir, MaildirStore, StoredMessage
from phaserlink.trust.logins import PasswordBook

#: Runs a blocking function somewhere and gives a Deferred of its result.
Runner = Callable[..., defer.Deferred]


def run_inline(f, *args) -> defer.Deferred:
    """The runner for tests and reactors without threads: just call it."""
    return defer.maybeDeferred(f, *args)


class MailboxInUse(Exception):
    """Another session holds this mailbox (RFC 2449 ``[IN-USE]``)."""


# -- the avatar ----------------------------------------------------------------


class IMailbox(Interface):
    """What a POP3 session may do with the mailbox it logged in to."""

    name = Attribute("The mailbox (printer) name, for logs.")

    def list() -> list[StoredMessage]:
        """The messages now in the mailbox, oldest first (no content read)."""

    def open(message: StoredMessage) -> BinaryIO:
        """A binary file of *message* (LF line ends); raises OSError if gone."""

    def delete(messages: list[StoredMessage]) -> None:
        """Remove *messages*; durable (directories fsync'd) when it returns."""


@implementer(IMailbox)
class MailboxAvatar:
    """A printer's Maildir as seen by one POP3 session."""

    def __init__(self, maildir: Maildir):
        self.maildir = maildir
        self.name = maildir.name

    def list(self) -> list[StoredMessage]:
        return self.maildir.messages()

    def open(self, message: StoredMessage) -> BinaryIO:
        return open(message.path, "rb")

    def delete(self, messages: list[StoredMessage]) -> None:
        self.maildir.delete(messages)


@implementer(IRealm)
class MailboxRealm:
    """Avatar id (printer name) -> that printer's mailbox, one session at a time."""

    def __init__(self, store: MaildirStore):
        self.store = store
        self.in_use: set[str] = set()

    def requestAvatar(self, avatarId, mind, *interfaces):
        if IMailbox not in interfaces:
            raise NotImplementedError("this realm only gives IMailbox avatars")
        name = avatarId.decode("utf-8") if isinstance(avatarId, bytes) else avatarId
        if name in self.in_use:
            raise MailboxInUse(name)
        avatar = MailboxAvatar(self.store.mailbox(name))
        self.in_use.add(name)
        released = []

        def logout() -> None:
            # Idempotent: the protocol may call it from QUIT and connectionLost.
            if not released:
                released.append(True)
                self.in_use.discard(name)

        return IMailbox, avatar, logout


# -- credentials and checkers ----------------------------------------------------


class IAPOPCredentials(_credentials.ICredentials):
    """An APOP login: user, the greeting's ``<...>`` banner, the MD5 hex digest."""

    username = Attribute("bytes: the user name")
    challenge = Attribute("bytes: the banner from the greeting, brackets included")
    digest = Attribute("bytes: hex MD5 digest the client sent")


@implementer(IAPOPCredentials)
class APOPCredentials:
    def __init__(self, username: bytes, challenge: bytes, digest: bytes):
        self.username = username
        self.challenge = challenge
        self.digest = digest


def apop_digest(challenge: bytes, secret: bytes) -> bytes:
    """RFC 1939 section 7: lower-case hex MD5 of banner + shared secret."""
    return hashlib.md5(challenge + secret).hexdigest().encode("ascii")


def _printer_for_user(site: SiteConfig, username: bytes) -> PrinterConfig | None:
    try:
        wanted = username.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for printer in site.printers.values():
        if printer.pop3_user == wanted and pop3_login_possible(printer):
            return printer
    from phaserlink.pop3_store.postmaster import postmaster_account  # the postmaster's box (docs/smtp.md)

    account = postmaster_account(site)
    return account if account is not None and account.pop3_user == wanted else None  # type: ignore[return-value]


def pop3_login_possible(printer: PrinterConfig) -> bool:
    """Only ``output = pull`` printers with a local mailbox may log in.

    Any other printer's mailbox is read by the appliance's own retriever; a
    POP3 client fetching from it too would print jobs twice (guarantee 3)
    or delete them under the retriever's feet.
    """
    return printer.output == "pull" and printer.mailbox is None


@implementer(ICredentialsChecker)
class PrinterPasswordChecker:
    """USER/PASS against ``pop3_user`` / ``pop3_password`` of a printer."""

    credentialInterfaces = (_credentials.IUsernamePassword,)

    def __init__(self, site: SiteConfig, runner: Runner = run_inline):
        self.site = site
        self.runner = runner
        # Unknown users, and printers that may not log in, are checked
        # against a dummy as costly as the real hashes (no user enumeration).
        self.book = PasswordBook({p.name: p.pop3_password for p in site.printers.values()
                                  if p.pop3_password is not None})

    def requestAvatarId(self, credentials) -> defer.Deferred:
        printer = _printer_for_user(self.site, credentials.username)
        stored = printer.pop3_password if printer is not None else None
        d = self.runner(self.book.check, stored, credentials.password)

        def decide(ok: bool):
            if ok and printer is not None:
                return printer.name
            raise cred_error.UnauthorizedLogin("invalid user name or password")

        return d.addCallback(decide)


@implementer(ICredentialsChecker)
class APOPSecretChecker:
    """APOP against a printer's ``pop3_apop_secret`` (see the module docstring)."""

    credentialInterfaces = (IAPOPCredentials,)

    def __init__(self, site: SiteConfig):
        self.site = site

    def requestAvatarId(self, credentials) -> defer.Deferred:
        printer = _printer_for_user(self.site, credentials.username)
        secret = printer.pop3_apop_secret if printer is not None else None
        want = apop_digest(credentials.challenge, secret or b"\0 no secret \0")
        got = credentials.digest.lower()
        if printer is not None and secret and hmac.compare_digest(want, got):
            return defer.succeed(printer.name)
        return defer.fail(cred_error.UnauthorizedLogin("invalid user name or digest"))


def build_portal(site: SiteConfig, store: MaildirStore, runner: Runner = run_inline) -> Portal:
    """The portal the POP3 server logs in through."""
    return Portal(
        MailboxRealm(store),
        [PrinterPasswordChecker(site, runner), APOPSecretChecker(site)],
    )


__all__ = [
    "APOPCredentials",
    "APOPSecretChecker",
    "IAPOPCredentials",
    "IMailbox",
    "MailboxAvatar",
    "MailboxInUse",
    "MailboxRealm",
    "PrinterPasswordChecker",
    "apop_digest",
    "build_portal",
    "pop3_login_possible",
    "run_inline",
]

