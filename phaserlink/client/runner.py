"""Run one coroutine on the global reactor from a plain synchronous command.

The CLI stays plain argparse; only the network parts are Twisted.  Unlike
``task.react`` this returns the coroutine's value (an exit code) to the
caller instead of calling ``sys.exit`` itself, so ``main()`` can be called
from tests and from the CUPS backend alike.  The reactor runs once per
process, as always.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


def run(fn: Callable[[Any], Awaitable[T]]) -> T:
    from twisted.internet import reactor

    outcome: list[Any] = []

    def go() -> None:
        d = defer.ensureDeferred(fn(reactor))

        def done(result: Any) -> None:
            outcome.append(result)
            if reactor.running:  # type: ignore[attr-defined]
                reactor.stop()  # type: ignore[attr-defined]

        d.addBoth(done)

    reactor.callWhenRunning(go)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if not outcome:
        raise KeyboardInterrupt  # the reactor was stopped by a signal
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result
