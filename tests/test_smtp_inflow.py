"""Inflow control (phaserlink/smtp_relay/inflow.py): a new message waits at
MAIL FROM while the durable pool is behind, never longer than
``in_flow_delay``; on a fake clock."""

from __future__ import annotations

import pytest
from twisted.internet import task

from support.smtp import Session, make_site, mailbox_files
from phaserlink.limits import INFLOW_DURABLE_BACKLOG, INFLOW_TICK
from phaserlink.smtp_relay.inflow import InflowGate

DEMO = "demo@phaserlink.test"


class Backlog:
    def __init__(self, n: int = 0):
        self.n = n

    def __call__(self) -> int:
        return self.n


def gate(backlog: Backlog, max_delay: float = 1.0, clock=None) -> tuple[InflowGate, task.Clock]:
    clock = clock or task.Clock()
    return InflowGate(clock, backlog, max_delay, bound=8, tick=0.005), clock


def fired(d) -> list:
    out: list = []
    d.addCallback(out.append)
    return out


def test_under_the_bound_goes_on_at_once_without_a_timer():
    g, clock = gate(Backlog(8))
    assert g.admit() is None
    assert clock.getDelayedCalls() == []
    assert g.delayed == 0


def test_over_the_bound_waits_until_the_backlog_drops_one_per_tick_in_order():
    backlog = Backlog(9)
    g, clock = gate(backlog)
    a, b, c = (fired(g.admit()) for _ in range(3))
    clock.advance(0.005)
    clock.advance(0.005)
    assert (a, b, c) == ([], [], []) and g.waiting == 3
    backlog.n = 2
    clock.advance(0.005)
    assert len(a) == 1 and b == [] and c == []
    assert a[0] == pytest.approx(0.015)
    clock.advance(0.005)
    assert len(b) == 1 and c == []
    clock.advance(0.005)
    assert len(c) == 1
    assert g.waiting == 0 and clock.getDelayedCalls() == []
    assert g.delayed == 3


def test_nobody_jumps_the_line():
    """While sessions wait, a new one waits behind them even if the
    backlog is under the bound this instant."""
    backlog = Backlog(20)
    g, clock = gate(backlog)
    first = fired(g.admit())
    backlog.n = 0
    second = g.admit()
    assert second is not None
    second = fired(second)
    clock.advance(0.005)
    assert len(first) == 1 and second == []
    clock.advance(0.005)
    assert len(second) == 1
    assert g.admit() is None  # the line is empty again


def test_never_longer_than_in_flow_delay():
    g, clock = gate(Backlog(1000), max_delay=0.25)
    a = fired(g.admit())
    clock.advance(0.1)
    b = fired(g.admit())
    for _ in range(30):
        clock.advance(0.005)
    assert a == [pytest.approx(0.25, abs=0.006)] and b == []
    for _ in range(20):
        clock.advance(0.005)
    assert b == [pytest.approx(0.25, abs=0.006)]
    assert clock.getDelayedCalls() == []
    assert g.delay_total == pytest.approx(0.5, abs=0.02)


def test_zero_turns_it_off():
    g, clock = gate(Backlog(10 ** 6), max_delay=0)
    assert g.admit() is None


def test_stop_lets_everyone_go():
    g, clock = gate(Backlog(100))
    a, b = fired(g.admit()), fired(g.admit())
    g.stop()
    assert a == [0.0] and b == [0.0]
    assert clock.getDelayedCalls() == []


def test_limits_and_config(tmp_path):
    assert INFLOW_DURABLE_BACKLOG > 0 and 0 < INFLOW_TICK < 0.1
    assert make_site(tmp_path / "a").appliance.in_flow_delay == 0  # off unless a site asks
    assert make_site(tmp_path / "d", "in_flow_delay = 1s\n").appliance.in_flow_delay == 1.0
    assert make_site(tmp_path / "b", "in_flow_delay = 0\n").appliance.in_flow_delay == 0
    assert make_site(tmp_path / "c", "in_flow_delay = 250ms\n").appliance.in_flow_delay == 0.25


# -- in the SMTP server -----------------------------------------------------------


def held_session(tmp_path, backlog: Backlog, max_delay: float = 1.0) -> Session:
    site = make_site(tmp_path)
    s = Session(site)
    s.factory.inflow = InflowGate(s.reactor, backlog, max_delay, bound=8, tick=0.005)
    return s


def test_mail_from_waits_and_pipelined_commands_wait_behind_it(tmp_path):
    backlog = Backlog(50)
    s = held_session(tmp_path, backlog)
    s.ehlo()
    assert s.send(f"MAIL FROM:<a@good.example>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\n") == b""
    s.reactor.advance(0.005)
    assert s.take() == b""
    backlog.n = 0
    s.reactor.advance(0.005)
    assert s.take() == (b"250 2.1.0 Ok\r\n" + b"250 2.1.5 Ok, prints on demo\r\n"
                        + b"354 End data with <CR><LF>.<CR><LF>\r\n")
    reply = s.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert reply.startswith(b"250 2.0.0 Ok: queued as ")
    assert len(mailbox_files(s.site, "demo")) == 1
    # The next message finds the disk idle: no wait at all.
    assert s.cmd("MAIL FROM:<a@good.example>") == b"250 2.1.0 Ok\r\n"


def test_the_wait_ends_at_in_flow_delay_and_the_mail_is_taken(tmp_path):
    s = held_session(tmp_path, Backlog(10 ** 6), max_delay=0.5)
    s.ehlo()
    assert s.cmd("MAIL FROM:<a@good.example>") == b""
    s.reactor.advance(0.4)
    assert s.take() == b""
    for _ in range(30):
        s.reactor.advance(0.005)
    assert s.take() == b"250 2.1.0 Ok\r\n"
    assert s.factory.inflow.delayed == 1


def test_a_session_that_closes_while_it_waits(tmp_path):
    backlog = Backlog(50)
    s = held_session(tmp_path, backlog)
    s.ehlo()
    assert s.cmd("MAIL FROM:<a@good.example>") == b""
    s.proto.connectionLost(None)
    backlog.n = 0
    s.reactor.advance(0.005)
    assert s.take() == b""
    assert s.proto.txn is None


def test_the_default_factory_reads_the_durable_pool(tmp_path):
    """On a reactor without threads the pools run inline: the backlog is 0
    and MAIL FROM is answered at once (every other SMTP test relies on it)."""
    s = Session(make_site(tmp_path, "in_flow_delay = 1s\n"))
    assert s.factory.inflow.max_delay == 1.0
    assert s.factory.inflow.backlog() == 0
    s.ehlo()
    assert s.cmd("MAIL FROM:<a@good.example>") == b"250 2.1.0 Ok\r\n"
