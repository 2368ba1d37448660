"""Hot paths that bench/scale.py (500 printers, 10,000 queued jobs) found
doing more than they must: each test pins the cheaper behaviour."""

from __future__ import annotations

from dataclasses import asdict

from phaserlink.printer.jobs import Document, Job, PartialSet


def test_job_to_json_is_asdict_without_the_deep_copy():
    job = Job("j1", "p", "pending", ["job-queued"], 1.0, 2.0, uidls=["u1"], notify=["printed"],
              partial=PartialSet("set", 3, {"1": "u1"}), documents=[Document("docs/a.ps", "postscript", pages=2)],
              hold_token="t")
    assert job.to_json() == asdict(job)
    bare = Job("j2", "p", "pending", [], 1.0, 2.0)
    assert bare.to_json() == asdict(bare)
    # A copy: changing the record does not change the job.
    record = job.to_json()
    record["reasons"].append("x")
    record["partial"]["parts"]["2"] = "u2"
    record["documents"][0]["pages"] = 9
    assert job.reasons == ["job-queued"] and job.partial.parts == {"1": "u1"} and job.documents[0].pages == 2
