"""Waiting inside a test that runs on the real reactor (pytest-twisted):
poll a condition while the reactor keeps serving, never blocking it."""

from __future__ import annotations

from twisted.internet import reactor, task


async def until(predicate, timeout: float = 20.0, step: float = 0.05) -> None:
    """Return once *predicate()* is true, polling every *step* seconds of
    reactor time; TimeoutError after *timeout* seconds."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise TimeoutError("condition not reached")
        await task.deferLater(reactor, step, lambda: None)
        waited += step
