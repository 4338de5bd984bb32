"""The web server's request-body bound (harness_site.webserver), piece by piece; the process
tests (tests/integration/test_harness_process.py, test_artifacts_process.py) send real bodies."""

from __future__ import annotations

import io

from harness_site.webserver import BoundedBody, body_limit

LIMITS = {"request_bytes": 1000, "artifact_bytes": 5000}


def test_the_blob_route_takes_artifact_sized_bodies_and_every_other_route_request_sized_ones():
    assert body_limit(b"/artifacts/blob/abc?x=1", **LIMITS) == (5000, "ARTIFACTS_MAX_BYTES")
    assert body_limit(b"http://example.test/artifacts/blob/abc", **LIMITS) == (5000, "ARTIFACTS_MAX_BYTES")
    assert body_limit(b"/api/runs", **LIMITS) == (1000, "HARNESS_MAX_REQUEST_BYTES")
    assert body_limit(b"/api/artifacts/blob/abc", **LIMITS) == (1000, "HARNESS_MAX_REQUEST_BYTES")
    assert body_limit(b"/admin/?next=/artifacts/blob/x", **LIMITS) == (1000, "HARNESS_MAX_REQUEST_BYTES")


def test_a_body_of_exactly_the_limit_is_kept_and_one_byte_more_keeps_nothing():
    kept = BoundedBody(io.BytesIO(), 10)
    kept.write(b"12345")
    kept.write(b"67890")
    kept.seek(0, 0)
    assert not kept.over and kept.read() == b"1234567890"

    spool = io.BytesIO()
    over = BoundedBody(spool, 10)
    over.write(b"12345")
    over.write(b"678901")
    over.write(b"x" * 1000)
    over.seek(0, 0)
    assert over.over and over.size == 1011
    assert spool.closed and over.read() == b""
