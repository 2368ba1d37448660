"""The IPP output (phaserlink/printer/output/ipp.py) and client
(phaserlink/net/ipp_client.py): against a real ippeveprinter, and against a
scripted in-process printer (twisted.web) for the answers ippeveprinter
cannot be made to give (busy, aborted with a message, HTTP errors), and
for ipps:// with the test CA."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, ssl
from twisted.web import resource, server

from phaserlink.net import ipp_codec as codec
from phaserlink.net.ipp_codec import Delimiter, Group, Message, Tag, attr
from phaserlink.printer.output import OutputJob, PrinterRejected, PrinterUnavailable, make_output
from phaserlink.printer.output.ipp import IExactlyOnceOutput, job_name
from support.ippeveprinter import IppEvePrinter
from support.peers import free_port


def reactor():
    from twisted.internet import reactor as r

    return r


def pdf(path: Path, pages: int = 2, padding: int = 0) -> Path:
    """A small PDF with *pages* pages (the completion script counts /Type /Page)."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs = [b"1 0 obj<</Type /Catalog /Pages 2 0 R>>endobj\n",
            f"2 0 obj<</Type /Pages /Kids [{kids}] /Count {pages}>>endobj\n".encode()]
    objs += [f"{3 + i} 0 obj<</Type /Page /Parent 2 0 R /MediaBox [0 0 595 842]>>endobj\n".encode()
             for i in range(pages)]
    path.write_bytes(b"%PDF-1.4\n" + b"".join(objs) + b"%" + b"x" * padding + b"\ntrailer<</Root 1 0 R>>\n%%EOF\n")
    return path


def job_for(path: Path, **kw) -> OutputJob:
    kw.setdefault("job_id", "20261201-0001")
    return OutputJob(path=path, title=kw.pop("title", "report.pdf"), user="alice", host="appliance",
                     format=kw.pop("format", "application/pdf"), **kw)


@pytest.fixture
def printer(tmp_path):
    p = IppEvePrinter(tmp_path / "ippeve").start()
    yield p
    p.close()


def output_for(uri: str, **kw):
    out = make_output(uri, reactor=reactor(), **kw)
    out.poll_interval = 0.1
    return out


# -- a real IPP Everywhere printer ----------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_pdf_arrives_byte_identical_and_completes_with_the_page_count(printer, tmp_path):
    doc = pdf(tmp_path / "report.pdf", pages=3)
    out = output_for(printer.uri)
    recorded = []

    def record(token):
        # The id is recorded before a byte of the document reaches the printer.
        recorded.append((token, list(printer.documents())))

    result = yield out.send(job_for(doc), record=record)
    assert result.pages == 3
    assert "completed" in result.acknowledged and printer.uri in result.acknowledged
    docs = printer.wait_documents(1)
    assert docs[0].read_bytes() == doc.read_bytes()
    assert recorded == [("1", [])]
    assert "application/pdf" in out.formats
    assert IExactlyOnceOutput.providedBy(out)


@pytest_twisted.inlineCallbacks
def test_a_completed_job_from_an_earlier_attempt_is_not_sent_again(printer, tmp_path):
    doc = pdf(tmp_path / "report.pdf", pages=2)
    out = output_for(printer.uri)
    tokens = []
    yield out.send(job_for(doc), record=tokens.append)
    # A crash after the job was created: the spool has the token; the new
    # appliance asks first.
    again = yield output_for(printer.uri).send(job_for(doc), previous=tokens[0])
    assert again.pages == 2 and "as job 1" in again.acknowledged
    assert len(printer.documents()) == 1


@pytest_twisted.inlineCallbacks
def test_a_job_created_but_never_given_its_document_is_canceled_and_sent_again(printer, tmp_path):
    from phaserlink.net.ipp_client import IPPClient

    doc = pdf(tmp_path / "report.pdf", pages=1)
    job = job_for(doc)
    orphan = yield defer.ensureDeferred(IPPClient(reactor(), printer.uri).create_job(
        job_name=job_name(job), user="alice"))
    result = yield output_for(printer.uri).send(job, previous=str(orphan.job_id))
    assert f"as job {orphan.job_id + 1}" in result.acknowledged
    assert [d.read_bytes() for d in printer.wait_documents(1)] == [doc.read_bytes()]


@pytest_twisted.inlineCallbacks
def test_a_recorded_id_that_is_now_another_job_is_sent_again(printer, tmp_path):
    first = pdf(tmp_path / "other.pdf", pages=1)
    yield output_for(printer.uri).send(job_for(first, job_id="someone-else", title="other"))
    mine = pdf(tmp_path / "mine.pdf", pages=2)
    # The printer restarted and reused id 1 for someone else's job.
    result = yield output_for(printer.uri).send(job_for(mine), previous="1")
    assert "as job 2" in result.acknowledged
    assert printer.wait_documents(2)[1].read_bytes() == mine.read_bytes()


@pytest_twisted.inlineCallbacks
def test_copies_reach_the_printer(printer, tmp_path):
    doc = pdf(tmp_path / "report.pdf", pages=1)
    yield output_for(printer.uri).send(job_for(doc, copies=2))
    env = printer.environment(printer.wait_documents(1)[0])
    assert env.get("IPP_COPIES") == "2"


@pytest_twisted.inlineCallbacks
def test_a_format_the_printer_does_not_take_is_refused_with_its_list(tmp_path):
    p = IppEvePrinter(tmp_path / "raster", formats="image/pwg-raster").start()
    try:
        with pytest.raises(PrinterRejected) as e:
            yield output_for(p.uri).send(job_for(pdf(tmp_path / "x.pdf")))
        assert e.value.ipp_reason == "document-format-error"
        assert "image/pwg-raster" in e.value.reason and p.documents() == []
    finally:
        p.close()


@pytest_twisted.inlineCallbacks
def test_a_printer_that_is_gone_is_unavailable(tmp_path):
    with pytest.raises(PrinterUnavailable) as e:
        yield output_for(f"ipp://127.0.0.1:{free_port()}/ipp/print").send(job_for(pdf(tmp_path / "x.pdf")))
    assert e.value.ipp_reason == "connecting-to-device"
    assert "refused" in e.value.reason


@pytest_twisted.inlineCallbacks
def test_a_printer_that_hangs_is_unavailable_after_the_timeout(printer, tmp_path):
    printer.pause()  # SIGSTOP: connections succeed, nothing answers
    try:
        with pytest.raises(PrinterUnavailable) as e:
            yield output_for(printer.uri, timeout=1.0).send(job_for(pdf(tmp_path / "x.pdf")))
        assert e.value.ipp_reason == "timed-out"
    finally:
        printer.resume()


@pytest_twisted.inlineCallbacks
def test_a_large_document_streams_without_growing_memory(printer, tmp_path):
    doc = pdf(tmp_path / "big.pdf", pages=1, padding=40 * 1024 * 1024)
    tracemalloc.start()
    try:
        yield output_for(printer.uri).send(job_for(doc))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak Python allocation {peak} bytes for a 40 MB job"
    assert printer.wait_documents(1)[0].stat().st_size == doc.stat().st_size


# -- a scripted printer: answers ippeveprinter cannot be made to give ------------------

class ScriptedPrinter(resource.Resource):
    """Answers each IPP operation from *script* (operation-id -> callable
    returning (status, groups)); records the requests."""

    isLeaf = True

    def __init__(self, script):
        super().__init__()
        self.script = script
        self.requests: list[Message] = []

    def render_POST(self, request):
        data = request.content.read()
        message = codec.decode(data)
        self.requests.append(message)
        answer = self.script.get(message.code)
        if answer is None:
            status, groups = 0x0501, []
        else:
            status, groups = answer(message)
        if status == "http-503":
            request.setResponseCode(503)
            return b"busy"
        ops = Group(Delimiter.OPERATION, (attr("attributes-charset", Tag.CHARSET, "utf-8"),
                                          attr("attributes-natural-language", Tag.NATURAL_LANGUAGE, "en")))
        request.setHeader(b"content-type", b"application/ipp")
        return codec.encode(Message(status, message.request_id, (ops, *groups)))


def printer_group(state=3, accepting=True, reasons=("none",)):
    return Group(Delimiter.PRINTER, (
        attr("printer-state", Tag.ENUM, state),
        attr("printer-state-reasons", Tag.KEYWORD, *reasons),
        attr("printer-is-accepting-jobs", Tag.BOOLEAN, accepting),
        attr("operations-supported", Tag.ENUM, 2, 5, 6, 8, 9, 11),
        attr("document-format-supported", Tag.MIME_MEDIA_TYPE, "application/pdf"),
    ))


def job_group(job_id=7, state=3, reasons=("none",), message=None, impressions=None):
    attrs = [attr("job-id", Tag.INTEGER, job_id), attr("job-state", Tag.ENUM, state),
             attr("job-state-reasons", Tag.KEYWORD, *reasons)]
    if message:
        attrs.append(attr("job-state-message", Tag.TEXT, message))
    if impressions is not None:
        attrs.append(attr("job-impressions-completed", Tag.INTEGER, impressions))
    return Group(Delimiter.JOB, tuple(attrs))


@pytest.fixture
def scripted():
    started = []

    def start(script, tls=None):
        fake = ScriptedPrinter(script)
        site = server.Site(fake)
        if tls is None:
            port = reactor().listenTCP(0, site, interface="127.0.0.1")
            uri = f"ipp://127.0.0.1:{port.getHost().port}/ipp/print"
        else:
            port = reactor().listenSSL(0, site, tls, interface="127.0.0.1")
            uri = f"ipps://localhost:{port.getHost().port}/ipp/print"
        started.append(port)
        return fake, uri

    yield start
    for port in started:
        port.stopListening()


def ok_printer(**kw):
    return {0x000B: lambda m: (0, [printer_group(**kw)])}


@pytest.mark.parametrize("kw, words", [
    ({"state": 5, "reasons": ("paused",)}, "is stopped (printer-state-reasons: paused)"),
    ({"accepting": False}, "is not accepting jobs"),
])
@pytest_twisted.inlineCallbacks
def test_a_stopped_printer_holds_the_job(scripted, tmp_path, kw, words):
    fake, uri = scripted(ok_printer(**kw))
    with pytest.raises(PrinterUnavailable) as e:
        yield output_for(uri).send(job_for(pdf(tmp_path / "x.pdf")))
    assert e.value.ipp_reason == "printer-stopped" and words in e.value.reason
    assert [m.code for m in fake.requests] == [0x000B]


@pytest_twisted.inlineCallbacks
def test_server_error_busy_holds_the_job(scripted, tmp_path):
    script = ok_printer()
    script[0x0005] = lambda m: (0x0507, [])
    fake, uri = scripted(script)
    with pytest.raises(PrinterUnavailable) as e:
        yield output_for(uri).send(job_for(pdf(tmp_path / "x.pdf")))
    assert e.value.ipp_reason == "printer-stopped" and "server-error-busy" in e.value.reason


@pytest_twisted.inlineCallbacks
def test_an_http_503_holds_the_job(scripted, tmp_path):
    _, uri = scripted({0x000B: lambda m: ("http-503", [])})
    with pytest.raises(PrinterUnavailable) as e:
        yield output_for(uri).send(job_for(pdf(tmp_path / "x.pdf")))
    assert "HTTP 503" in e.value.reason


@pytest_twisted.inlineCallbacks
def test_an_http_404_fails_the_job(tmp_path):
    port = reactor().listenTCP(0, server.Site(resource.Resource()), interface="127.0.0.1")  # all 404
    try:
        with pytest.raises(PrinterRejected) as e:
            yield output_for(f"ipp://127.0.0.1:{port.getHost().port}/ipp/print").send(
                job_for(pdf(tmp_path / "x.pdf")))
        assert "HTTP 404" in e.value.reason and e.value.ipp_reason == "destination-uri-failed"
    finally:
        yield port.stopListening()


@pytest.mark.parametrize("state, name", [(8, "aborted"), (7, "canceled")])
@pytest_twisted.inlineCallbacks
def test_a_job_aborted_at_the_printer_fails_with_its_reasons_and_message(scripted, tmp_path, state, name):
    polls = []

    def gja(m):
        polls.append(m)
        if len(polls) < 3:
            return 0, [job_group(state=5, reasons=("job-printing",))]
        return 0, [job_group(state=state, reasons=("aborted-by-system", "document-format-error"),
                             message="PDF is damaged")]

    script = ok_printer()
    script[0x0005] = lambda m: (0, [job_group(state=4, reasons=("job-incoming",))])
    script[0x0006] = lambda m: (0, [job_group(state=3)])
    script[0x0009] = gja
    fake, uri = scripted(script)
    with pytest.raises(PrinterRejected) as e:
        yield output_for(uri).send(job_for(pdf(tmp_path / "x.pdf")))
    assert e.value.reason == (f"the IPP printer {uri} {name} job 7 (job-state-reasons: aborted-by-system, "
                              "document-format-error): PDF is damaged")
    assert e.value.ipp_reason == "document-format-error"
    assert len(polls) == 3


@pytest_twisted.inlineCallbacks
def test_a_printer_without_create_job_gets_print_job(scripted, tmp_path):
    group = printer_group()
    group = Group(Delimiter.PRINTER, tuple(a if a.name != "operations-supported"
                                           else attr("operations-supported", Tag.ENUM, 2, 9, 11)
                                           for a in group.attributes))
    script = {0x000B: lambda m: (0, [group]),
              0x0002: lambda m: (0, [job_group(job_id=3, state=9, impressions=4)])}
    fake, uri = scripted(script)
    tokens = []
    result = yield output_for(uri).send(job_for(pdf(tmp_path / "x.pdf")), record=tokens.append)
    assert result.pages == 4 and tokens == ["3"]
    assert [m.code for m in fake.requests] == [0x000B, 0x0002]


@pytest_twisted.inlineCallbacks
def test_ipps_verifies_the_printer_against_output_ca(scripted, tmp_path, test_ca):
    issued = test_ca.issue("localhost")
    from phaserlink.tls import server_options
    from phaserlink.config import TLSFiles

    tls = server_options(TLSFiles(certificate=str(issued.certificate), key=str(issued.key)))
    script = ok_printer()
    script[0x0005] = lambda m: (0, [job_group(state=4)])
    script[0x0006] = lambda m: (0, [job_group(state=9, impressions=1)])
    fake, uri = scripted(script, tls=tls)
    result = yield output_for(uri, ca_file=issued.ca).send(job_for(pdf(tmp_path / "x.pdf")))
    assert result.pages == 1
    # Not trusted without the CA: held (no byte of the job was sent).
    count = len(fake.requests)
    with pytest.raises(PrinterUnavailable) as e:
        yield output_for(uri).send(job_for(pdf(tmp_path / "y.pdf")))
    assert "TLS" in e.value.reason and len(fake.requests) == count
    # output_tls = none: encrypted, not verified.
    result = yield output_for(uri, tls="none").send(job_for(pdf(tmp_path / "z.pdf")))
    assert result.pages == 1


def test_bad_ipp_uris_are_refused_at_start():
    for uri in ("ipp://", "ipp://host:port/x", "ipp://h/p?q=1"):
        with pytest.raises(ValueError):
            make_output(uri, reactor=reactor())
