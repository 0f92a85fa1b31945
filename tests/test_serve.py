"""serve.py, the production server, at start: settings checked once, warnings that matter."""

from __future__ import annotations

import pytest

from tests.conftest import REDIS_URL
from tests.servers import StartFailed, production


def sqlite(tmp_path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}"}


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOG_FORMAT", "xml"), ("RATE_LIMIT_PER_KEY", "lots"), ("DATABASE_POOL_SIZE", "0")],
)
def test_a_bad_setting_stops_the_server_at_once_naming_it(tmp_path, name, value):
    with (
        pytest.raises(StartFailed) as failure,
        production(tmp_path, {**sqlite(tmp_path), name: value}),
    ):
        pass
    assert failure.value.returncode != 0
    assert name in failure.value.log
    # Checked before any worker started: no worker failed and was respawned.
    assert "worker" not in failure.value.log.lower()
    assert "Traceback" not in failure.value.log


def test_a_faulty_policy_file_stops_the_server_naming_the_line(tmp_path):
    policy = tmp_path / "policy.txt"
    policy.write_text("GET /api/v1/billing/** read:billing\nGET /api/v1/x/** read:everything\n")
    env = {**sqlite(tmp_path), "APIKEYS_POLICY_FILE": str(policy)}
    with pytest.raises(StartFailed) as failure, production(tmp_path, env):
        pass
    assert f"{policy}, line 2: unknown scope 'read:everything'" in failure.value.log


def test_several_workers_without_redis_warn_that_limits_are_per_worker(tmp_path):
    with production(tmp_path, sqlite(tmp_path), workers=2) as server:
        assert "each worker counts rate limits on its own" in server.log()


def test_shared_limits_or_one_worker_need_no_warning(tmp_path, redis_client):
    with production(tmp_path, {**sqlite(tmp_path), "REDIS_URL": REDIS_URL}, workers=2) as server:
        assert server.request("GET", "/healthz").status == 200
        assert "rate limits on its own" not in server.log()
    with production(tmp_path, sqlite(tmp_path), workers=1) as server:
        assert server.request("GET", "/healthz").status == 200
        assert "rate limits on its own" not in server.log()
