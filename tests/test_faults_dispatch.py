"""Fault classification in the dispatcher, on a task.Clock (fake tools and
printer): temporary faults hold, document faults abort, a job that keeps
crashing the dispatcher is set aside, given up after max_retry_time with a
status mail, and never wedges its printer (docs/faults.md)."""

from __future__ import annotations

import dataclasses
import errno
import json

import pytest
from support.printer_fakes import Rig, fake_extract, fake_toolkit, make_site, message

from phaserlink.printer import jobs as J
from phaserlink.printer.convert import ConversionError, ConverterFailed, ConverterUnavailable
from phaserlink.printer.dispatch import RETRY_INITIAL, RETRY_MAX
from phaserlink.printer.faults import (
    SCOPE_JOB,
    SCOPE_PRINTER,
    SCOPE_SERVER,
    DocumentFault,
    PermanentFault,
    TemporaryFault,
    classify,
)
from phaserlink.printer.output import PrinterRejected, PrinterUnavailable


def states(rig, name="lp"):
    return {d.name: json.loads((d / "state.json").read_text())
            for d in rig.job_dirs(name) if (d / "state.json").exists()}


class Tools:
    """The fake toolkit, with extraction and conversion that fail on cue."""

    def __init__(self):
        self.crash_on: set[bytes] = set()  # bodies whose extraction raises a bug
        self.convert_failures: list[Exception] = []  # raised in turn, then it works
        self.extract_calls = 0

    def toolkit(self):
        base = fake_toolkit()

        def extract(message_path, out_dir):
            self.extract_calls += 1
            data = message_path.read_bytes()
            if any(marker in data for marker in self.crash_on):
                raise KeyError("a bug in the MIME walker")
            return fake_extract(message_path, out_dir)

        def convert(reactor, src, dst, f, t, **_settings):
            if self.convert_failures:
                from twisted.internet import defer

                return defer.fail(self.convert_failures.pop(0))
            return base.convert(reactor, src, dst, f, t)

        return dataclasses.replace(base, extract=extract, convert=convert,
                                   unprintable=base.unprintable + (ConversionError,))


@pytest.fixture
def tools():
    return Tools()


@pytest.fixture
def rig(tmp_path, tools, monkeypatch):
    r = Rig(tmp_path, make_site(tmp_path))
    import phaserlink.printer.service as service

    real = service.PrinterRunner.__init__

    def init(self, *a, **kw):
        kw["tools"] = tools.toolkit()
        real(self, *a, **kw)

    monkeypatch.setattr(service.PrinterRunner, "__init__", init)
    return r


# -- the classification itself ------------------------------------------------------

@pytest.mark.parametrize("exc, kind, scope", [
    (OSError(errno.ENOSPC, "No space left on device"), TemporaryFault, SCOPE_SERVER),
    (PermissionError(errno.EACCES, "Permission denied"), TemporaryFault, SCOPE_SERVER),
    (PrinterUnavailable("connection refused", "connecting-to-device"), TemporaryFault, SCOPE_PRINTER),
    (ConverterUnavailable("gs is not installed"), TemporaryFault, SCOPE_SERVER),
    (ConverterFailed("gs was killed by signal 9"), TemporaryFault, SCOPE_JOB),
    (RuntimeError("a bug"), TemporaryFault, SCOPE_JOB),
    (ConversionError("Error: /syntaxerror in --runpdf--"), DocumentFault, None),
    (PrinterRejected("queue does not exist", "destination-uri-failed"), PermanentFault, None),
])
def test_each_failure_is_classified_once(exc, kind, scope):
    fault = classify(exc, (ConversionError,))
    assert type(fault) is kind or isinstance(fault, kind)
    if scope is not None:
        assert fault.scope == scope


def test_dns_and_smtp_temporary_refusals_are_temporary():
    from twisted.internet.error import DNSLookupError

    from phaserlink.net.smtp_client import SMTPError

    assert isinstance(classify(DNSLookupError("printer.lan")), TemporaryFault)
    assert isinstance(classify(SMTPError("450 try later", code=450)), TemporaryFault)
    assert isinstance(classify(SMTPError("550 no", code=550, permanent=True)), PermanentFault)


def test_an_extraction_error_caused_by_a_full_disk_is_temporary():
    from phaserlink.message.extract import ExtractError

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/spool/x/docs/01.pdf")
        except OSError as e:
            raise ExtractError(f"attachment 'a.pdf' cannot be written to the spool: {e}",
                               "document-access-error") from None
    except ExtractError as e:
        fault = classify(e, (ExtractError,))
    assert isinstance(fault, TemporaryFault) and fault.holds_queue
    assert "no space left on the print server's disk" in fault.reason


# -- converters that cannot run: held, never blamed on the document ------------------

def test_converter_that_cannot_start_holds_the_job_and_it_prints_once_later(rig, tools):
    tools.convert_failures = [ConverterUnavailable("Ghostscript ('gs') cannot run on the print server (exit 127)")]
    rig.start()
    rig.deliver(message(X_Format="pdf", body=b"%PDF-1.4\n"))
    [state] = states(rig).values()
    assert state["state"] == J.PENDING_HELD and state["reasons"] == ["resources-are-not-ready"]
    assert "cannot run on the print server" in state["detail"]
    assert rig.outputs["lp"].sent == [] and rig.queue.events() == ["received"]
    rig.clock.advance(RETRY_INITIAL)
    [(_job, data)] = rig.outputs["lp"].sent
    assert data.startswith(b"%!converted from pdf")
    assert rig.queue.events() == ["received", "printed"] and rig.job_dirs() == []


def test_a_converter_that_never_works_is_given_up_after_max_retry_time_with_a_clear_mail(rig, tools):
    tools.convert_failures = [ConverterUnavailable("Ghostscript ('gs') is not installed on the print server")] * 100
    rig.start()
    rig.deliver(message(X_Format="pdf", body=b"%PDF-1.4\n"))
    rig.run_for(299)
    assert len(rig.job_dirs()) == 1
    rig.run_for(2)
    assert rig.job_dirs() == [] and rig.outputs["lp"].sent == []
    assert rig.queue.events() == ["received", "delayed", "failed"]
    delayed, failed = rig.queue.messages[1], rig.queue.messages[2]
    assert "PhaserLink cannot print it at the moment: Ghostscript ('gs') is not installed" in delayed.text
    assert failed.field("reasons") == "['aborted-by-system']"  # not document-format-error
    assert "tried for 5 minutes and gave up: Ghostscript ('gs') is not installed" in failed.text


def test_a_killed_conversion_is_set_aside_and_the_next_job_prints_meanwhile(rig, tools):
    tools.convert_failures = [ConverterFailed("Ghostscript was killed by signal 9 while converting pdf to postscript")]
    rig.start()
    rig.deliver(message(msgid="<1@x>", X_Format="pdf", body=b"%PDF-1.4\none"))
    rig.deliver(message(msgid="<2@x>", body=b"%!PS two"))
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS two"]
    [held] = states(rig).values()
    assert held["state"] == J.PENDING_HELD and "killed by signal 9" in held["detail"]
    rig.clock.advance(RETRY_INITIAL)
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS two", b"%!converted from pdf\n%PDF-1.4\none"]
    assert rig.queue.events().count("printed") == 2 and "failed" not in rig.queue.events()


def test_a_document_the_converter_rejects_is_aborted_with_its_words(rig, tools):
    tools.convert_failures = [ConversionError("cannot convert this pdf document to postscript: "
                                              "Error: /syntaxerror in --runpdf--")]
    rig.start()
    rig.deliver(message(X_Format="pdf", body=b"%PDF-1.4\n"))
    assert rig.job_dirs() == [] and rig.outputs["lp"].sent == []
    mail = rig.queue.messages[-1]
    assert mail.field("event") == "failed" and mail.field("reasons") == "['document-format-error']"
    assert "Error: /syntaxerror in --runpdf--" in mail.text


# -- the crash wedge (item 9) ------------------------------------------------------------

def test_a_crashing_job_does_not_wedge_its_printer_and_is_given_up_with_a_mail(rig, tools):
    tools.crash_on = {b"CRASH"}
    rig.start()
    rig.deliver(message(msgid="<bad@x>", subject="Bad", body=b"%!PS CRASH"))
    rig.deliver(message(msgid="<good@x>", subject="Good", body=b"%!PS good"))
    # The next job is printed at once, not 600 s later behind the crashing one.
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS good"]
    [held] = states(rig).values()
    assert held["state"] == J.PENDING_HELD and "internal error" in held["detail"]
    calls = tools.extract_calls
    rig.run_for(60)
    # Retried with back-off (5, 10, 20 s ...), not every 600 s and not in a spin.
    assert 2 <= tools.extract_calls - calls <= 5
    rig.deliver(message(msgid="<later@x>", subject="Later", body=b"%!PS later"))
    assert [d for _j, d in rig.outputs["lp"].sent][-1] == b"%!PS later"
    rig.run_for(300)
    assert rig.job_dirs() == []  # given up after max_retry_time (300 s)
    assert b"%!PS CRASH" not in [d for _j, d in rig.outputs["lp"].sent]
    failed = [m for m in rig.queue.messages if m.field("event") == "failed"]
    assert len(failed) == 1
    assert failed[0].field("state") == "aborted" and failed[0].field("reasons") == "['aborted-by-system']"
    assert "an internal error happened in PhaserLink" in failed[0].text
    assert len([m for m in rig.queue.messages if m.field("event") == "printed"]) == 2


def test_a_bug_in_the_output_is_not_a_send_twice_loop(rig, tools):
    rig.start(lp="ok")
    out = rig.outputs["lp"]
    real_send = out.send
    calls = []

    def send(job):
        calls.append(rig.clock.seconds())
        if len(calls) == 1:
            raise AttributeError("'NoneType' object has no attribute 'write'")
        return real_send(job)

    out.send = send
    rig.deliver(message(msgid="<a@x>", body=b"%!PS a"))
    rig.deliver(message(msgid="<b@x>", body=b"%!PS b"))
    assert [d for _j, d in out.sent] == [b"%!PS b"]
    rig.clock.advance(RETRY_INITIAL)
    assert [d for _j, d in out.sent] == [b"%!PS b", b"%!PS a"]
    assert rig.queue.events().count("printed") == 2


def test_a_state_save_that_fails_after_delivery_does_not_print_twice(rig, tools, monkeypatch):
    rig.start()
    spool = rig.runner().spool
    real_save = spool.save
    failures = []

    def save(job):
        if job.state == J.COMPLETED and not failures:
            failures.append(job.job_id)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(job)

    monkeypatch.setattr(spool, "save", save)
    rig.deliver(message(body=b"%!PS once"))
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS once"]
    rig.run_for(RETRY_MAX + 10)
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS once"]  # not sent again
    assert rig.job_dirs() == [] and rig.queue.events() == ["received", "printed"]


def test_a_journal_that_cannot_be_written_after_printing_neither_resends_nor_delays(rig, tools, monkeypatch):
    rig.start()
    spool = rig.runner().spool
    real_remove = spool.remove
    failures = []

    def remove(job_id, *args, seen=(), **kw):
        # The "done" record and the removal are one spool call: fail it twice.
        if any(r.get("k") == "done" for r in seen) and len(failures) < 2:
            failures.append(job_id)
            return defer.fail(OSError(errno.ENOSPC, "No space left on device"))
        return real_remove(job_id, *args, seen=seen, **kw)

    monkeypatch.setattr(spool, "remove", remove)
    rig.deliver(message(body=b"%!PS once"))
    rig.run_for(RETRY_MAX)
    assert failures, "the done record was never written"
    assert [d for _j, d in rig.outputs["lp"].sent] == [b"%!PS once"]
    assert rig.job_dirs() == []
    events = rig.queue.events()
    assert "delayed" not in events and "failed" not in events and events.count("printed") >= 1


def test_a_job_whose_record_is_unreadable_is_left_for_a_human_and_the_queue_goes_on(rig, tools):
    rig.start(lp="hang")
    rig.deliver(message(msgid="<a@x>", body=b"%!PS a"))
    rig.deliver(message(msgid="<b@x>", body=b"%!PS b"))
    rig.deliver(message(msgid="<c@x>", body=b"%!PS c"))
    out = rig.outputs["lp"]
    # While a is being sent, b's record is damaged on disk.
    [b] = [d for d in rig.job_dirs() if json.loads((d / "state.json").read_text())["message_id"] == "<b@x>"]
    (b / "state.json").write_text("{not json")
    out.mode = "ok"
    out.finish()
    rig.settle()
    assert [d for _j, d in out.sent] == [b"%!PS a", b"%!PS c"]
    assert b.exists()  # left for a human, not deleted, not retried in a loop
    rig.run_for(60)
    assert [d for _j, d in out.sent] == [b"%!PS a", b"%!PS c"]
