"""Every Redis client of the harness gives up on a Redis that stops answering after
HARNESS_REDIS_TIMEOUT_SECONDS (the clients made from a URL alone get it in the URL)."""

from __future__ import annotations

from redis.connection import parse_url

from conftest import settings_import
from harness_site.env import redis_url_with_timeouts


def test_a_url_gets_both_timeouts_and_keeps_what_it_had():
    url = redis_url_with_timeouts("rediss://:s3cret@cache.example:6380/2?ssl_cert_reqs=none", 3)
    parsed = parse_url(url)
    assert parsed["socket_timeout"] == 3.0 and parsed["socket_connect_timeout"] == 3.0
    assert parsed["password"] == "s3cret" and parsed["host"] == "cache.example" and parsed["port"] == 6380
    assert parsed["db"] == 2 and parsed["ssl_cert_reqs"] == "none"


def test_a_timeout_the_url_sets_itself_wins():
    parsed = parse_url(redis_url_with_timeouts("redis://127.0.0.1:6379/0?socket_timeout=10", 2.5))
    assert parsed["socket_timeout"] == 10.0 and parsed["socket_connect_timeout"] == 2.5


def test_the_timeout_is_at_least_two_seconds():
    # The run queue's blocking read waits 1 s on the server: a shorter timeout would fail it.
    refused = settings_import(REDIS_URL="redis://127.0.0.1:6379/0", HARNESS_REDIS_TIMEOUT_SECONDS="1.9")
    assert refused.returncode != 0 and "HARNESS_REDIS_TIMEOUT_SECONDS" in refused.stderr, refused.stderr
    accepted = settings_import(REDIS_URL="redis://127.0.0.1:6379/0", HARNESS_REDIS_TIMEOUT_SECONDS="2")
    assert accepted.returncode == 0, accepted.stderr


def test_a_unix_socket_url_keeps_its_path():
    parsed = parse_url(redis_url_with_timeouts("unix:///run/redis/redis.sock?db=2", 3))
    assert parsed["path"] == "/run/redis/redis.sock" and parsed["db"] == 2
    assert parsed["socket_timeout"] == 3.0 and parsed["socket_connect_timeout"] == 3.0
