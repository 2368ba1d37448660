"""message/partial: our split, reassembly of ours and others' fragments."""

from __future__ import annotations

import email
import email.policy
import random
import subprocess
from pathlib import Path

import pytest

from phaserlink.message.build import write_job_message
from phaserlink.message.extract import extract_documents, job_request_of
from phaserlink.message.mime import read_headers
from phaserlink.message.partial import (
    PartialError,
    PartialInfo,
    check_complete,
    read_fragment,
    reassemble,
    split_message,
)
from support.message_samples import pdf_bytes, ps_bytes
from support.peers import require_program


def job(tmp_path: Path, data: bytes, fmt: str = "pdf", name: str = "job.eml") -> Path:
    src = tmp_path / f"{name}.data"
    src.write_bytes(data)
    path = tmp_path / name
    with open(path, "wb") as f:
        write_job_message(
            f, src, sender="Ann <ann@example.org>", recipient="lp@print.example",
            title="Quarterly report", format=fmt, filename=f"r.{fmt}", copies=2,
            notify=("printed",), job_id="J-7", message_id="<job7@example.org>",
        )
    return path


def test_fits_exactly_is_not_split(tmp_path: Path) -> None:
    path = job(tmp_path, pdf_bytes(5000))
    assert split_message(path, path.stat().st_size, tmp_path) == [path]
    assert not list(tmp_path.glob("fragment-*"))


@pytest.mark.parametrize("over", [1, 2, 77, 5000])
def test_just_over_the_limit_splits_and_reassembles_byte_identical(tmp_path: Path, over: int) -> None:
    path = job(tmp_path, pdf_bytes(20000))
    limit = path.stat().st_size - over
    (tmp_path / "f").mkdir()
    frags = split_message(path, limit, tmp_path / "f")
    assert len(frags) == 2
    assert all(f.stat().st_size <= limit for f in frags)
    reassemble(frags[::-1], tmp_path / "back.eml")
    assert (tmp_path / "back.eml").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_fragments_shuffled(tmp_path: Path, seed: int) -> None:
    pdf = pdf_bytes(120_000, seed=seed)
    path = job(tmp_path, pdf)
    limit = 5000 + seed * 1111
    (tmp_path / "f").mkdir()
    frags = split_message(path, limit, tmp_path / "f")
    total = len(frags)
    assert total >= 20
    infos = []
    for n, frag in enumerate(frags, 1):
        assert frag.stat().st_size <= limit
        headers, info = read_fragment(frag)
        assert info == PartialInfo("job7@example.org", n, total)  # total on every fragment
        assert headers.get("Subject") == f"Quarterly report (part {n} of {total})"
        assert headers.get("From") == "Ann <ann@example.org>" and headers.get("To") == "lp@print.example"
        assert headers.get("Date") and headers.get("MIME-Version") == "1.0"
        assert headers.get("X-PhaserLink-Job-Id") == "J-7"
        assert headers.get("Content-Transfer-Encoding") == "7bit"
        infos.append(headers.get("Message-ID"))
        # every fragment except the last ends at a line boundary
        assert n == total or frag.read_bytes().endswith(b"\n")
    assert len(set(infos)) == total and "<job7@example.org>" not in infos
    # fragment 1 carries our fields outside (they survive RFC 2046 merging)
    first = read_fragment(frags[0])[0]
    assert first.get("X-PhaserLink-Copies") == "2" and first.get("X-PhaserLink-Title") == "Quarterly report"
    shuffled = frags[:]
    random.Random(seed).shuffle(shuffled)
    reassemble(shuffled, tmp_path / "back.eml")
    assert (tmp_path / "back.eml").read_bytes() == path.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    [doc] = extract_documents(tmp_path / "back.eml", out)
    assert doc.path.read_bytes() == pdf


def test_python_email_reads_our_fragment(tmp_path: Path) -> None:
    path = job(tmp_path, pdf_bytes(30000))
    frags = split_message(path, 10000, tmp_path)
    msg = email.message_from_bytes(frags[0].read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "message/partial"
    assert msg.get_param("id") == "job7@example.org"
    assert msg.get_param("number") == "1" and msg.get_param("total") == str(len(frags))


def test_split_refuses_what_cannot_be_done(tmp_path: Path) -> None:
    path = job(tmp_path, pdf_bytes(20000))
    header_size = path.read_bytes().index(b"\n\n") + 2
    with pytest.raises(ValueError, match="too small for the message header"):
        split_message(path, header_size + 200, tmp_path)
    with pytest.raises(ValueError, match="no room after the fragment's own header"):
        split_message(path, 200, tmp_path)
    eight = tmp_path / "8bit.eml"
    eight.write_bytes(b"Subject: x\nContent-Transfer-Encoding: 8bit\n\n" + "Grüße\n".encode() * 3000)
    with pytest.raises(ValueError, match="needs a 7bit message"):
        split_message(eight, 5000, tmp_path)
    assert not list(tmp_path.glob("fragment-*"))  # nothing left behind


def test_incomplete_or_mixed_sets_are_refused(tmp_path: Path) -> None:
    path = job(tmp_path, pdf_bytes(30000))
    (tmp_path / "a").mkdir()
    frags = split_message(path, 8000, tmp_path / "a")
    with pytest.raises(PartialError, match=r"fragment\(s\) \[2\] missing"):
        reassemble([frags[0]] + frags[2:], tmp_path / "x.eml")
    # a redelivered fragment (same number, same body) counts once ...
    reassemble(frags + [frags[1]], tmp_path / "x.eml")
    assert (tmp_path / "x.eml").read_bytes() == path.read_bytes()
    # ... but two different bodies under one number cannot be told apart
    changed = tmp_path / "changed.2"
    changed.write_bytes(frags[1].read_bytes()[:-5] + b"XXXX\n")
    with pytest.raises(PartialError, match="more than once"):
        reassemble(frags + [changed], tmp_path / "x.eml")
    (tmp_path / "b").mkdir()
    other = split_message(path, 8000, tmp_path / "b", id="other@x")
    with pytest.raises(PartialError, match="different messages"):
        reassemble(frags[:1] + other[1:], tmp_path / "x.eml")
    with pytest.raises(PartialError, match="not a message/partial"):
        reassemble([path], tmp_path / "x.eml")
    assert check_complete([PartialInfo("i", 1, None), PartialInfo("i", 2, None)]) == [3]
    assert check_complete([PartialInfo("i", 1, None), PartialInfo("i", 3, 3)]) == [2]


def test_partial_info_garbage_is_none(tmp_path: Path) -> None:
    import io

    def info(ct: str):
        return PartialInfo.from_headers(read_headers(io.BytesIO(f"Content-Type: {ct}\n\n".encode())))

    assert info('message/partial; id="a"; number=2; total=3') == PartialInfo("a", 2, 3)
    assert info('message/partial; id="a"; number=2') == PartialInfo("a", 2, None)
    assert info('message/partial; id="a"; number=x; total=3') is None
    assert info('message/partial; id="a"; number=4; total=3') is None
    assert info('message/partial; number=1; total=3') is None
    assert info("text/plain") is None


def test_foreign_fragments_crlf_total_only_on_last_rfc_header_merge(tmp_path: Path) -> None:
    """Fragments as another mailer writes them (the RFC 2046 5.2.2.1 example
    shape): CRLF, total only on the last, enclosing and enclosed headers
    differing; the merge keeps outer fields except Content-*/Subject/
    Message-ID/Encrypted/MIME-Version, which come from inside."""
    ps = ps_bytes()
    inner = (
        "Subject: Audio mail\r\nMessage-ID: <id1@host.com>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: application/postscript\r\nX-Dropped: inner only\r\n\r\n"
    ).encode() + ps.replace(b"\n", b"\r\n")
    cut = [0, len(inner) // 3, 2 * len(inner) // 3, len(inner)]
    cut = [0] + [inner.index(b"\r\n", c) + 2 for c in cut[1:-1]] + [len(inner)]
    frags = []
    for n in range(3):
        total = "; total=3" if n == 2 else ""
        head = (
            "X-Weird-Header-1: Foo\r\nFrom: Bill@host.com\r\nTo: joe@otherhost.com\r\n"
            f"Subject: Audio mail (part {n + 1} of 3)\r\nMessage-ID: <id{n + 2}@host.com>\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: message/partial;\r\n\tid="ABC@host.com"; number={n + 1}{total}\r\n\r\n'
        ).encode()
        path = tmp_path / f"foreign.{n + 1}"
        path.write_bytes(head + inner[cut[n] : cut[n + 1]])
        frags.append(path)
    assert [read_fragment(f)[1].total for f in frags] == [None, None, 3]
    out = tmp_path / "whole.eml"
    reassemble([frags[2], frags[0], frags[1]], out)
    whole = out.read_bytes()
    head, body = whole.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"X-Weird-Header-1: Foo",
        b"From: Bill@host.com",
        b"To: joe@otherhost.com",
        b"Subject: Audio mail",
        b"Message-ID: <id1@host.com>",
        b"MIME-Version: 1.0",
        b"Content-Type: application/postscript",
    ]
    assert body == ps.replace(b"\n", b"\r\n")
    (tmp_path / "out").mkdir()
    [doc] = extract_documents(out, tmp_path / "out")
    assert doc.format == "postscript"


@pytest.mark.parametrize("kind", ["pdf", "ps"])
def test_mpack_fragments_shuffled_reassemble_to_exact_bytes(tmp_path: Path, kind: str) -> None:
    mpack = require_program("mpack")
    data = pdf_bytes(150_000, seed=9) if kind == "pdf" else ps_bytes(6000)
    src = tmp_path / f"document.{kind}"
    src.write_bytes(data)
    subprocess.run(
        [mpack, "-s", "Print me", "-m", "40000", "-o", str(tmp_path / "frag"), str(src)],
        check=True, cwd=tmp_path, capture_output=True, timeout=30,
    )
    frags = sorted(tmp_path.glob("frag.*"))
    assert len(frags) >= 3  # really fragmented
    infos = [read_fragment(f)[1] for f in frags]
    assert [i.number for i in infos] == list(range(1, len(frags) + 1))
    assert {i.total for i in infos} == {len(frags)}
    random.Random(kind).shuffle(frags)
    whole = tmp_path / "whole.eml"
    reassemble(frags, whole)
    assert job_request_of(whole).title == "Print me"
    out = tmp_path / "out"
    out.mkdir()
    [doc] = extract_documents(whole, out)
    if kind == "pdf":
        assert doc.content_type == "application/octet-stream"  # mpack's label
    assert doc.format == ("pdf" if kind == "pdf" else "postscript")
    assert doc.filename == src.name
    assert doc.path.read_bytes() == data


def _fragment(path: Path, pid: str, n: int, total: int, body: bytes, outer: bytes = b"") -> Path:
    path.write_bytes(
        outer + f"Subject: PS (part {n} of {total})\nMessage-ID: <p{n}@example.org>\nMIME-Version: 1.0\n"
        f'Content-Type: message/partial; id="{pid}"; number={n}; total={total}\n\n'.encode() + body
    )
    return path


def test_fragment_1_ending_inside_the_enclosed_header_prints_postscript(tmp_path: Path) -> None:
    """Issue 7 item 5: fragment 1 ends after MIME-Version, before the
    enclosed Content-Type.  The reassembled message used to get a blank
    line there, so the PostScript became the text body of a text/plain
    message and printed as a listing of its source."""
    ps = ps_bytes()
    original = (
        b"From: Ann <ann@example.org>\nTo: lp@print.example\nSubject: PS job\n"
        b"Message-ID: <ps1@example.org>\nMIME-Version: 1.0\n"
        b"Content-Type: application/postscript\nContent-Transfer-Encoding: 7bit\n\n" + ps
    )
    cut = original.index(b"Content-Type:")
    outer = b"From: Ann <ann@example.org>\nTo: lp@print.example\n"
    f1 = _fragment(tmp_path / "f.1", "ps1", 1, 2, original[:cut], outer)
    f2 = _fragment(tmp_path / "f.2", "ps1", 2, 2, original[cut:], outer)
    whole = tmp_path / "whole.eml"
    reassemble([f2, f1], whole)
    assert whole.read_bytes() == original
    (tmp_path / "out").mkdir()
    [doc] = extract_documents(whole, tmp_path / "out")
    assert doc.format == "postscript" and doc.path.read_bytes() == ps


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_every_cut_in_the_enclosed_header_reassembles_exactly(tmp_path: Path, newline: bytes) -> None:
    """Any split point: between fields, inside a field name, inside a folded
    value, between the CR and the LF, on the empty line, just after it."""
    ps = ps_bytes(300).replace(b"\n", newline)
    head = [b"Subject: PS job", b"Message-ID: <ps2@example.org>", b"MIME-Version: 1.0",
            b"Content-Type: application/postscript;", b"\tname=\"job.ps\"", b""]
    original = newline.join(head) + newline + ps
    end = original.index(b"%!PS") + 3
    for cut in range(0, end):
        parts = [original[:cut], original[cut:]]
        frags = [_fragment(tmp_path / f"c{cut}.{n}", "ps2", n, 2, b) for n, b in enumerate(parts, 1)]
        whole = tmp_path / f"whole{cut}.eml"
        reassemble(frags, whole)
        assert whole.read_bytes() == original, cut


def test_mpack_fragments_recut_inside_the_enclosed_header(tmp_path: Path) -> None:
    """mpack's own fragments, with the cut between its fragment 1 and 2
    moved to every byte of the enclosed header (mpack itself cuts later)."""
    mpack = require_program("mpack")
    data = ps_bytes(2000)
    src = tmp_path / "document.ps"
    src.write_bytes(data)
    subprocess.run(
        [mpack, "-s", "Print me", "-m", "4000", "-o", str(tmp_path / "frag"), str(src)],
        check=True, cwd=tmp_path, capture_output=True, timeout=30,
    )
    frags = sorted(tmp_path.glob("frag.*"))
    assert len(frags) >= 3
    split = [f.read_bytes().split(b"\n\n", 1) for f in frags[:2]]
    enclosed = split[0][1] + split[1][1]
    reference = tmp_path / "reference.eml"
    reassemble(frags, reference)
    header_end = enclosed.index(b"\n\n") + 2
    (tmp_path / "out").mkdir()
    for cut in range(0, header_end + 1, 3):
        frags[0].write_bytes(split[0][0] + b"\n\n" + enclosed[:cut])
        frags[1].write_bytes(split[1][0] + b"\n\n" + enclosed[cut:])
        whole = tmp_path / "whole.eml"
        reassemble(frags, whole)
        assert whole.read_bytes() == reference.read_bytes(), cut
    [doc] = extract_documents(whole, tmp_path / "out")
    assert doc.path.read_bytes() == data and doc.format == "postscript"
