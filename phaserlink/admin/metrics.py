"""``/metrics`` in the Prometheus text format, and ``/healthz``
(docs/console.md).

prometheus_client's own registry and exposition are used rather than a
home-made writer: the format's escaping, histogram buckets and type lines
are then right by construction, and the tests parse the output with the
same library's parser.  Each console has its own registry (not the
process-global one), so two appliances in one test process do not mix.

Counters count from the appliance's start, as Prometheus expects (a
restart is a counter reset); gauges are read at scrape time from the
printer side and the outbound queue.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.web import resource

FINAL_STATES = ("completed", "aborted", "canceled")
#: Seconds from spooling to printed: a few seconds on a LAN, hours behind a
#: printer that was down.
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: Job sizes in bytes, 1 KB to 500 MB.
SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 5e7, 1e8, 5e8)


class _LiveGauges:
    """Gauges read at scrape time."""

    def __init__(self, printers, queue, clock, sessions: dict[str, Any], guard):
        self.printers, self.queue, self.clock = printers, queue, clock
        self.sessions, self.guard = sessions, guard

    def collect(self):
        waiting = GaugeMetricFamily("phaserlink_jobs_waiting", "Jobs spooled and not finished, per printer",
                                    labels=["printer"])
        paused = GaugeMetricFamily("phaserlink_printer_paused", "1 if an operator paused the printer",
                                   labels=["printer"])
        gauges = getattr(self.printers, "gauges", None)
        if gauges is not None:  # one query for all printers (PrinterOperations)
            rows = gauges()
        else:
            rows = [(p["name"], p["jobs_waiting"], "paused" in p["state_reasons"]) for p in self.printers.printers()]
        for name, jobs, is_paused in rows:
            waiting.add_metric([name], jobs)
            paused.add_metric([name], 1 if is_paused else 0)
        yield waiting
        yield paused
        if self.queue is not None:
            messages = self.queue.messages()
            yield GaugeMetricFamily("phaserlink_outbound_queue_depth", "Messages in the outbound queue",
                                    value=len(messages))
            oldest = min((m["created_epoch"] for m in messages), default=None)
            age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
            yield GaugeMetricFamily("phaserlink_outbound_queue_oldest_age_seconds",
                                    "Age of the oldest message in the outbound queue", value=age)
        if self.sessions:
            open_ = GaugeMetricFamily("phaserlink_sessions_open", "SMTP and POP3 sessions open now",
                                      labels=["protocol"])
            for protocol, factory in self.sessions.items():
                open_.add_metric([protocol], getattr(factory, "sessions", 0))
            yield open_
            smtp = self.sessions.get("smtp")
            if smtp is not None and hasattr(smtp, "outcomes"):
                messages = CounterMetricFamily(
                    "phaserlink_smtp_messages",
                    "SMTP answers: messages accepted at the end of DATA, recipients and messages "
                    "deferred or refused, by stage and RFC 3463 status", labels=["stage", "outcome", "status"])
                for (stage, outcome, status), n in sorted(smtp.outcomes.items()):
                    messages.add_metric([stage, outcome, status], n)
                yield messages
        if self.guard is not None:
            logins = CounterMetricFamily("phaserlink_login_attempts",
                                         "SMTP AUTH, POP3 and console logins by outcome (trust/logins.py)",
                                         labels=["outcome"])
            for outcome, n in sorted(self.guard.counts.items(), key=lambda kv: kv[0].value):
                logins.add_metric([outcome.value], n)
            yield logins


class ConsoleMetrics:
    """The console's registry and the counters the rest feeds."""

    def __init__(self, printers, queue, printer_names: list[str], clock=None, *,
                 sessions: dict[str, Any] | None = None, guard=None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.jobs = Counter("phaserlink_jobs", "Jobs finished, by printer and final IPP job state",
                            ["printer", "state"], registry=self.registry)
        for name in printer_names:
            for state in FINAL_STATES:
                self.jobs.labels(printer=name, state=state)
        self.latency = Histogram("phaserlink_job_latency_seconds",
                                 "Seconds from a job spooled to printed (completed)", ["printer"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.size = Histogram("phaserlink_job_size_bytes", "Size of finished jobs' documents", ["printer"],
                              buckets=SIZE_BUCKETS, registry=self.registry)
        self.failed_logins = Counter("phaserlink_console_failed_logins",
                                     "Failed console logins (API and page)", registry=self.registry)
        self.operations = Counter("phaserlink_console_operations", "Console operations done, by operation",
                                  ["operation"], registry=self.registry)
        self.registry.register(_LiveGauges(printers, queue, clock, sessions or {}, guard))

    def job_finished(self, row: dict[str, Any], _previous: str | None) -> None:
        """A history listener: called (in the spool's thread) once per job
        that reaches a final state."""
        printer, state = row["printer"], row["state"]
        self.jobs.labels(printer=printer, state=state).inc()
        if state == "completed" and row.get("created"):
            self.latency.labels(printer=printer).observe(max(0.0, row["ended"] - float(row["created"])))
        if row.get("size"):
            self.size.labels(printer=printer).observe(row["size"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(resource.Resource):
    """``GET /metrics``: for any console user over HTTP Basic (a
    Prometheus scrape job takes ``basic_auth``): job titles stay out of it,
    but queue depths and printer names are still the site's business."""

    isLeaf = True

    def __init__(self, metrics: ConsoleMetrics, auth):
        super().__init__()
        self.metrics = metrics
        self.auth = auth

    def render_GET(self, request) -> int:
        from phaserlink.admin.api import authenticate
        from phaserlink.admin.web import answer, json_error

        async def handle() -> None:
            await authenticate(request, self.auth, False)
            body = self.metrics.render()
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            request.write(body)

        return answer(request, handle, json_error)


class HealthResource(resource.Resource):
    """``GET /healthz``: 200 ``ok`` while the reactor answers and every
    printer's dispatcher runs."""

    isLeaf = True

    def __init__(self, printers):
        super().__init__()
        self.printers = printers

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"ok\n"
