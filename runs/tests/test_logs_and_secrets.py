from __future__ import annotations

import base64
import io
import json
import logging
import re
from urllib.parse import quote, quote_plus

import pytest
from django.test import override_settings

from audit.models import AuditLog
from conftest import make_principal, make_run
from execution.executor import run_execute
from harness_site.logs import JsonFormatter
from harness_site.redaction import redact
from runs.models import RunEvent, Span
from runs.tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

OPENAI_KEY = "sk-proj-TOPSECRET-abcdefghijklmnop"
DB_PASSWORD = "db-pa55word-TOPSECRET"


@pytest.fixture
def json_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_every_log_line_of_a_run_carries_its_run_id(alice, json_logs):
    run = make_run(alice)
    json_logs.truncate(0)
    json_logs.seek(0)
    run_execute(run.pk)
    logged = lines(json_logs)
    assert any(entry["msg"] == "run finished" for entry in logged)
    assert all(entry.get("run_id") == run.pk for entry in logged), [e for e in logged if e.get("run_id") != run.pk]


def test_no_secret_reaches_logs_errors_events_or_audit(json_logs):
    victim = make_principal("victim")
    secrets_seen = [OPENAI_KEY, DB_PASSWORD, victim.key]
    database_url = f"postgres://harness:{DB_PASSWORD}@db.example.internal:5432/harness"
    with (
        FakeOpenAI("sk-some-other-valid-key-000") as fake,
        override_settings(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=fake.base_url, DATABASE_URL=database_url),
    ):
        run = make_run(victim, model="gpt-5.4-mini", input="hello")
        assert run_execute(run.pk) == "failed"
        # Code that logs carelessly is still covered by the formatter.
        logging.getLogger("careless").warning(
            "connecting to %s with %s using key %s", database_url, OPENAI_KEY, victim.key
        )
        logging.getLogger("careless").error("header was Authorization: Bearer %s", victim.key)
    run.refresh_from_db()
    stored = [
        json_logs.getvalue(),
        run.error,
        json.dumps(list(RunEvent.objects.filter(run=run).values_list("data", flat=True))),
        json.dumps(list(AuditLog.objects.values_list("data", flat=True))),
        json.dumps(list(Span.objects.filter(run=run).values_list("data", "error"))),
    ]
    assert "Incorrect API key" in run.error  # the error is still useful ...
    for blob in stored:
        for secret in secrets_seen:
            assert secret not in blob  # ... but it names no secret
    assert "[REDACTED]" in json_logs.getvalue()


def test_redact_covers_the_usual_shapes():
    assert redact("key hk_abcdefghijklmnopqrstuvwxyz0123") == "key [REDACTED]"
    assert redact("Authorization: Bearer abc.def-ghi_jkl") == "Authorization: [REDACTED]"
    assert redact("postgres://user:pw1234@host/db") == "postgres://[REDACTED]@host/db"
    assert redact("e2b_0123456789abcdef") == "[REDACTED]"
    assert redact("nothing secret here") == "nothing secret here"
    # A stream token in a URL (an access log line, an exported span's http.url).
    assert (
        redact("GET /api/runs/run_1/events?after=3&token=eyJyIjoicnVuIn0:1tXyz:abc-DEF_123&x=1")
        == "GET /api/runs/run_1/events?after=3&token=[REDACTED]&x=1"
    )


# A key for an OpenAI-compatible proxy: not sk-shaped (no pattern catches it), with characters
# that percent-encoding changes.
PROXY_KEY = "proxy/TOP+SECRET=key:0123456789"


def encodings_of(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "base64": base64.b64encode(raw).decode(),
        "base64-unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).decode(),
        "percent": quote(secret, safe=""),
        "percent-lower-hex": re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")),
        "form": quote_plus(secret),
        "hex": raw.hex(),
    }


def test_an_upstream_echoing_the_key_encoded_leaks_it_nowhere(json_logs):
    victim = make_principal("victim")
    forms = encodings_of(PROXY_KEY)
    # Base64 of `user:<key>` (a Basic credential) puts the key at an offset inside the base64 text.
    basic = base64.b64encode(b"apiuser:" + PROXY_KEY.encode()).decode()

    def echo(given: str) -> str:
        encoded = encodings_of(given)
        return (
            f"Incorrect API key provided (base64 {encoded['base64']}, url {encoded['percent']}, "
            f"credentials {base64.b64encode(b'apiuser:' + given.encode()).decode()})."
        )

    with (
        FakeOpenAI("sk-some-other-valid-key-000", reject_message=echo) as fake,
        override_settings(OPENAI_API_KEY=PROXY_KEY, OPENAI_BASE_URL=fake.base_url),
    ):
        run = make_run(victim, model="gpt-5.4-mini", input="hello")
        assert run_execute(run.pk) == "failed"
        logging.getLogger("careless").warning("upstream said %s", echo(PROXY_KEY))
    run.refresh_from_db()
    assert "Incorrect API key provided" in run.error and "[REDACTED]" in run.error, run.error
    stored = {
        "logs": json_logs.getvalue(),
        "error": run.error,
        "events": json.dumps(list(RunEvent.objects.filter(run=run).values_list("data", flat=True))),
        "audit": json.dumps(list(AuditLog.objects.values_list("data", flat=True))),
        "spans": json.dumps(list(Span.objects.filter(run=run).values_list("data", "error"))),
    }
    # The middle of the Basic credential: what encodes the key's bytes only.
    basic_core = basic[len("apiuser:") * 8 // 6 + 1 : -3]
    for where, blob in stored.items():
        for name, form in {**forms, "basic": basic_core, "literal": PROXY_KEY}.items():
            assert form not in blob, (where, name)
        assert "TOP%2BSECRET" not in blob and "TOP+SECRET" not in blob, where


@pytest.mark.parametrize("prefix", [b"", b"u:", b"ab:", b"abc:", b"x" * 7])
def test_base64_of_a_secret_inside_longer_base64_is_redacted_at_every_offset(prefix):
    with override_settings(OPENAI_API_KEY=PROXY_KEY):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            blob = encode(prefix + PROXY_KEY.encode() + b"|trailer").decode()
            redacted = redact(f"Authorization header was {blob}")
            assert "[REDACTED]" in redacted, (prefix, redacted)
            # At most two characters at each edge of the key's bytes survive (shared with its neighbours).
            kept = redacted.split("[REDACTED]")
            assert len(kept[0]) <= len("Authorization header was ") + len(encode(prefix).decode()) + 2
            assert base64.b64decode(blob).count(PROXY_KEY.encode()) == 1


def test_encoded_forms_are_redacted_and_ordinary_text_is_not():
    with override_settings(OPENAI_API_KEY=PROXY_KEY, SECRET_KEY="short-but-secret-value-123"):
        for name, form in encodings_of(PROXY_KEY).items():
            assert redact(f"x {form} y") == "x [REDACTED] y", name
        assert redact("nothing secret here: aGVsbG8gd29ybGQ= 68656c6c6f") == (
            "nothing secret here: aGVsbG8gd29ybGQ= 68656c6c6f"
        )


def _redact_every_net(text: str) -> str:
    """Every secret form and every pattern tried on every text: what `redact` must equal."""
    from harness_site.redaction import _PATTERNS, REDACTED, _secret_forms

    for value in _secret_forms():
        text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def test_redact_skips_nothing_it_would_have_caught():
    """`redact` skips the nets a text cannot meet (too short for any secret form, none of the
    patterns' anchors in it): random texts built of secrets, their encodings, the patterns'
    pieces and ordinary words come out exactly as with every net tried."""
    import random

    with override_settings(OPENAI_API_KEY=PROXY_KEY, SECRET_KEY="short-but-secret-value-123"):
        pieces = [
            *encodings_of(PROXY_KEY).values(),
            PROXY_KEY,
            "short-but-secret-value-123",
            "hk_",
            "abcdefghijklmnopqrstu",
            "sk-",
            "e2b_",
            "Bearer ",
            "BASIC ",
            "bEaReR\t",
            "X-Amz-Signature=",
            "X-Amz-Credential=",
            "x-amz-signature=",
            "/artifacts/blob/",
            "?token=",
            "&token=",
            "://",
            "user:pw@",
            ":",
            "@",
            "/",
            "=",
            " ",
            "a",
            "succeeded",
            "0123456789",
            "ü",
            "\n",
        ]
        rng = random.Random(20261125)  # noqa: S311 (test inputs, repeatable)
        texts = ["", "a", "ok", "hk_", "://a:b@c"] + [
            "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) for _ in range(4000)
        ]
        changed = 0
        for text in texts:
            expected = _redact_every_net(text)
            assert redact(text) == expected, text
            changed += expected != text
        assert 1000 < changed < len(texts) - 200  # both kinds are well represented
