"""Rate limits and budgets: token-bucket known answers, exactness under threads, Redis shared by workers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from dlsec.errors import UsageError
from dlsec.serve.limits import BUDGET_RETRY, MemoryLimits, RedisLimits, open_limits
from dlsec.store._apikeys import Rate, parse_output, parse_rate
from tests._needs import missing, need_module


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_known_answers():
    clock = Clock()
    limits = MemoryLimits(clock=clock)
    rate = Rate(3, 1.0)  # 3 per second: a burst of 3, then one every 1/3 s
    assert [limits.take("k", 1, rate, None, 0).allowed for _ in range(4)] == [True, True, True, False]
    refused = limits.take("k", 1, rate, None, 0)
    assert refused.reason == "rate" and refused.retry_after == 1
    clock.t += 0.34
    assert limits.take("k", 1, rate, None, 0).allowed
    assert not limits.take("k", 1, rate, None, 0).allowed
    clock.t += 10
    assert sum(limits.take("k", 1, rate, None, 0).allowed for _ in range(10)) == 3  # never above capacity


def test_budget_counts_rows_and_starts_from_persisted_usage():
    limits = MemoryLimits()
    assert limits.take("k", 4, None, 10, 5).allowed  # 5 used before this start
    assert not limits.take("k", 2, None, 10, 5).allowed  # 9 + 2 > 10
    assert limits.take("k", 1, None, 10, 5).allowed
    assert limits.usage() == {"k": 10}


def test_memory_budget_is_exact_under_threads():
    limits = MemoryLimits()
    allowed = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(200):
            ok = limits.take("k", 1, None, 250, 0).allowed
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 250


def test_rate_and_output_parsing():
    assert parse_rate("10/second") == Rate(10, 1.0) and parse_rate("600/minute") == Rate(600, 60.0)
    assert parse_rate(None) is None
    for bad in ("10", "0/second", "ten/second", "5/fortnight"):
        with pytest.raises(UsageError):
            parse_rate(bad)
    assert str(parse_output("top-3")) == "top-3" and str(parse_output("rounded-2")) == "rounded-2"
    with pytest.raises(UsageError):
        parse_output("top-0")


@pytest.fixture(scope="module")
def redis_url():
    need_module("redis", "pip install -e .[dev]")
    server = shutil.which("redis-server")
    if server is None:
        missing("redis-server is not installed (make test installs it on Debian)")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(600):  # up to 30 s on a loaded machine
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_redis_limits_are_shared_and_exact_across_workers(redis_url):
    workers = [
        RedisLimits(redis_url, prefix="t1"),
        RedisLimits(redis_url, prefix="t1"),
    ]  # two gateway processes
    allowed = []
    lock = threading.Lock()

    def worker(store: RedisLimits) -> None:
        for _ in range(60):
            ok = store.take("key", 2, None, 101, 1).allowed
            with lock:
                allowed.append(ok)

    threads = [threading.Thread(target=worker, args=(workers[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 50  # 1 used before, 2 rows each: 1 + 2 * 50 = 101
    assert workers[0].usage() == {"key": 101}
    rate = Rate(2, 60.0)
    results = [workers[i % 2].take("r", 1, rate, None, 0) for i in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert results[2].reason == "rate" and 1 <= results[2].retry_after <= 30
    with pytest.raises(UsageError, match="cannot reach"):
        RedisLimits("redis://127.0.0.1:1/0")


def _retry_known_answers(limits, clock=None) -> None:  # noqa: ANN001
    refused = limits.take("b", 3, None, 2, 0)
    assert (refused.allowed, refused.reason, refused.retry_after) == (False, "budget", BUDGET_RETRY)
    rate = Rate(1, 60.0)  # one per minute
    assert limits.take("r", 1, rate, None, 0).allowed
    first = limits.take("r", 1, rate, None, 0)
    assert (first.allowed, first.reason, first.retry_after) == (False, "rate", 60)
    if clock is not None:  # half a token back after 30 s: 30 s to wait for the rest
        clock.t += 30.0
        later = limits.take("r", 1, rate, None, 0)
        assert (later.allowed, later.reason, later.retry_after) == (False, "rate", 30)
    # A wait under a second is announced as one second, never zero (nor two).
    fast = Rate(10, 1.0)
    assert all(limits.take("f", 1, fast, None, 0).allowed for _ in range(10))
    soon = limits.take("f", 1, fast, None, 0)
    assert (soon.allowed, soon.reason, soon.retry_after) == (False, "rate", 1)


def test_retry_after_is_the_time_to_the_next_token_or_the_budget_constant():
    clock = Clock()
    _retry_known_answers(MemoryLimits(clock=clock), clock)


def test_redis_retry_after_matches_the_memory_store(redis_url):
    limits = RedisLimits(redis_url, prefix="retry")
    _retry_known_answers(limits)
    assert limits.usage() == {"b": 0, "f": 10, "r": 1}  # refusals spend nothing


def test_redis_keys_live_under_the_dlsec_prefix_and_open_limits_picks_the_store(redis_url):
    import redis

    fresh = open_limits(redis_url)
    assert isinstance(fresh, RedisLimits) and isinstance(open_limits(None), MemoryLimits)
    assert fresh.usage() == {}  # no key seen yet: nothing asked of Redis
    assert fresh.take("prefixed", 3, None, 10, 0).allowed
    assert redis.Redis.from_url(redis_url).get("dlsec:used:prefixed") == b"3"
    assert fresh.usage() == {"prefixed": 3}


def test_redis_without_its_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis raises ImportError
    with pytest.raises(UsageError) as caught:
        RedisLimits("redis://127.0.0.1:1/0")
    assert str(caught.value) == "--redis-url needs the redis package: pip install 'dlsec[redis]'"
