"""Fixtures of the runs app's tests."""

from __future__ import annotations

import pytest

# The machine's Redis (CI machines run one); tests that use it skip without it (conftest.redis_reachable).
REDIS_URL = "redis://127.0.0.1:6379/3"


@pytest.fixture
def redis_layer(settings):
    """Live events over Redis pub/sub, as REDIS_URL configures them."""
    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
    return settings
