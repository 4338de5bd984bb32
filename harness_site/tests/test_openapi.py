"""The OpenAPI document: well-formed, and declaring the answers every operation can give."""

from __future__ import annotations

import json

import pytest
from django.test import Client


def _no_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys: {sorted(k for k in keys if keys.count(k) > 1)}"
    return dict(pairs)


@pytest.mark.django_db
def test_every_operation_declares_its_errors_once():
    # Swagger UI (js-yaml) refuses a document with a key twice, and shows nothing.
    text = Client().get("/api/openapi.json", HTTP_HOST="localhost").content.decode()
    document = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert "503" in statuses, (method, path)
            if operation.get("security"):
                assert {"401", "429"} <= statuses, (method, path)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in statuses, (method, path)
    run_in = document["components"]["schemas"]["RunIn"]["properties"]
    # The agents are what the workers publish, not a list fixed in the web's schema.
    assert "enum" not in run_in["agent"] and "GET /api/agents" in run_in["agent"]["description"]
    assert "offline_script" in run_in
    assert "maxLength" in run_in["input"] and "pattern" in run_in["input"]
