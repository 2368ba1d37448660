"""The intake's message/partial bookkeeping under any delivery order
(hypothesis): fragments in any order, duplicated, with or without the total
on each, and sometimes one that contradicts the rest.  Whatever comes, the
job prints at most once and then byte-exact, every fragment leaves the
mailbox, and once all fragments were delivered nothing is left waiting for
partial_timeout: the set printed, or failed with one status mail."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.printer_fakes import Rig, make_site, message

INNER = b"From: alice@example.com\nSubject: Set\nMessage-ID: <inner-set@example.com>\n\n"


@st.composite
def deliveries(draw):
    total = draw(st.integers(min_value=1, max_value=6))
    bodies = [f"part {n}\n".encode() for n in range(1, total + 1)]
    # Which fragments carry the total (RFC 2046 requires it only on the last).
    says_total = [draw(st.booleans()) or n == total for n in range(1, total + 1)]
    order = draw(st.permutations(list(range(1, total + 1))))
    extra = draw(st.lists(st.sampled_from(list(range(1, total + 1))), max_size=3))
    order = list(order) + extra  # duplicates, anywhere after the first copies
    order = draw(st.permutations(order))
    # A contradiction: a fragment that says another total, or a part above it.
    bad = draw(st.one_of(st.none(), st.tuples(st.sampled_from(["total", "number"]),
                                              st.integers(min_value=0, max_value=len(order)))))
    return total, bodies, says_total, order, bad


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_any_order_prints_once_or_fails_at_once(case):
    total, bodies, says_total, order, bad = case
    tmp = Path(tempfile.mkdtemp())
    try:
        rig = Rig(tmp, make_site(tmp, notify="errors")).start()
        wrong_at = bad[1] if bad is not None else None
        for i, n in enumerate(order):
            t = str(total) if says_total[n - 1] else "?"
            number = n
            if i == wrong_at:
                if bad[0] == "total":
                    t = str(total + 1)
                else:
                    number, t = total + 1, "?" if not says_total[n - 1] else str(total)
            body = (INNER if number == 1 else b"") + (bodies[number - 1] if number <= total else b"junk\n")
            rig.deliver(message(msgid=f"<f{i}@example.com>", X_Fake_Partial=f"set {number} {t}", body=body))
        sent = rig.outputs["lp"].sent
        event("printed" if sent else ("waiting" if rig.job_dirs() else "failed at once"))
        if rig.job_dirs():
            # Only a set whose every stated total is the wrong, larger one
            # may wait: the missing "part" might still come.  It times out.
            assert bad is not None and bad[0] == "total"
            stated = {str(total) if says_total[n - 1] else "?" for i, n in enumerate(order) if i != wrong_at}
            assert stated <= {"?"}
            rig.clock.advance(rig.site.printers["lp"].partial_timeout)
        failed = [m for m in rig.queue.messages if m.field("event") == "failed"]
        assert len(sent) <= 1
        if sent:
            assert sent[0][1] == b"".join(bodies)
            assert failed == []
        else:
            assert len(failed) == 1  # said once
            assert "do not fit together" in failed[0].text or "after waiting 1 hour" in failed[0].text
        if wrong_at is None or wrong_at >= len(order):
            assert len(sent) == 1
        assert rig.mailbox() == []
        assert rig.job_dirs() == []  # nothing waits for partial_timeout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
