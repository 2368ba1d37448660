"""The console in the appliance: one twisted.web Site on ``[appliance]
admin_listen``, in the appliance's reactor (docs/console.md).

::

    /                the page (ConsolePage; a login form until logged in)
    /api/v1/...      the JSON API (ApiResource)
    /metrics         Prometheus text format (MetricsResource)
    /healthz         "ok", no login
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web import resource, server
from zope.interface import implementer

from phaserlink.admin.api import ApiResource
from phaserlink.admin.auth import Authenticator, Sessions
from phaserlink.admin.metrics import ConsoleMetrics, HealthResource, MetricsResource
from phaserlink.admin.pages import ConsolePage
from phaserlink.printer.control import IQueueControl, NotAllowed
from phaserlink.printer.history import iso

log = Logger()


class _Root(resource.Resource):
    """Named children first; every other path is the page's."""

    def __init__(self, page: resource.Resource):
        super().__init__()
        self.page = page

    def getChild(self, path: bytes, request) -> resource.Resource:
        request.prepath.pop()
        request.postpath.insert(0, path)
        return self.page


class _Versions(resource.Resource):
    def __init__(self, v1: resource.Resource):
        super().__init__()
        self.putChild(b"v1", v1)


@implementer(IQueueControl)
class QueueControl:
    """The outbound queue seen through :class:`IQueueControl`: it calls the
    queue's own operations, never its files."""

    def __init__(self, queue):
        self.queue = queue

    def messages(self) -> list[dict[str, Any]]:
        # ``recipient`` and ``next_try`` say what the issue calls them ("recipient,
        # attempts, next try, last reply"): the same facts as ``recipients`` (all
        # of them) and ``next_attempt``, so a script may rely on either name.
        return [{"id": e.id, "sender": e.mail_from, "recipients": list(e.recipients),
                 "recipient": ", ".join(e.recipients), "attempts": e.attempts,
                 "next_attempt": iso(e.next_attempt) if e.next_attempt else None,
                 "next_try": iso(e.next_attempt) if e.next_attempt else None,
                 "last_reply": e.last_error, "created": iso(e.created), "created_epoch": e.created,
                 "size": getattr(e, "size", None)}
                for e in self.queue.queued()]

    def _view(self, queue_id: str) -> dict[str, Any]:
        for m in self.messages():
            if m["id"] == queue_id:
                return m
        raise KeyError(queue_id)

    async def retry(self, queue_id: str, by: str) -> dict[str, Any]:
        self._view(queue_id)
        log.info("console: {who} retries queued message {id} now", who=by, id=queue_id)
        self.queue.retry_now(queue_id)
        return self._view(queue_id) if any(m["id"] == queue_id for m in self.messages()) else {"id": queue_id}

    async def delete(self, queue_id: str, by: str) -> None:
        self._view(queue_id)
        log.info("console: {who} deletes queued message {id}", who=by, id=queue_id)
        try:
            await self.queue.delete(queue_id)
        except RuntimeError as e:
            raise NotAllowed(str(e), self._view(queue_id)) from None


def build_site(printers, queue, accounts, reactor, *, printer_names: list[str], tls: bool = False,
               history=None, sessions: dict[str, Any] | None = None) -> tuple[server.Site, ConsoleMetrics]:
    """The console's Site over *printers* (IPrinterControl) and *queue*
    (IQueueControl or None); *sessions* maps a protocol name to its server
    factory (whose ``sessions`` counts the open ones)."""
    from phaserlink.trust.logins import guard_for

    metrics = ConsoleMetrics(printers, queue, printer_names, sessions=sessions, guard=guard_for(reactor))
    if history is not None:
        history.listeners.append(metrics.job_finished)
    auth = Authenticator(accounts, reactor, on_failure=metrics.failed_logins.inc)
    def counted(op: str) -> None:
        metrics.operations.labels(operation=op).inc()

    page = ConsolePage(printers, queue, auth, Sessions(reactor), tls=tls, on_operation=counted)
    root = _Root(page)
    root.putChild(b"api", _Versions(ApiResource(printers, queue, auth, tls=tls, reactor=reactor, on_operation=counted)))
    root.putChild(b"metrics", MetricsResource(metrics, auth))
    root.putChild(b"healthz", HealthResource(printers))
    site = server.Site(root)
    site.displayTracebacks = False
    # No access log lines through twisted's default (one per request would
    # drown the appliance's log when Prometheus scrapes).
    site.log = lambda request: None
    return site, metrics

