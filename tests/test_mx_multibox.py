"""Several boxes (issue 11, "Scaling out"), all on loopback addresses of
this machine, on the mail engines a site already runs:

* a real Postfix is the site's MX for printers.test; ``transport_maps``
  routes each printer address either by SMTP to the appliance that owns
  the printer (box A on 127.0.0.2, box B on 127.0.0.3: half the printers
  each) or, for the printers whose mail is held centrally, to Dovecot
  (Postfix's ``pipe`` to dovecot-lda);
* a real Dovecot holds those printers' mailboxes, and each is retrieved by
  the appliance that owns the printer (``mailbox = pop3s://...``, the
  certificate verified against the site's CA);
* status mail from both boxes goes out by MX delivery to the sender's
  domain big.test (dnsmasq's MX and DKIM records), where a second real
  Postfix on 127.0.0.4 runs OpenDKIM as a verifying milter.

Proven here: each printer's mail prints exactly once, on its own box; with
box B stopped, its SMTP-fed printers' mail waits in Postfix's queue
(``postqueue -p`` lists it) and its Dovecot-held printers' mail waits in
Dovecot, while box A keeps printing both kinds; B's mail prints when B is
back; every status mail arrives at big.test's MX with OpenDKIM's
``dkim=pass`` for big.test.  The other tests: two appliances given one
Dovecot mailbox (POP3's lock lets one in at a time, the other says so in
its log, every job prints once); 80 Dovecot-held printers on one box
within Dovecot's login limit (``mailbox_sessions``); a lost box's printers
moved to the other box by configuration, with what waited in Postfix and
Dovecot printed once on the new owner; Dovecot down and back with a job
on its way, nothing lost.  docs/scaling.md describes the
layout these tests run.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from support.appliance import Appliance
from support.dns_server import DnsServer
from support.dovecot import Dovecot
from support.mailbox_printer import pop3s_printer_section as printer_section
from support.opendkim import OpenDKIMVerifier
from support.peers import free_port, in_ci, require_program, wait_for_port
from support.postfix import Postfix
from support.twistd import TWISTD
from test_dkim_sign import keygen
from test_printer_appliance import POSTSCRIPT, job_mail, printed_files

pytestmark = pytest.mark.peer

BOX_A, BOX_B = "127.0.0.2", "127.0.0.3"
STATUS_MX = "127.0.0.4"
#: Printers fed by SMTP from the MX, and printers whose mail Dovecot holds.
SMTP_FED = {BOX_A: ("a1", "a2"), BOX_B: ("b1", "b2")}
ON_DOVECOT = {BOX_A: ("ra1", "ra2"), BOX_B: ("rb1", "rb2")}
ALL = [p for box in (BOX_A, BOX_B) for p in SMTP_FED[box] + ON_DOVECOT[box]]
LDA = "/usr/lib/dovecot/dovecot-lda"


class BoxAppliance(Appliance):
    """An appliance listening on its own loopback address."""

    address: str = "127.0.0.1"

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text().replace("interface=127.0.0.1", f"interface={self.address}")
        path.write_text(text)
        return path

    def start(self, timeout: float = 20.0) -> "BoxAppliance":
        self.write_config()
        self.proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "--logfile",
             str(self.log_path), "phaserlink", "--config", str(self.config_path)],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.smtp_port, host=self.address, timeout=timeout)
        return self


def mailq(postfix: Postfix) -> str:
    program = require_program("postqueue", "postfix")
    return subprocess.run([program, "-c", str(postfix.etc), "-p"], capture_output=True, text=True,
                          timeout=30).stdout


def until(predicate, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tails = "".join(f"\n--- {name} ---\n{text()[-3000:]}" for name, text in logs)
    raise AssertionError(f"timed out waiting for {what}{tails}")


class LockingDovecot(Dovecot):
    """Dovecot as a site runs it for shared POP3 mailboxes: one POP3
    session per mailbox at a time (``pop3_lock_session = yes``; a second
    login waits for the lock, about 10 s here, then gets ``-ERR [IN-USE]``)."""

    def _config(self) -> str:
        return super()._config() + "pop3_lock_session = yes\n"

    def sessions(self, user: str) -> tuple[int, int]:
        """(logins, POP3 sessions ended) for *user*, from Dovecot's own log."""
        text = self.log_text
        return (len(self.logins(user)),
                sum(1 for line in text.splitlines() if line.startswith(f"pop3({user})") and "Disconnected" in line))


def lda_service(dovecot: Dovecot) -> str:
    """master.cf's ``dovecot`` pipe service: Postfix hands each recipient to
    dovecot-lda, which files it in that user's Maildir.  Its log is a file
    of its own that ``nobody`` (the pipe's user) may write."""
    lda_log = dovecot.dir / "lda.log"
    lda_log.touch()
    os.chown(lda_log, dovecot.uid, dovecot.gid)
    return (f"dovecot unix - n n - - pipe flags=DRhu user=nobody argv={LDA} -c {dovecot.dir / 'dovecot.conf'} "
            f"-o log_path={lda_log} -o info_log_path={lda_log} -f ${{sender}} -d ${{user}}")


def test_two_appliances_behind_postfix_with_printers_on_dovecot(tmp_path, capsys, test_ca):
    """The whole layout of docs/scaling.md: eight printers, four SMTP-fed
    and four Dovecot-held, half on each box; one box stopped and back;
    status mail from both to the sender's MX, checked there by OpenDKIM."""
    if not Path(LDA).exists():
        why = f"{LDA} is missing (apt-get install dovecot-core)"
        pytest.fail(f"CI=true and {why}") if in_ci() else pytest.skip(why)
    key, txt = keygen(tmp_path, capsys)
    smtp_port, mx_port = free_port(), free_port()
    server = DnsServer(tmp_path / "dns")
    server.mx("big.test", "mx.big.test", 10).host("mx.big.test", STATUS_MX)
    server.txt("pl1._domainkey.big.test", txt)
    verifier = OpenDKIMVerifier(tmp_path / "opendkim", server.port)
    status_mx = Postfix(tmp_path / "status-mx", port=mx_port, myhostname="mx.big.test", address=STATUS_MX,
                        main_extra={"smtpd_milters": "", "milter_default_action": "tempfail"})
    passwords = {p: f"secret-{p}" for box in ON_DOVECOT.values() for p in box}
    dovecot = LockingDovecot(cert=test_ca.issue())  # as docs/scaling.md configures it
    transport = tmp_path / "transport"
    transport.write_text("".join(f"{p}@printers.test smtp:[{addr}]:{smtp_port}\n"
                                 for addr, names in SMTP_FED.items() for p in names)
                         + "".join(f"{p}@printers.test dovecot:\n" for names in ON_DOVECOT.values() for p in names))
    site_mx = Postfix(tmp_path / "site-mx", myhostname="mx.printers.test", relayhost="[127.0.0.9]:9", main_extra={
        "relay_domains": "printers.test", "transport_maps": f"texthash:{transport}",
        "smtp_connect_timeout": "2s", "dovecot_destination_recipient_limit": "1",
    })
    boxes: dict[str, BoxAppliance] = {}
    out = tmp_path / "printed"
    try:
        server.start()
        verifier.start()
        status_mx.main_extra["smtpd_milters"] = verifier.milter
        status_mx.start()
        dovecot.start(users=passwords)
        site_mx.master_extra.append(lda_service(dovecot))
        site_mx.start()
        for addr in (BOX_A, BOX_B):
            box = BoxAppliance(tmp_path / f"box-{addr}", smtp_port=smtp_port)
            box.directory.mkdir()
            box.address = addr
            box.appliance_extra = (
                f"status_sender = printers@big.test\ndns_servers = 127.0.0.1:{server.port}\n"
                f"mx_port = {mx_port}\ndkim_key = {key}\ndkim_selector = pl1\ndkim_domain = big.test\n")
            sections = []
            for p in SMTP_FED[addr] + ON_DOVECOT[addr]:
                sections.append(textwrap.dedent(f"""\
                    [printer:{p}]
                    addresses = {p}@printers.test
                    output = file:{out / addr / p}
                    allowed_senders = *@big.test
                    sender_auth = none
                    formats = postscript
                    notify = printed
                    """))
                if p in ON_DOVECOT[addr]:
                    (box.directory / f"{p}.password").write_text(passwords[p] + "\n")
                    sections.append(textwrap.dedent(f"""\
                        mailbox = pop3s://{p}@127.0.0.1:{dovecot.pop3s_port}
                        mailbox_password_file = {box.directory / f"{p}.password"}
                        mailbox_tls = required
                        mailbox_ca = {test_ca.ca_path}
                        poll_interval = 1s
                        """))
            box.sections = "".join(sections)
            boxes[addr] = box.start()
        logs = [("site MX", site_mx.log), ("status MX", status_mx.log), ("Dovecot", lambda: dovecot.log_text),
                ("box A", boxes[BOX_A].log), ("box B", boxes[BOX_B].log)]

        def send(*printers: str) -> None:
            """One message to these printers: Postfix splits it by transport."""
            with smtplib.SMTP("127.0.0.1", site_mx.port, timeout=10) as smtp:
                smtp.send_message(job_mail(sender="alice@big.test",
                                           to=", ".join(f"{p}@printers.test" for p in printers),
                                           subject=f"job for {' '.join(printers)}"))

        def printed() -> dict[str, int]:
            """How many jobs each printer printed, by the box that printed them."""
            return {f"{box}/{p.name}": len(printed_files(p))
                    for box in (BOX_A, BOX_B) if (out / box).is_dir() for p in (out / box).iterdir()}

        for printer in ALL:
            send(printer)
        until(lambda: all(printed().get(f"{box}/{p}") for box in (BOX_A, BOX_B)
                          for p in SMTP_FED[box] + ON_DOVECOT[box]), 60, "every printer's first job", logs)
        # B stops: its SMTP-fed printer's mail waits in Postfix's queue, its
        # Dovecot-held printer's mail waits in Dovecot; A keeps printing both.
        boxes[BOX_B].stop()
        for printer in ("b2", "rb2", "a2", "ra2"):
            send(printer)
        until(lambda: printed()[f"{BOX_A}/a2"] == 2 and printed()[f"{BOX_A}/ra2"] == 2, 60,
              "a2's and ra2's second jobs on A while B is down", logs)
        until(lambda: "b2@printers.test" in mailq(site_mx), 30, "b2's mail in Postfix's queue", logs)
        until(lambda: len(dovecot.messages("rb2")) == 1, 30, "rb2's mail in Dovecot", logs)
        assert printed()[f"{BOX_B}/b2"] == 1 and printed()[f"{BOX_B}/rb2"] == 1
        boxes[BOX_B].start()  # no flush: Postfix's own retry (1-2 s back-off here) delivers it
        until(lambda: printed()[f"{BOX_B}/b2"] == 2 and printed()[f"{BOX_B}/rb2"] == 2, 60,
              "b2's and rb2's mail after B came back", logs)
        until(lambda: "b2@printers.test" not in mailq(site_mx), 30, "Postfix's queue empty", logs)
        assert all(dovecot.messages(p) == [] for p in passwords)  # Dovecot handed every job on
        # Each remote mailbox is polled every second: no log lines per poll.
        assert "Starting factory <phaserlink.net.pop3_client" not in boxes[BOX_A].log()
        # One message to printers on both boxes and on Dovecot: each copy
        # prints once, on its own printer's box.
        send("a1", "a2", "b1", "ra1", "rb1")
        until(lambda: all(printed()[k] == 2 for k in (f"{BOX_A}/a1", f"{BOX_B}/b1", f"{BOX_A}/ra1", f"{BOX_B}/rb1"))
              and printed()[f"{BOX_A}/a2"] == 3, 60, "the five-printer job", logs)
        time.sleep(2.5)  # more polls from both boxes: nothing prints again
        counts = {"a1": 2, "a2": 3, "b1": 2, "b2": 2, "ra1": 2, "ra2": 2, "rb1": 2, "rb2": 2}
        assert printed() == {f"{box}/{p}": counts[p] for box in (BOX_A, BOX_B) for p in SMTP_FED[box] + ON_DOVECOT[box]}
        assert all(dovecot.messages(p) == [] for p in passwords) and "printers.test" not in mailq(site_mx)
        # Status mail from both boxes, by MX to big.test, DKIM-valid to OpenDKIM.
        total = sum(counts.values())
        status = until(lambda: len(m := status_mx.messages()) >= total and m, 60, f"{total} status mails", logs)
        time.sleep(1.0)
        status = status_mx.messages()
        assert len(status) == total  # one per printed job, none twice
        for m in status:
            assert str(m["To"]) == "alice@big.test"
            verdicts = [str(h) for h in m.get_all("Authentication-Results", [])
                        if str(h).startswith(OpenDKIMVerifier.authserv_id)]
            assert verdicts and re.search(r"\bdkim=pass\b.*\bheader\.d=big\.test\b", verdicts[0], re.S), verdicts
        named = {p for m in status for p in ALL if f"{p}@printers.test" in m.as_string()}
        assert named == set(ALL)  # from both boxes, both kinds of printer
    finally:
        for box in boxes.values():
            box.stop()
        for peer in (site_mx, status_mx, dovecot, verifier, server):
            peer.stop()


def test_two_appliances_never_both_retrieve_one_dovecot_mailbox(tmp_path, test_ca):
    """Both appliances are (wrongly) given the same Dovecot mailbox.  Box A
    is frozen (SIGSTOP) in the middle of its session, retrieving a 24 MB
    job: box B, polling meanwhile, gets POP3's lock refusal and says so in
    its log (a warning naming the lock, no traceback) and retrieves
    nothing; once A goes on, every job prints exactly once."""
    dovecot = LockingDovecot(cert=test_ca.issue())
    boxes: dict[str, BoxAppliance] = {}
    out = tmp_path / "printed"
    big = b"%!PS-Adobe-3.0\n" + b"% padding, to keep a POP3 session busy for a while\n" * 480_000 + b"showpage\n"
    sizes: list[int] = []  # of each job's document, as it must print
    try:
        dovecot.start(users={"printer1": "pw"})
        password = tmp_path / "mailbox.password"
        password.write_text("pw\n")

        def deliver(data: bytes = POSTSCRIPT) -> None:
            sizes.append(len(data))
            dovecot.deliver("printer1", bytes(job_mail(data, sender="alice@big.test", to="remote@printers.test",
                                                       Message_ID=f"<shared-{len(sizes)}@big.test>")))

        def box(addr: str) -> BoxAppliance:
            b = BoxAppliance(tmp_path / f"box-{addr}")
            b.directory.mkdir()
            b.address = addr
            b.sections = textwrap.dedent(f"""\
                [printer:remote]
                addresses = remote@printers.test
                output = file:{out / addr}
                allowed_senders = *@big.test
                sender_auth = none
                formats = postscript
                notify = none
                mailbox = pop3s://printer1@127.0.0.1:{dovecot.pop3s_port}
                mailbox_password_file = {password}
                mailbox_tls = required
                mailbox_ca = {test_ca.ca_path}
                poll_interval = 1s
                """)
            return b

        boxes[BOX_A] = box(BOX_A)
        boxes[BOX_B] = box(BOX_B)
        logs = [("Dovecot", lambda: dovecot.log_text), ("box A", boxes[BOX_A].log), ("box B", boxes[BOX_B].log)]
        deliver(big)
        deliver()
        boxes[BOX_A].start()
        for attempt in range(5):
            # Freeze A as soon as Dovecot logs its login; if its session had
            # already ended by then, let it go on and try with another job.
            logins = until(lambda: (n := dovecot.sessions("printer1"))[0] > n[1] and n, 60, "A's login", logs)
            os.kill(boxes[BOX_A].proc.pid, signal.SIGSTOP)
            time.sleep(0.5)
            if dovecot.sessions("printer1") == logins:
                break  # A holds the mailbox, mid-session
            os.kill(boxes[BOX_A].proc.pid, signal.SIGCONT)
            until(lambda: dovecot.messages("printer1") == [], 60, "A to empty the mailbox", logs)
            deliver(big)
        else:
            pytest.fail("could not catch box A in the middle of a POP3 session")
        deliver()  # waiting for B, if B could get in
        boxes[BOX_B].start()
        until(lambda: "locked by another POP3 session" in boxes[BOX_B].log(), 60,
              "B's log to say the mailbox is locked", logs)
        assert "is another appliance or a mail client retrieving this mailbox?" in boxes[BOX_B].log()
        assert "Traceback" not in boxes[BOX_B].log()
        assert printed_files(out / BOX_B) == []  # B retrieved nothing while A held the mailbox
        os.kill(boxes[BOX_A].proc.pid, signal.SIGCONT)
        until(lambda: dovecot.messages("printer1") == [], 60, "Dovecot emptied", logs)
        until(lambda: len(printed_files(out / BOX_A)) + len(printed_files(out / BOX_B)) >= len(sizes), 60,
              "every job printed", logs)
        time.sleep(2.5)  # more polls from both: nothing more prints
        printed = printed_files(out / BOX_A) + printed_files(out / BOX_B)
        assert sorted(p.stat().st_size for p in printed) == sorted(sizes)  # each job once, whole
    finally:
        for b in boxes.values():
            if b.proc is not None and b.proc.poll() is None:
                os.kill(b.proc.pid, signal.SIGCONT)
            b.stop()
        dovecot.stop()


class LimitedDovecot(LockingDovecot):
    """Dovecot with a small login limit, standing for a site's Dovecot
    (Dovecot's default ``process_limit`` is 100) facing more
    appliance printers than that: beyond the limit it drops connections
    and logs "process_limit (N) reached"."""

    limit = 8

    def _config(self) -> str:
        return super()._config() + (f"service pop3-login {{\n  process_limit = {self.limit}\n}}\n"
                                    f"service pop3 {{\n  process_limit = {self.limit}\n}}\n")


def test_many_printers_on_one_dovecot_stay_within_its_login_limit(tmp_path, test_ca):
    """80 printers of one appliance on one Dovecot whose login service takes
    8 connections at once: with ``mailbox_sessions = 4`` the appliance never
    opens more than 4 sessions, so Dovecot drops none (no "process_limit
    reached" in its log), no poll fails, and every job prints once, at
    start and on later polls alike."""
    names = [f"r{i:02d}" for i in range(80)]
    dovecot = LimitedDovecot(cert=test_ca.issue())
    box = BoxAppliance(tmp_path / "box")
    box.directory.mkdir()
    box.address = BOX_A
    out = tmp_path / "printed"
    try:
        dovecot.start(users={n: "pw" for n in names})
        password = tmp_path / "mailbox.password"
        password.write_text("pw\n")
        box.appliance_extra = "mailbox_sessions = 4\n"
        box.sections = "".join(printer_section(n, out / n, dovecot, password, test_ca.ca_path, poll="2s")
                               for n in names)
        logs = [("Dovecot", lambda: dovecot.log_text), ("box", box.log)]
        for n in names:  # waiting before the appliance starts: 80 logins at once
            dovecot.deliver(n, bytes(job_mail(sender="alice@big.test", to=f"{n}@printers.test")))
        box.start(timeout=60)
        until(lambda: all(printed_files(out / n) for n in names), 120, "every printer's first job", logs)
        for n in names:  # and on the polls after that
            dovecot.deliver(n, bytes(job_mail(sender="alice@big.test", to=f"{n}@printers.test")))
        until(lambda: all(len(printed_files(out / n)) == 2 for n in names), 120, "every printer's second job", logs)
        time.sleep(3)
        assert {n: len(printed_files(out / n)) for n in names} == {n: 2 for n in names}
        assert "process_limit" not in dovecot.log_text  # Dovecot dropped no connection
        assert "retrieving from" not in box.log()  # no poll failed (the retriever's "retrieving from X failed")
    finally:
        box.stop()
        dovecot.stop()


def test_a_lost_box_s_printers_move_to_the_other_box(tmp_path, test_ca):
    """An address in no map is refused by the MX (``relay_recipient_maps``);
    a printer mapped to a box that does not have it bounces with the box's
    550 5.1.1.  Box B is lost (kill -9, never comes back).  The administrator moves
    its printers to A: their sections into A's site.ini (A restarted), the
    SMTP-fed one's transport-map line to A (``postfix reload``).  The job
    that waited in Postfix's queue and the one that waited in Dovecot
    print once each, on A."""
    if not Path(LDA).exists():
        why = f"{LDA} is missing (apt-get install dovecot-core)"
        pytest.fail(f"CI=true and {why}") if in_ci() else pytest.skip(why)
    smtp_port = free_port()
    dovecot = LockingDovecot(cert=test_ca.issue())
    transport = tmp_path / "transport"
    # c1 is an inventory mistake: mapped to A, configured on no box.
    transport.write_text(f"a1@printers.test smtp:[{BOX_A}]:{smtp_port}\nb1@printers.test smtp:[{BOX_B}]:{smtp_port}\n"
                         f"rb1@printers.test dovecot:\nc1@printers.test smtp:[{BOX_A}]:{smtp_port}\n")
    site_mx = Postfix(tmp_path / "site-mx", myhostname="mx.printers.test", relayhost="[127.0.0.9]:9", main_extra={
        "relay_domains": "printers.test", "transport_maps": f"texthash:{transport}",
        "relay_recipient_maps": f"texthash:{transport}",  # the MX knows every printer address
        "smtp_connect_timeout": "2s", "dovecot_destination_recipient_limit": "1",
    })
    out = tmp_path / "printed"
    boxes: dict[str, BoxAppliance] = {}
    try:
        dovecot.start(users={"rb1": "pw"})
        password = tmp_path / "rb1.password"
        password.write_text("pw\n")
        site_mx.master_extra.append(lda_service(dovecot))
        site_mx.start()
        for addr in (BOX_A, BOX_B):
            boxes[addr] = BoxAppliance(tmp_path / f"box-{addr}", smtp_port=smtp_port)
            boxes[addr].directory.mkdir()
            boxes[addr].address = addr
        boxes[BOX_A].sections = printer_section("a1", out / BOX_A / "a1")
        boxes[BOX_B].sections = (printer_section("b1", out / BOX_B / "b1")
                                 + printer_section("rb1", out / BOX_B / "rb1", dovecot, password, test_ca.ca_path))
        for box in boxes.values():
            box.start()
        logs = [("site MX", site_mx.log), ("Dovecot", lambda: dovecot.log_text),
                ("box A", boxes[BOX_A].log), ("box B", boxes[BOX_B].log)]

        def send(printer: str) -> None:
            with smtplib.SMTP("127.0.0.1", site_mx.port, timeout=10) as smtp:
                smtp.send_message(job_mail(sender="alice@big.test", to=f"{printer}@printers.test",
                                           subject=f"job for {printer}"))

        for printer in ("a1", "b1", "rb1"):
            send(printer)
        until(lambda: all(printed_files(out / box / p) for box, p in
                          ((BOX_A, "a1"), (BOX_B, "b1"), (BOX_B, "rb1"))), 60, "the first jobs", logs)
        # An address in no map is refused by the MX itself, in the session.
        with pytest.raises(smtplib.SMTPRecipientsRefused, match=r"550.*5\.1\.1"):
            send("zz")
        # A printer in the map but on no box: A refuses it at RCPT, Postfix
        # bounces it with A's reason (nothing waits in a queue for ever).
        send("c1")
        until(lambda: re.search(r"to=<c1@printers\.test>.*status=bounced .*550 5\.1\.1 .*no such printer here",
                                site_mx.log()), 30, "c1's bounce in Postfix's log", logs)
        boxes[BOX_B].kill9()  # lost: never started again
        send("b1")
        send("rb1")
        until(lambda: "b1@printers.test" in mailq(site_mx), 30, "b1's mail in Postfix's queue", logs)
        until(lambda: len(dovecot.messages("rb1")) == 1, 30, "rb1's mail in Dovecot", logs)
        # The move: B's sections go to A, b1's map line points at A.
        boxes[BOX_A].stop()
        boxes[BOX_A].sections += (printer_section("b1", out / BOX_A / "b1")
                                  + printer_section("rb1", out / BOX_A / "rb1", dovecot, password, test_ca.ca_path))
        boxes[BOX_A].start()
        transport.write_text(transport.read_text().replace(f"[{BOX_B}]", f"[{BOX_A}]"))
        site_mx.postfix("reload")
        site_mx.flush()
        until(lambda: printed_files(out / BOX_A / "b1") and printed_files(out / BOX_A / "rb1"), 60,
              "b1's and rb1's jobs on A", logs)
        until(lambda: "b1@printers.test" not in mailq(site_mx), 30, "Postfix's queue empty", logs)
        time.sleep(2.5)
        assert [len(printed_files(out / BOX_A / p)) for p in ("a1", "b1", "rb1")] == [1, 1, 1]
        assert [len(printed_files(out / BOX_B / p)) for p in ("b1", "rb1")] == [1, 1]  # nothing more on B
        assert dovecot.messages("rb1") == []
    finally:
        for box in boxes.values():
            box.stop()
        site_mx.stop()
        dovecot.stop()


def test_dovecot_down_and_back_loses_nothing(tmp_path, test_ca):
    """Dovecot stops with a job for a Dovecot-held printer on its way:
    Postfix's pipe to dovecot-lda is deferred (the job waits in Postfix's
    queue), the owning box's polls fail and say so; Dovecot comes back on
    the same ports and the job prints once, with no one's help."""
    if not Path(LDA).exists():
        why = f"{LDA} is missing (apt-get install dovecot-core)"
        pytest.fail(f"CI=true and {why}") if in_ci() else pytest.skip(why)
    transport = tmp_path / "transport"
    transport.write_text("rb1@printers.test dovecot:\n")
    site_mx = Postfix(tmp_path / "site-mx", myhostname="mx.printers.test", relayhost="[127.0.0.9]:9", main_extra={
        "relay_domains": "printers.test", "transport_maps": f"texthash:{transport}",
        "dovecot_destination_recipient_limit": "1",
    })
    dovecot = LockingDovecot(cert=test_ca.issue())
    box = BoxAppliance(tmp_path / "box")
    box.directory.mkdir()
    box.address = BOX_B
    out = tmp_path / "printed"
    try:
        dovecot.start(users={"rb1": "pw"})
        password = tmp_path / "rb1.password"
        password.write_text("pw\n")
        site_mx.master_extra.append(lda_service(dovecot))
        site_mx.start()
        box.sections = printer_section("rb1", out, dovecot, password, test_ca.ca_path)
        box.start()
        logs = [("site MX", site_mx.log), ("Dovecot", lambda: dovecot.log_text), ("box", box.log)]
        dovecot.halt()
        with smtplib.SMTP("127.0.0.1", site_mx.port, timeout=10) as smtp:
            smtp.send_message(job_mail(sender="alice@big.test", to="rb1@printers.test"))
        until(lambda: re.search(r"to=<rb1@printers\.test>, relay=dovecot.*status=deferred", site_mx.log()), 30,
              "Postfix to defer rb1's mail", logs)
        until(lambda: "rb1@printers.test" in mailq(site_mx), 30, "rb1's mail in Postfix's queue", logs)
        until(lambda: "retrieving from pop3s://rb1@" in box.log(), 30, "the box's failed poll in its log", logs)
        assert printed_files(out) == []
        dovecot.start(users={"rb1": "pw"})  # back, same ports, same Maildirs
        until(lambda: printed_files(out), 60, "rb1's job after Dovecot came back", logs)
        until(lambda: "rb1@printers.test" not in mailq(site_mx), 30, "Postfix's queue empty", logs)
        time.sleep(2.5)
        assert len(printed_files(out)) == 1 and dovecot.messages("rb1") == []
    finally:
        box.stop()
        site_mx.stop()
        dovecot.stop()
