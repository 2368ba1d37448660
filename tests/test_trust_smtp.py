"""Who may print, as an SMTP client sees it (docs/trust.md).

A real DNS server that is not ours (dnsmasq) serves SPF, DKIM keys and DMARC
records for the test domains; messages are signed by dkimpy's signer.  Each
case asserts what a user sees: the reply code and text, the message in the
printer's mailbox or not, the Authentication-Results written.

The .test names are not in the Public Suffix List, so every *.test domain
has the organizational domain "test" and relaxed alignment would align
unrelated test domains: the DMARC records say adkim=s; aspf=s.
"""

from __future__ import annotations

import dkim
import pytest

from support.dnsmasq import DnsServer, dkim_key
from support.smtp import Session, make_site, mailbox_files

GOOD = "good.test"  # SPF 127.0.0.1, DKIM key, DMARC p=reject strict
OTHER = "other.test"  # has a DKIM key, no DMARC record
NONE_ = "nodmarc.test"  # DKIM key, SPF, no DMARC record at all

PRINTERS = """\
[printer:demo]
addresses = demo@phaserlink.test
allowed_senders = *@good.test, *@nodmarc.test, *@other.test

[printer:dkimonly]
addresses = dkimonly@phaserlink.test
sender_auth = dkim
allowed_senders = *

[printer:spfonly]
addresses = spfonly@phaserlink.test
sender_auth = spf
allowed_senders = *@good.test

[printer:open]
addresses = open@phaserlink.test
output = socket://127.0.0.1:9
sender_auth = none
allowed_senders = *

[printer:quota]
addresses = quota@phaserlink.test
sender_auth = none
allowed_senders = *
max_jobs_per_sender = 2/1h

[group:both]
address = both@phaserlink.test
members = demo, open
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {name: dkim_key(d, name) for name in (GOOD, OTHER, NONE_)}


@pytest.fixture
def dns(tmp_path, keys):
    server = DnsServer(tmp_path)
    for domain, (_, txt) in keys.items():
        server.add_txt(f"sel._domainkey.{domain}", txt)
    server.add_txt(GOOD, "v=spf1 ip4:127.0.0.1 -all")
    server.add_txt(NONE_, "v=spf1 ip4:127.0.0.1 -all")
    server.add_txt(OTHER, "v=spf1 -all")
    server.add_txt(f"_dmarc.{GOOD}", "v=DMARC1; p=reject; adkim=s; aspf=s")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path, dns):
    return make_site(tmp_path / "site", f"dns_servers = {dns.address}\ntrusted_authserv_ids = mx.site.test\n",
                     PRINTERS)


def message(author: str, subject: str = "report", body: str = "please print me\r\n", extra: str = "") -> bytes:
    return (f"From: Someone <{author}>\r\nTo: demo@phaserlink.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@x.test>\r\n{extra}\r\n{body}").encode()


def signed(keys, domain: str, msg: bytes) -> bytes:
    key = keys[domain][0].read_bytes()
    sig = dkim.sign(msg, b"sel", domain.encode(), key, include_headers=[b"from", b"to", b"subject", b"message-id"],
                    canonicalize=(b"relaxed", b"relaxed"))
    return sig + msg


def send(site, mail_from: str, rcpt: str, msg: bytes, peer: str = "127.0.0.1", session=None) -> bytes:
    s = session or Session(site, peer=peer)
    s.ehlo()
    assert s.cmd(f"MAIL FROM:<{mail_from}>").startswith(b"250 ")
    reply = s.cmd(f"RCPT TO:<{rcpt}>")
    if not reply.startswith(b"250"):
        return reply
    assert s.cmd("DATA").startswith(b"354")
    return s.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")


def stored(site, printer: str) -> list[bytes]:
    return mailbox_files(site, printer)


def test_signed_and_aligned_prints_with_our_results_first(site, keys):
    reply = send(site, "bounces@elsewhere.test", "demo@phaserlink.test",
                 signed(keys, GOOD, message("alice@good.test")))
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    (copy,) = stored(site, "demo")
    assert copy.startswith(b"Return-Path: <bounces@elsewhere.test>\nAuthentication-Results: phaserlink.test;\n")
    head = copy.split(b"\n\n")[0].decode()
    assert "dkim=pass header.d=good.test header.s=sel" in head
    assert "dmarc=pass header.from=good.test policy.dmarc=reject" in head
    assert copy.endswith(b"\nplease print me\n")


def test_forged_from_without_signature_is_refused(site):
    reply = send(site, "mallory@evil.test", "demo@phaserlink.test", message("alice@good.test"))
    assert reply.startswith(b"550 5.7.26 <alice@good.test> is not authenticated for printer demo: "), reply
    assert b"DMARC: no DKIM signature or SPF pass aligned with good.test (its policy: p=reject)" in reply
    assert b"not logged in" in reply
    assert stored(site, "demo") == []


def test_signature_by_another_domain_is_not_aligned(site, keys):
    msg = signed(keys, OTHER, message("alice@good.test"))
    reply = send(site, "mallory@evil.test", "demo@phaserlink.test", msg)
    assert reply.startswith(b"550 5.7.26 "), reply
    assert stored(site, "demo") == []
    reply = send(site, "mallory@evil.test", "dkimonly@phaserlink.test", msg)
    assert reply.startswith(b"550 5.7.22 <alice@good.test> is not authenticated for printer dkimonly: "
                            b"no valid DKIM signature by good.test (signed by other.test)"), reply


def test_body_changed_after_signing_is_refused(site, keys):
    msg = signed(keys, GOOD, message("alice@good.test")).replace(b"please print me", b"please print THIS")
    reply = send(site, "x@elsewhere.test", "dkimonly@phaserlink.test", msg)
    assert reply.startswith(b"550 5.7.20 <alice@good.test> is not authenticated for printer dkimonly: "
                            b"no passing DKIM signature (body hash mismatch"), reply
    assert stored(site, "dkimonly") == []


def test_spf_pass_aligned_prints(site):
    reply = send(site, "alice@good.test", "demo@phaserlink.test", message("alice@good.test"))
    assert reply.startswith(b"250 2.0.0 "), reply
    (copy,) = stored(site, "demo")
    head = copy.split(b"\n\n")[0].decode()
    assert "spf=pass smtp.mailfrom=alice@good.test" in head and "dmarc=pass" in head


def test_no_dmarc_record_still_needs_an_aligned_pass(site, keys):
    # no record: the rule still wants the From: domain authenticated
    assert send(site, "x@elsewhere.test", "demo@phaserlink.test", message("bob@nodmarc.test")) \
        .startswith(b"550 5.7.26 ")
    reply = send(site, "x@elsewhere.test", "demo@phaserlink.test", signed(keys, NONE_, message("bob@nodmarc.test")))
    assert reply.startswith(b"250 "), reply
    head = stored(site, "demo")[0].split(b"\n\n")[0].decode()
    assert "dkim=pass header.d=nodmarc.test" in head and "dmarc=none" in head, head


def test_spf_rule_is_decided_at_rcpt_against_mail_from(site):
    s = Session(site)
    s.ehlo()
    s.cmd("MAIL FROM:<alice@good.test>")
    assert s.cmd("RCPT TO:<spfonly@phaserlink.test>") == b"250 2.1.5 Ok, prints on spfonly\r\n"
    other = Session(site, peer="192.0.2.7")
    other.ehlo()
    other.cmd("MAIL FROM:<alice@good.test>")
    reply = other.cmd("RCPT TO:<spfonly@phaserlink.test>")
    assert reply.startswith(b"550 5.7.23 <spfonly@phaserlink.test>: <alice@good.test> is not authenticated for "
                            b"printer spfonly: SPF fail for good.test"), reply


def test_forged_results_with_our_id_are_ignored_and_removed(site, keys):
    forged = "Authentication-Results: phaserlink.test; dmarc=pass header.from=good.test\r\n"
    reply = send(site, "mallory@evil.test", "demo@phaserlink.test", message("alice@good.test", extra=forged))
    assert reply.startswith(b"550 5.7.26 "), reply
    # a real signer's message carrying a forged line: prints, the forged line is gone
    msg = signed(keys, GOOD, message("alice@good.test", subject="two", extra=forged))
    assert send(site, "x@elsewhere.test", "demo@phaserlink.test", msg).startswith(b"250 ")
    (copy,) = stored(site, "demo")
    assert copy.count(b"Authentication-Results: phaserlink.test;") == 1
    assert b"dmarc=pass header.from=good.test\n" not in copy
    assert b"\tdmarc=pass header.from=good.test policy.dmarc=reject" in copy


def test_trusted_upstream_results_count_only_from_a_relay(site):
    upstream = "Authentication-Results: mx.site.test; dmarc=pass header.from=good.test\r\n"
    msg = message("alice@good.test", extra=upstream)
    # 192.0.2.9 is not in relay_networks: its claim is not believed
    assert send(site, "x@elsewhere.test", "demo@phaserlink.test", msg, peer="192.0.2.9").startswith(b"550 5.7.26")
    # 127.0.0.1 is (the site's own MX in front): believed
    reply = send(site, "x@elsewhere.test", "demo@phaserlink.test", msg)
    assert reply.startswith(b"250 "), reply


def test_dns_down_is_451_and_the_retry_prints(site, keys, dns):
    msg = signed(keys, GOOD, message("alice@good.test", subject="retry"))
    dns.stop()
    reply = send(site, "x@elsewhere.test", "demo@phaserlink.test", msg)
    assert reply.startswith(b"451 4.7.0 <alice@good.test> cannot be verified for printer demo now, "
                            b"try again later"), reply
    assert stored(site, "demo") == []
    dns.start()
    reply = send(site, "x@elsewhere.test", "demo@phaserlink.test", msg)
    assert reply.startswith(b"250 2.0.0 "), reply
    assert len(stored(site, "demo")) == 1


def test_a_group_prints_where_the_rules_pass(site):
    reply = send(site, "mallory@evil.test", "both@phaserlink.test", message("alice@good.test"))
    assert reply.startswith(b"250 2.0.0 Ok: queued as "), reply
    assert b"not on demo (<alice@good.test> is not authenticated for printer demo" in reply
    assert len(stored(site, "open")) == 1 and stored(site, "demo") == []


def test_loops_are_refused(site):
    s = Session(site)
    s.ehlo()
    s.cmd("MAIL FROM:<>")
    assert s.cmd("RCPT TO:<open@phaserlink.test>") == (
        b"550 5.7.1 <open@phaserlink.test>: a bounce or notification (null reverse-path) is never printed on open\r\n")
    reply = send(site, "robot@good.test", "open@phaserlink.test",
                 message("robot@good.test", extra="Auto-Submitted: auto-replied\r\n"))
    assert reply.startswith(b"550 5.7.1 an automatic message (Auto-Submitted: auto-replied) is never printed on open")
    assert send(site, "human@good.test", "open@phaserlink.test",
                message("human@good.test", extra="Auto-Submitted: no\r\n")).startswith(b"250 ")
    assert len(stored(site, "open")) == 1
    # a pull mailbox is read by its own client, not printed by us: it takes
    # status mail (null sender, Auto-Submitted), e.g. for phaserlink send --wait
    reply = send(site, "", "quota@phaserlink.test", message("postmaster@phaserlink.test",
                                                                extra="Auto-Submitted: auto-generated\r\n"))
    assert reply.startswith(b"250 "), reply


def test_quota_per_sender_is_452_and_survives_a_restart(site, tmp_path):
    for n in range(2):
        assert send(site, "busy@good.test", "quota@phaserlink.test", message("busy@good.test", f"q{n}")) \
            .startswith(b"250 ")
    reply = send(site, "busy@good.test", "quota@phaserlink.test", message("busy@good.test", "q3"))
    assert reply.startswith(b"452 4.7.0 <quota@phaserlink.test>: <busy@good.test> has sent its 2 jobs to quota "
                            b"for now; try again in "), reply
    assert send(site, "other@good.test", "quota@phaserlink.test", message("other@good.test")).startswith(b"250 ")
    # a new server on the same spool (a restart) still counts them
    assert send(site, "busy@good.test", "quota@phaserlink.test", message("busy@good.test", "q4")) \
        .startswith(b"452 4.7.0")
    assert len(stored(site, "quota")) == 3


def arc_sealed(keys, sealer: str, authserv_id: str, msg: bytes) -> bytes:
    """What a mailing list does: verify (here: claim) the original, change
    the body (breaking its DKIM signature), seal the result with ARC."""
    results = f"Authentication-Results: {authserv_id}; dmarc=pass header.from=good.test\r\n".encode()
    changed = msg.replace(b"please print me", b"please print me\r\n-- \r\nthe list footer")
    seal = dkim.arc_sign(results + changed, b"sel", sealer.encode(), keys[sealer][0].read_bytes(),
                         authserv_id.encode())
    return b"".join(seal) + changed  # the list's own A-R line is not passed on


def test_arc_chain_sealed_by_a_trusted_verifier_counts(site, keys):
    msg = signed(keys, GOOD, message("alice@good.test", subject="list"))
    # sealed by other.test as "mx.other.test": not a trusted id
    reply = send(site, "list@other.test", "demo@phaserlink.test", arc_sealed(keys, OTHER, "mx.other.test", msg),
                 peer="192.0.2.20")
    assert reply.startswith(b"550 5.7.26 "), reply
    # a trusted id, but sealed with another domain's key: the id is only text
    reply = send(site, "list@other.test", "demo@phaserlink.test", arc_sealed(keys, OTHER, "mx.site.test", msg),
                 peer="192.0.2.20")
    assert reply.startswith(b"550 5.7.26 "), reply
    assert stored(site, "demo") == []


def test_arc_chain_by_the_trusted_ids_own_domain_prints(tmp_path, dns, keys):
    site = make_site(tmp_path / "arc", f"dns_servers = {dns.address}\ntrusted_authserv_ids = mx.other.test\n",
                     PRINTERS)
    msg = signed(keys, GOOD, message("alice@good.test", subject="list"))
    reply = send(site, "list@other.test", "demo@phaserlink.test", arc_sealed(keys, OTHER, "mx.other.test", msg),
                 peer="192.0.2.20")
    assert reply.startswith(b"250 "), reply
    head = stored(site, "demo")[0].split(b"\n\n")[0].decode()
    assert "dkim=fail" in head and "arc=pass" in head, head


def test_an_authenticated_sender_hears_which_printers_refused(tmp_path, dns, keys):
    sections = PRINTERS + """
[printer:picky]
addresses = picky@phaserlink.test
allowed_senders = boss@good.test
sender_auth = dmarc

[group:team]
address = team@phaserlink.test
members = demo, picky
"""
    site = make_site(tmp_path / "g", f"dns_servers = {dns.address}\n", sections)
    from support.smtp import FakeQueue

    queue = FakeQueue()
    s = Session(site, queue=queue)
    reply = send(site, "x@elsewhere.test", "team@phaserlink.test", signed(keys, GOOD, message("alice@good.test")),
                 session=s)
    assert reply.startswith(b"250 2.0.0 ") and b"not on picky (sender <alice@good.test> is not allowed" in reply
    (mail,) = queue.committed
    assert (mail.mail_from, mail.recipients) == ("", ["alice@good.test"])
    assert "prints on demo, but not on:\n\n    picky: sender <alice@good.test> is not allowed to print on picky" \
        in mail.data.decode()
    # a forger (not authenticated) gets no such mail: the group prints on open only
    queue2 = FakeQueue()
    send(site, "mallory@evil.test", "both@phaserlink.test", message("alice@good.test"), session=Session(site, queue=queue2))
    assert queue2.committed == []
