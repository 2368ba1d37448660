"""Status mail: a standard multipart/report that we can also read back."""

from __future__ import annotations

import email
import email.policy
import io
from datetime import datetime, timezone
from pathlib import Path

from phaserlink.message.report import parse_status_report, write_status_report
from support.message_samples import email_bytes, python_email_with_attachments

WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def report(**kw) -> bytes:
    args = dict(
        from_="PhaserLink <lp@print.example>", to="ann@example.org", printer="lp", job_id="J-1",
        state="completed", reasons=("job-completed-successfully",), event="printed", pages=3,
        original_message_id="<job1@example.org>", human_text="Your job was printed: 3 pages.",
        date=WHEN, message_id="<r1@print.example>", extra_fields={"X-PhaserLink-Queue": "lp"},
    )
    args.update(kw)
    out = io.BytesIO()
    write_status_report(out, **args)
    return out.getvalue()


def test_python_email_sees_a_standard_report() -> None:
    data = report()
    assert b"\r" not in data
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.defects == []
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Subject"] == "[PhaserLink] job J-1 on printer lp: printed"
    assert msg["In-Reply-To"] == "<job1@example.org>"
    text, mdn = list(msg.iter_parts())
    assert text.get_content_type() == "text/plain"
    assert text.get_content() == "Your job was printed: 3 pages.\n"
    assert mdn.get_content_type() == "message/disposition-notification"
    fields = mdn.get_payload()[0]  # email parses the notification as a header block
    assert fields["Disposition"] == "automatic-action/MDN-sent-automatically; processed"
    assert fields["Final-Recipient"] == "rfc822; lp@print.example"
    assert fields["Original-Message-ID"] == "<job1@example.org>"
    assert fields["Reporting-UA"] == "lp; PhaserLink"
    assert fields["X-PhaserLink-Job-State"] == "completed"


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.eml"
    path.write_bytes(report())
    r = parse_status_report(path)
    assert r is not None
    assert (r.job_id, r.printer, r.state, r.reasons, r.event, r.pages) == (
        "J-1", "lp", "completed", ("job-completed-successfully",), "printed", 3,
    )
    assert (r.original_message_id, r.final_recipient, r.message_id) == (
        "<job1@example.org>", "lp@print.example", "<r1@print.example>",
    )
    assert r.human_text == "Your job was printed: 3 pages.\n"
    assert r.extra == {"X-PhaserLink-Queue": "lp"}
    assert r.subject == "[PhaserLink] job J-1 on printer lp: printed"


def test_failure_non_ascii_text_and_several_reasons() -> None:
    text = "Der Auftrag ist fehlgeschlagen — ungültiges base64 in 'Bericht.pdf'.\nZeile 2"
    data = report(state="aborted", reasons=("document-format-error", "job-aborted-by-system"),
                  event="failed", pages=None, human_text=text)
    assert data.isascii()  # quoted-printable, safe for any relay
    r = parse_status_report(data)
    assert r is not None
    assert r.disposition == "automatic-action/MDN-sent-automatically; processed/error"
    assert r.reasons == ("document-format-error", "job-aborted-by-system") and r.pages is None
    assert r.human_text == text + "\n"
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert list(msg.iter_parts())[0].get_content() == text + "\n"


def test_not_ours_is_none() -> None:
    assert parse_status_report(email_bytes(python_email_with_attachments())) is None
    other_mdn = (
        b'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\n\n'
        b"--b\n\nread\n--b\nContent-Type: message/disposition-notification\n\n"
        b"Final-Recipient: rfc822; x@y\nDisposition: manual-action/MDN-sent-manually; displayed\n--b--\n"
    )
    assert parse_status_report(other_mdn) is None
    assert parse_status_report(b"") is None
