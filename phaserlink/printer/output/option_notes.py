"""What an output says about job options it cannot apply (docs/options.md).

Every output gets the options the printer applies (``OutputJob.options``,
the dispatcher's work: the sender's, the printer's policy, pages already
chosen by Ghostscript where the printer cannot) and answers, in
``OutputResult.notes``, each one it could not pass on: never silently
ignored.  One wording for all of them, here.
"""

from __future__ import annotations

from phaserlink.message.job_options import JobOptions

from .interfaces import OutputJob


def not_said(job: OutputJob, names: tuple[str, ...], why: str) -> tuple[str, ...]:
    """One note per option of *names* that *job* asks for: ``sides=... not
    applied: <why>``."""
    options = JobOptions.parse(job.options)
    return tuple(f"{options.describe(name)} not applied: {why}" for name in names if options.value(name))
