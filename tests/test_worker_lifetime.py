"""A worker of the production server outlives the threads it runs requests on.

granian ends a worker's blocking threads after 30 s without work and starts new ones
when work comes back. Whatever the database layer keeps per thread must not take the
worker down when such a thread ends.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from apikeys import crypto
from tests.conftest import REDIS_URL, bearer
from tests.servers import Server, production

#: Longer than granian's idle timeout for its blocking threads (30 s).
IDLE_SECONDS = 32
CYCLES = 3
API = "/api/v1/org/api-keys"
CHECK = "/api/v1/auth/check"


def _burst(server: Server, secret: str, cycle: int) -> list[int]:
    """Checks and creates, several at once: reads and writes on every thread of every worker."""

    def send(i: int) -> int:
        if i % 4:
            target = {"X-Required-Scope": "read:api_keys"}
            return server.request("GET", CHECK, bearer(secret) | target).status
        body = json.dumps({"name": f"c{cycle}-{i}", "scopes": ["read:billing"]}).encode()
        headers = bearer(secret) | {"Content-Type": "application/json"}
        return server.request("POST", API, headers, body).status

    with ThreadPoolExecutor(max_workers=8) as clients:
        return list(clients.map(send, range(80)))


def test_sqlite_workers_survive_idle_periods_longer_than_the_thread_idle_timeout(tmp_path):
    secret = crypto.generate_secret()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'apikeys.db'}",
        "REDIS_URL": REDIS_URL,
        "APIKEYS_BOOTSTRAP_KEY": secret,
        # Every check writes last_used_at: the threads hold written-to connections.
        "LAST_USED_INTERVAL_SECONDS": "0",
    }
    with production(tmp_path, env, workers=2) as server:
        workers = server.worker_pids()
        assert len(workers) == 2
        for cycle in range(CYCLES):
            statuses = _burst(server, secret, cycle)
            assert set(statuses) <= {200, 201}, statuses
            time.sleep(IDLE_SECONDS)
            assert server.worker_pids() == workers, server.log()
        assert set(_burst(server, secret, CYCLES)) <= {200, 201}
        assert "Unexpected exit from worker" not in server.log()
        assert server.worker_pids() == workers
