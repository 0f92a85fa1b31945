"""Compare servers and settings side by side: each variant its own server, wrk in turns.

    .venv/bin/python -m bench.compare VARIANTS.json [--seconds 5] [--rounds 3]

VARIANTS.json is a list of objects: ``{"label": ..., "server": "production" | "granian" |
"gunicorn", "args": "server options", "config": {service settings}, "app": "ceiling" |
"service" | "module:factory"}`` (``production``, the default, is serve.py; see
``run.server_command``; a factory other than the ceiling is driven like the check).
All variants run at once on one 1,000-key database and are measured in interleaved
rounds, so that a machine whose load drifts treats them alike; the median round of each
is shown, and its throughput against the first variant's (the median of the rounds'
ratios).
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import redis

from apikeys import crypto
from bench import run

APPS = {"ceiling": "bench.ceiling:create_app", "service": "bench.service:create_app"}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("variants", type=Path)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    variants = json.loads(args.variants.read_text())
    redis.Redis.from_url(args.redis_url).ping()
    prefix = "bench-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="apikeys-compare-") as tmp, ExitStack() as stack:
        stack.callback(run.delete_redis_keys, args.redis_url, prefix)
        work = Path(tmp)
        keys = [crypto.generate_secret() for _ in range(run.ROTATING_KEYS)]
        keys_file = work / "keys.txt"
        keys_file.write_text("\n".join(keys) + "\n")
        database = f"sqlite:///{work / 'small.db'}"
        run.seed_small(database, keys[:-1], keys[-1])
        env = {
            "BENCH_LOGS": str(work),
            "BENCH_REDIS_PREFIX": prefix,
            "REDIS_URL": args.redis_url,
            "RATE_LIMIT_PER_KEY": run.RATE_LIMIT,
            "DATABASE_URL": database,
        }
        headers = {"Authorization": f"Bearer {keys[0]}", "X-Required-Scope": run.SCOPE}
        servers = []
        for number, variant in enumerate(variants):
            app = variant.get("app", "service")
            port = run.free_port()
            command = run.server_command(
                variant.get("server", "production"),
                APPS.get(app, app),
                port,
                shlex.split(variant.get("args", "")),
            )
            probe = (
                {"path": run.CEILING, "headers": {}}
                if app == "ceiling"
                else {"path": run.CHECK, "headers": headers}
            )
            server_env = {
                **env,
                **run.server_env(port),
                "BENCH_CONFIG": json.dumps(variant.get("config", {})),
            }
            server = stack.enter_context(run.serve(f"v{number}", command, port, server_env, probe))
            path, rotation = (run.CEILING, None) if app == "ceiling" else (run.CHECK, keys_file)
            servers.append((variant["label"], server, path, rotation))
        for _, server, path, rotation in servers:
            run.wrk(server.port, path, rotation, 2, args.connections)
        loads: dict[str, list[run.Load]] = {label: [] for label, *_ in servers}
        for _ in range(args.rounds):
            for label, server, path, rotation in servers:
                loads[label].append(
                    run.wrk(server.port, path, rotation, args.seconds, args.connections)
                )
                time.sleep(0.5)
    first = loads[servers[0][0]]
    print(f"{'':44}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'/first':>8}   rounds (req/s)")
    for label, *_ in servers:
        load = run.median(loads[label])
        every = " ".join(f"{each.rps:.0f}" for each in loads[label])
        failures = sum(each.failures for each in loads[label])
        note = f"  ({failures} failures)" if failures else ""
        ratio = f"{run.paired(loads[label], first)[0]:.2f}"
        figures = f"{load.rps:8.0f}{load.p50_ms:8.2f}{load.p99_ms:8.2f}{ratio:>8}"
        print(f"{label:44}{figures}   {every}{note}")


if __name__ == "__main__":
    main()
