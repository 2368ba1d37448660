"""twistd options and makeService for ``twistd phaserlink``.

The configuration is read and validated in ``postOptions``: a bad site.ini is
a usage error, so twistd prints the message (file, section, key, why) and
exits non-zero before it binds any port or forks.
"""

from __future__ import annotations

from twisted.python import usage

from phaserlink import config as _config
from phaserlink.durable import SpoolLock, SpoolLocked


class Options(usage.Options):
    synopsis = "--config site.ini"
    longdesc = (
        "Run the PhaserLink appliance: an SMTP relay taking mail for printer "
        "addresses, a POP3 mailbox store per printer, and the retriever that "
        "prints what arrives and mails the status back."
    )
    optParameters = [
        ["config", "c", "site.ini", "Path to the site configuration (site.ini)."],
    ]

    def postOptions(self) -> None:
        try:
            self.site = _config.load(self["config"])
        except _config.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        # Taken here so that a second appliance on the same spool stops with
        # one line, before it binds or cleans anything; held for the life of
        # the process (a daemonizing fork shares it).
        self.spool_lock = SpoolLock(self.site.appliance.spool)
        try:
            self.spool_lock.acquire()
        except SpoolLocked as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options):
    from phaserlink.process import needed_files, raise_file_limit
    from phaserlink.service import makeService as make

    site = options.site
    raise_file_limit(needed_files(site.appliance.max_sessions, len(site.printers)))

    return make(options.site, spool_lock=options.spool_lock)
