"""``phaserlink send``: files x targets -> jobs, sent one after another,
each outcome printed; the exit code is the worst outcome."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from phaserlink.client import destinations as dmod
from phaserlink.client import progress as pmod
from phaserlink.client import sending
from phaserlink.client.runner import run
from phaserlink.client.sending import EXIT_OK, EXIT_USAGE, JobResult
from phaserlink.message import job_options


def run_send(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    dests = dmod.load()
    server = None
    if args.server:
        server = sending.server_from_text(args.server, dests, tls=args.tls, ca_file=args.ca_file,
                                          username=args.user, password_file=args.password_file)
    elif args.tls or args.ca_file or args.user or args.password_file:
        raise dmod.DestinationError("--tls, --ca-file, --user and --password-file go with --server")
    if args.sender:
        dmod.check_address(args.sender)
    targets = sending.resolve(dests, args.to, server=server, sender=args.sender)
    if args.files.count("-") > 1:
        raise dmod.DestinationError("standard input (-) can be given only once")
    for name in args.files:
        if name != "-" and not Path(name).is_file():
            print(f"phaserlink: {name}: no such file", file=stderr)
            return EXIT_USAGE
    if args.wait and dests.mailbox is None:
        raise dmod.DestinationError("--wait needs a [mailbox] to read status mail from "
                                    "(phaserlink destinations set-mailbox ...)")
    mailbox_password = None
    if args.wait:
        from phaserlink.client.status import mailbox_password as get_mailbox_password

        mailbox_password = get_mailbox_password(dests.mailbox)
    progress = pmod.Progress() if args.quiet else pmod.for_stream(stderr)
    work = sending.make_work_dir()
    try:
        data = []
        for name in args.files:
            if name == "-":
                data.append((sending.spool_stdin(sys.stdin.buffer, work), "stdin"))
            else:
                data.append((Path(name), Path(name).name))

        async def go(reactor: Any) -> tuple[list[JobResult], int | None]:
            limits = sending.SizeLimits(reactor, args.max_message_size)
            passwords = sending.PasswordCache()
            results = []
            for path, filename in data:
                for target in targets:
                    result = await sending.send_job(
                        reactor, target, path, work, limits=limits, passwords=passwords, progress=progress,
                        filename=filename, format=args.type, title=args.title, copies=args.copies,
                        notify=args.notify, options=send_options(args))
                    for line in sending.report_lines(result):
                        print(line, file=stdout if result.ok else stderr)
                    results.append(result)
            code = sending.worst_exit(results)
            if code != EXIT_OK or not args.wait:
                return results, None
            from phaserlink.client.status import wait_for

            assert dests.mailbox is not None and mailbox_password is not None
            waited = await wait_for(reactor, dests.mailbox, mailbox_password, [r.job_id for r in results],
                                    message_ids=[r.message_id for r in results if r.message_id],
                                    timeout=args.wait_timeout, interval=args.wait_interval,
                                    stdout=stdout, stderr=stderr)
            return results, waited

        results, waited = run(go)
    finally:
        sending.remove_work_dir(work)
    return sending.worst_exit(results) if waited is None else waited


def send_options(args: argparse.Namespace) -> str | None:
    """The X-PhaserLink-Options value for ``send``'s option flags, or None."""
    options = job_options.JobOptions(sides=getattr(args, "sides", None), media=getattr(args, "media", None),
                                     color=getattr(args, "color", None), pages=getattr(args, "pages", None) or ())
    return options.header_value() or None
