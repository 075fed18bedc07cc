"""Past one machine (issue 13): heartbeats on the database's clock, the submitit launcher,
``otransfer status``, the suite schema and the progress view."""
from __future__ import annotations

import time
import uuid

import pytest

from harness import claims as claims_mod
from harness.claims import RUNNING, Claims


class _SkewedTime:
    """A ``time`` module whose wall clock is ``offset`` seconds off (sleep and the monotonic
    clocks are the real ones)."""

    def __init__(self, offset: float):
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name):
        return getattr(time, name)


def _url(backend, tmp_path, request):
    return (f"sqlite:///{tmp_path / 'claims.sqlite3'}" if backend == "sqlite"
            else request.getfixturevalue("pg_url"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("offset", [-5 * 3600.0, 5 * 3600.0])
def test_a_worker_with_a_clock_hours_off_neither_steals_nor_loses_claims(
        backend, offset, tmp_path, request, monkeypatch):
    """Two workers on two hosts, one whose clock is five hours off (either way): neither takes
    the other's live claim, and a claim whose heartbeat stops is still taken over after
    ``stale_after`` seconds of the database's clock."""
    url = _url(backend, tmp_path, request)
    suite = f"skew-{uuid.uuid4().hex[:8]}"
    skewed = _SkewedTime(offset)
    monkeypatch.setattr(claims_mod, "time", skewed)  # every wall-clock read of claims.py
    a = Claims(url, suite, stale_after=2.0, heartbeat=0.4, worker="host-a:1:a")  # skewed
    b = Claims(url, suite, stale_after=2.0, heartbeat=0.4, worker="host-b:2:b")
    a.host, b.host = "host-a", "host-b"  # two machines: only heartbeats tell liveness
    try:
        db = b.db_now()
        assert abs(db - time.time()) < 5.0  # the database's clock, not the skewed one
        assert a.try_claim("mine") is not None and b.try_claim("theirs") is not None
        stamp = a.states()["mine"].heartbeat
        assert abs(stamp - db) < 5.0, "the skewed worker stamped its own clock"
        for _ in range(3):  # several stale_after/2 periods: the heartbeats keep both alive
            time.sleep(1.2)
            assert b.try_claim("mine") is None, "the skewed worker's live claim was stolen"
            assert a.try_claim("theirs") is None, "the skewed worker stole a live claim"
        assert a.begin_record("mine") and a.finish("mine", ok=True)
        b._stop.set()  # b hangs: its heartbeat stops
        time.sleep(2.6)
        got = a.try_claim("theirs")  # stale on the database's clock: taken over
        assert got is not None and got.attempts == 2 and a.last_previous == "host-b:2:b"
        assert a.states()["theirs"].state == RUNNING
    finally:
        a.close()
        b.close()
