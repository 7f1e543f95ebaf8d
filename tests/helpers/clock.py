"""Another wall clock, time zone and random state, for tests that two writes are equal.

Two writes within the same second would hide a writer that reads the clock; under
:func:`another_clock` the clock is years ahead (``time``, ``datetime``), the time zone is
another one, and the random sources (``random``, ``uuid``) give other values. A writer
whose bytes depend only on its inputs gives the same bytes under it.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

SHIFT = 9 * 365 * 86400 + 4321.5
"""Nine years and a bit: every date field (year to second) moves."""


class _ShiftedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _ShiftedDatetime:
        return cls.fromtimestamp(time.time(), tz)

    @classmethod
    def utcnow(cls) -> _ShiftedDatetime:
        return cls.fromtimestamp(time.time(), datetime.UTC).replace(tzinfo=None)

    @classmethod
    def today(cls) -> _ShiftedDatetime:
        return cls.now()


@contextlib.contextmanager
def another_clock() -> Iterator[float]:
    """Run the body under a shifted clock, TZ=Asia/Kathmandu and reseeded random sources;
    yields the shift in seconds. Everything is restored afterwards."""
    real_time, real_localtime, real_gmtime = time.time, time.localtime, time.gmtime

    def now() -> float:
        return real_time() + SHIFT

    with pytest.MonkeyPatch.context() as monkeypatch:
        state = random.getstate()
        try:
            _shift(monkeypatch, now, real_localtime, real_gmtime)
            random.seed(20240906)
            time.tzset()
            assert time.time() - real_time() > SHIFT - 60
            yield SHIFT
        finally:
            monkeypatch.undo()
            random.setstate(state)
            time.tzset()


def _shift(monkeypatch: pytest.MonkeyPatch, now: Any, real_localtime: Any,
           real_gmtime: Any) -> None:
    monkeypatch.setattr(time, "time", now)
    monkeypatch.setattr(time, "time_ns", lambda: int(now() * 1e9))
    monkeypatch.setattr(time, "localtime",
                        lambda secs=None: real_localtime(now() if secs is None else secs))
    monkeypatch.setattr(time, "gmtime",
                        lambda secs=None: real_gmtime(now() if secs is None else secs))
    monkeypatch.setattr(datetime, "datetime", _ShiftedDatetime)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=0x5EED << 96 | 0x4000_8000 << 32 | 1))
    monkeypatch.setenv("TZ", "Asia/Kathmandu")
