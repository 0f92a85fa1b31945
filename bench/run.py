"""The benchmark: the check endpoint against a bare Flask ceiling, under the production server.

    .venv/bin/python -m bench.run              # a few minutes; needs wrk and Redis

It seeds two SQLite databases (1,000 keys; 1,000,000 keys, among them an organization of
10,000), starts the service on each and a bare Flask app (bench/ceiling.py), all under
the production server with its checked-in configuration (serve.py), drives them in turn
with wrk rotating over 999 valid keys, and prints requests per second, p50 and p99
latency and the check/ceiling ratio; then the check's Redis round trips, the rows
of ``api_key`` written (counted by a trigger) while one key is checked 10,000 times, and
the list endpoint's latency for the organization of 10,000 keys, whole and one page of
100 at a time (the first page, and one from the middle by its cursor). bench/README.md
says more.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from apikeys import crypto, db
from apikeys.metrics import DIRECTORY
from apikeys.pagination import MAX_LIMIT
from bench import seed
from bench.processes import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROTATE = Path(__file__).with_name("rotate.lua")

SCOPE = "read:charge_points"
CHECK = "/api/v1/auth/check"
LIST = "/api/v1/org/api-keys"
CEILING = "/ceiling"

ROTATING_KEYS = 1_000
LARGE = 1_000_000
LIST_ORG_KEYS = 10_000
FILLER_ORGS = 100
WRITE_CHECKS = 10_000
LIST_SAMPLES = 10
PAGE = 100
PAGE_SAMPLES = 50
START_TIMEOUT = 60.0
# A busy integration's limit, which the write count's 10,000 checks of one key fit in.
# Leases are a sixteenth of what remains, at most 100 units (apikeys/leases.py): the
# rotation spends each key's lease over many requests, as a busy key would.
RATE_LIMIT = "20000/minute"
LAST_USED_INTERVAL = 60

_SQLITE_WRITE_COUNTER = (
    "CREATE TABLE bench_writes (n INTEGER NOT NULL)",
    "INSERT INTO bench_writes VALUES (0)",
    *(
        f"CREATE TRIGGER bench_count_{event} AFTER {event} ON api_key "
        "BEGIN UPDATE bench_writes SET n = n + 1; END"
        for event in ("INSERT", "UPDATE", "DELETE")
    ),
)
_POSTGRES_WRITE_COUNTER = (
    "CREATE TABLE bench_writes (n INTEGER NOT NULL)",
    "INSERT INTO bench_writes VALUES (0)",
    "CREATE FUNCTION bench_count() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN UPDATE bench_writes SET n = n + 1; RETURN NULL; END $$",
    "CREATE TRIGGER bench_count AFTER INSERT OR UPDATE OR DELETE ON api_key "
    "FOR EACH ROW EXECUTE FUNCTION bench_count()",
)


@dataclass(frozen=True)
class Load:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    failures: int
    cpu_us: float = 0.0  # the server's CPU (all its processes) per request answered


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path


# -- servers -------------------------------------------------------------------------------


def server_command(kind: str, app: str, port: int, extra: Sequence[str]) -> list[str]:
    """The command that serves the app factory ``app`` on ``port``.

    ``production`` is serve.py, the checked-in production configuration (its address
    comes from the environment: see ``server_env``). ``granian`` and ``gunicorn`` are the
    bare servers with the options in ``extra``, to compare candidates and settings.
    """
    if kind == "production":
        return [sys.executable, str(ROOT / "serve.py"), app]
    if kind == "granian":
        return [
            str(BIN / "granian"),
            "--interface=wsgi",
            "--host=127.0.0.1",
            f"--port={port}",
            "--no-ws",
            "--factory",
            *extra,
            app,
        ]
    if kind == "gunicorn":
        return [
            str(BIN / "gunicorn"),
            f"--bind=127.0.0.1:{port}",
            # Its default path is one per machine, shared with any other gunicorn.
            "--no-control-socket",
            *extra,
            f"{app}()",
        ]
    raise ValueError(f"unknown server {kind!r}")


def server_env(port: int) -> dict[str, str]:
    return {"HOST": "127.0.0.1", "PORT": str(port)}


@contextmanager
def serve(name: str, command: list[str], port: int, env: dict, probe: dict) -> Iterator[Server]:
    """Run ``command`` in a process group of its own until the block ends."""
    log = Path(env["BENCH_LOGS"]) / f"{name}.log"
    with log.open("w") as output:
        # Each serve.py makes a metrics directory of its own (apikeys.metrics): a shared
        # one would be emptied by each server that starts.
        inherited = {name: value for name, value in os.environ.items() if name != DIRECTORY}
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**inherited, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(name, port, process, log)
        try:
            _wait_until_up(server, **probe)
            yield server
        finally:
            stop_process_group(process, grace=15)


def _wait_until_up(server: Server, path: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start:\n{server.log.read_text()[-3000:]}")
        try:
            status, body = get(server.port, path, headers)
        except OSError:
            time.sleep(0.1)
            continue
        if status != 200:
            raise RuntimeError(f"{server.name}: GET {path} answered {status}: {body[:300]!r}")
        return
    raise TimeoutError(f"{server.name} did not answer within {START_TIMEOUT:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- load ----------------------------------------------------------------------------------


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wrk(port: int, path: str, keys: Path | None, seconds: float, connections: int) -> Load:
    """wrk on ``path``, presenting the keys in ``keys`` in rotation (none: no key)."""
    command = [
        "wrk",
        "--threads=2",
        f"--connections={connections}",
        f"--duration={seconds:g}s",
        "--timeout=10s",
        f"--script={ROTATE}",
        f"http://127.0.0.1:{port}{path}",
        "--",
        str(keys or ""),
        SCOPE if keys else "",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    figures = json.loads(output.strip().splitlines()[-1])
    return Load(
        rps=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        failures=figures["non_2xx"] + figures["socket_errors"],
    )


def group_cpu_seconds(group: int) -> float:
    """CPU seconds, user and system, that the live processes of process group ``group``
    (a server's master and workers) have used so far (Linux's /proc)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        try:
            # The fields after the command's closing parenthesis: pgrp is the 3rd,
            # utime and stime the 12th and 13th.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue  # not a process, or one that has ended
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def median(loads: list[Load]) -> Load:
    """The round of median throughput: one real run, not a blend of several."""
    return sorted(loads, key=lambda load: load.rps)[len(loads) // 2]


def hammer(port: int, path: str, headers: dict[str, str], total: int, clients: int) -> list[int]:
    """``total`` requests from ``clients`` threads; the statuses they got."""
    statuses: list[int] = []
    lock = threading.Lock()

    def client(count: int) -> None:
        mine = []
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(count):
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append(response.status)
            if response.will_close:
                connection.close()
        connection.close()
        with lock:
            statuses.extend(mine)

    shares = [total // clients + (n < total % clients) for n in range(clients)]
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def latencies(port: int, path: str, headers: dict[str, str], samples: int) -> list[float]:
    """Milliseconds for each of ``samples`` requests, one at a time, after one to warm up."""
    get(port, path, headers)
    timings = []
    for _ in range(samples):
        start = time.perf_counter()
        status, body = get(port, path, headers)
        timings.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    return timings


@contextmanager
def redis_commands(url: str, match: str) -> Iterator[dict[str, int]]:
    """Count, with MONITOR, the Redis commands naming ``match`` while the block runs: those
    clients send, and those their Lua scripts run inside Redis."""
    client = redis.Redis.from_url(url)
    counts = {"sent": 0, "scripted": 0}
    done = threading.Event()
    with client.monitor() as monitor:

        def listen() -> None:
            for command in monitor.listen():
                if done.is_set():
                    return
                if match in command["command"]:
                    counts["scripted" if command.get("client_type") == "lua" else "sent"] += 1

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        try:
            yield counts
        finally:
            time.sleep(0.5)
            done.set()
            client.ping()  # wakes the listener up for its last look at ``done``
            listener.join(timeout=5)
    client.close()


# -- data ----------------------------------------------------------------------------------


@contextmanager
def opened(url: str) -> Iterator[None]:
    """The models bound to the database at ``url``, schema migrated."""
    db.init(url)
    db.migrate()
    try:
        with db.database.connection_context():
            # This connection only: the data can be rebuilt, so durability can wait.
            if url.startswith("sqlite"):
                db.database.execute_sql("PRAGMA synchronous = OFF")
                db.database.execute_sql("PRAGMA cache_size = -262144")
            else:
                db.database.execute_sql("SET synchronous_commit = off")
            yield
    finally:
        db.close_all()


def seed_small(url: str, rotating: list[str], writer: str) -> None:
    """The rotating keys, and the one the write count checks: ``ROTATING_KEYS`` in all."""
    with opened(url):
        org = seed.organization("bench")
        seed.insert(seed.key_rows(org, [*rotating, writer]))
        _install_write_counter(url)


def seed_large(url: str, rotating: list[str], list_reader: str) -> None:
    """``LARGE`` keys: the rotating ones spread among the others, and the list's organization."""
    with opened(url):
        bench = seed.organization("bench")
        listed = seed.organization("list")
        fillers = [seed.organization(f"filler-{n}") for n in range(FILLER_ORGS)]
        seed.insert(seed.key_rows(listed, [list_reader], name="reader"))
        seed.insert(seed.filler([listed], LIST_ORG_KEYS - 1))
        count = LARGE - LIST_ORG_KEYS - len(rotating)
        rows = seed.filler(fillers, count, start=LIST_ORG_KEYS)
        seed.insert(seed.interleave(rows, count, seed.key_rows(bench, rotating)))
        if not url.startswith("sqlite"):
            db.database.execute_sql("ANALYZE api_key")
        _install_write_counter(url)


def _install_write_counter(url: str) -> None:
    """Triggers that count the rows of ``api_key`` written from now on."""
    sqlite = url.startswith("sqlite")
    for statement in _SQLITE_WRITE_COUNTER if sqlite else _POSTGRES_WRITE_COUNTER:
        db.database.execute_sql(statement)


def writes(url: str) -> int:
    """Rows of ``api_key`` written since the counter was installed."""
    with opened(url):
        return db.database.execute_sql("SELECT n FROM bench_writes").fetchone()[0]


@contextmanager
def databases(kind: str, work: Path, dsn: str) -> Iterator[tuple[str, str]]:
    """URLs of two empty databases, small and large: SQLite files, or PostgreSQL schemas."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'small.db'}", f"sqlite:///{work / 'large.db'}"
        return
    import psycopg

    schemas = [f"bench_{secrets.token_hex(4)}_{size}" for size in ("small", "large")]
    with psycopg.connect(dsn, autocommit=True) as connection:
        for schema in schemas:
            connection.execute(f"CREATE SCHEMA {schema}")
    try:
        small, large = (f"{dsn}?options=-csearch_path%3D{schema}" for schema in schemas)
        yield small, large
    finally:
        db.close_all()
        with psycopg.connect(dsn, autocommit=True) as connection:
            for schema in schemas:
                connection.execute(f"DROP SCHEMA {schema} CASCADE")


def delete_redis_keys(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    doomed = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    for start in range(0, len(doomed), 500):
        client.delete(*doomed[start : start + 500])
    client.close()
    return len(doomed)


# -- the run -------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--server",
        choices=("production", "granian", "gunicorn"),
        default="production",
        help="production: serve.py; granian or gunicorn: the bare server with --server-args",
    )
    parser.add_argument("--server-args", default="", help="e.g. '--workers=2 --threads=4'")
    parser.add_argument(
        "--config", default="", help="JSON settings over the service's, e.g. a rate-limit strategy"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="with --database postgresql: the database to make two schemas of its own in",
    )
    parser.add_argument("--seconds", type=float, default=5, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=9, help="wrk runs per endpoint")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="ceiling and check on 1,000 keys only (to compare servers and settings)",
    )
    return parser.parse_args()


@dataclass(frozen=True)
class Target:
    label: str
    server: Server
    path: str
    keys: Path | None


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    redis.Redis.from_url(args.redis_url).ping()
    began = time.monotonic()
    prefix = "bench-" + secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="apikeys-bench-") as tmp, ExitStack() as stack:
        stack.callback(delete_redis_keys, args.redis_url, prefix)
        work = Path(tmp)
        # The rotation: ROTATING_KEYS - 1 keys, plus one more in the small database for the
        # write count, and in the large one a reader for the list's organization.
        rotating = [crypto.generate_secret() for _ in range(ROTATING_KEYS - 1)]
        writer, reader = crypto.generate_secret(), crypto.generate_secret()
        keys_file = work / "keys.txt"
        keys_file.write_text("\n".join(rotating) + "\n")
        small, large = stack.enter_context(databases(args.database, work, args.postgres_dsn))

        print(f"Seeding {ROTATING_KEYS:,} keys", end="", flush=True)
        seed_small(small, rotating, writer)
        if not args.quick:
            print(f", then {LARGE:,} keys", end="", flush=True)
            seed_large(large, rotating, reader)
        print(f": {time.monotonic() - began:.0f} s")

        extra = shlex.split(args.server_args)
        env = {
            "BENCH_LOGS": str(work),
            "BENCH_REDIS_PREFIX": prefix,
            "BENCH_CONFIG": args.config,
            "REDIS_URL": args.redis_url,
            "RATE_LIMIT_PER_KEY": RATE_LIMIT,
            "LAST_USED_INTERVAL_SECONDS": str(LAST_USED_INTERVAL),
            # Production's defaults, whatever the shell says: a JSON line per request.
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        check_headers = {"Authorization": f"Bearer {rotating[0]}", "X-Required-Scope": SCOPE}

        def start(label: str, app: str, path: str, database: str | None) -> Target:
            port = free_port()
            probe = {"path": path, "headers": check_headers if path == CHECK else {}}
            url = database or f"sqlite:///{work / 'unused.db'}"
            # A prefix of its own, so that its Redis commands can be told from the others'.
            own = {"DATABASE_URL": url, "BENCH_REDIS_PREFIX": f"{prefix}-{port}"}
            server = stack.enter_context(
                serve(
                    f"server-{port}",
                    server_command(args.server, app, port, extra),
                    port,
                    {**env, **server_env(port), **own},
                    probe,
                )
            )
            return Target(label, server, path, keys_file if path == CHECK else None)

        targets = [
            start("bare Flask ceiling", "bench.ceiling:create_app", CEILING, None),
            start(f"check, {ROTATING_KEYS:,} keys", "bench.service:create_app", CHECK, small),
        ]
        if not args.quick:
            targets.append(
                start(f"check, {LARGE:,} keys", "bench.service:create_app", CHECK, large)
            )
        describe(args, extra)

        for target in targets:  # warm up: imports, caches, pools, every key touched
            wrk(target.server.port, target.path, target.keys, 3, args.connections)
        rounds: dict[str, list[Load]] = {target.label: [] for target in targets}
        check_port = targets[1].server.port
        with redis_commands(args.redis_url, f"{prefix}-{check_port}") as commands:
            for _ in range(args.rounds):
                for target in targets:
                    cpu = group_cpu_seconds(target.server.process.pid)
                    load = wrk(
                        target.server.port, target.path, target.keys, args.seconds, args.connections
                    )
                    spent = group_cpu_seconds(target.server.process.pid) - cpu
                    load = replace(load, cpu_us=spent / (load.rps * args.seconds) * 1e6)
                    rounds[target.label].append(load)
        print()
        report(targets, rounds)
        checks = round(sum(load.rps * args.seconds for load in rounds[targets[1].label]))
        print(
            f"Redis round trips per check: {commands['sent'] / checks:.4f} "
            f"({commands['sent']:,} for {checks:,} checks of 1,000 keys over the rounds, "
            f"running {commands['scripted']:,} commands in Lua)"
        )
        failed = sum(load.failures for loads in rounds.values() for load in loads)
        if not args.quick:
            failed += count_writes(check_port, small, writer)
            list_latency(targets[2].server.port, reader)
        failed += production_defaults(targets[1].server)
        print(f"Whole run: {time.monotonic() - began:.0f} s")
        if failed:
            sys.exit(f"FAILED: {failed} requests were not answered 200")


def describe(args: argparse.Namespace, extra: list[str]) -> None:
    if args.server == "production":
        import serve

        print(
            f"Server: serve.py, granian with {serve.WORKERS} workers x {serve.APP_THREADS} "
            "app threads (RSGI, apikeys.serving), HTTP/1.1 keep-alive"
        )
    else:
        print(f"Server: {shlex.join(server_command(args.server, '<app>', 0, extra))}")
    if args.config:
        print(f"Settings: {args.config}")
    print(
        f"Load: wrk, 2 threads x {args.connections} connections, rotating over "
        f"{ROTATING_KEYS - 1:,} keys; {args.rounds} rounds of {args.seconds:g} s per endpoint, "
        "interleaved; req/s and latency from the median round, ratios the median of the rounds'"
    )


def paired(loads: list[Load], baselines: list[Load]) -> tuple[float, float]:
    """The median, over the rounds, of the throughput and the p99 ratios of ``loads`` to
    ``baselines``: each ratio from two runs back to back, so that the machine's drift
    between rounds (large on a shared VM) does not enter it."""
    pairs = list(zip(loads, baselines, strict=True))
    return (
        statistics.median(load.rps / base.rps for load, base in pairs),
        statistics.median(load.p99_ms / base.p99_ms for load, base in pairs),
    )


def report(targets: list[Target], rounds: dict[str, list[Load]]) -> None:
    ceiling = rounds[targets[0].label]
    print(f"{'':28}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'/ceiling':>10}   all rounds, req/s")
    for target in targets:
        load = median(rounds[target.label])
        ratio = "" if target is targets[0] else f"{paired(rounds[target.label], ceiling)[0]:.2f}"
        every = " ".join(f"{each.rps:.0f}" for each in rounds[target.label])
        print(
            f"{target.label:28}{load.rps:8.0f}{load.p50_ms:8.2f}{load.p99_ms:8.2f}{ratio:>10}"
            f"   {every}"
        )
    cpu = {
        target.label: statistics.median(load.cpu_us for load in rounds[target.label])
        for target in targets
    }
    check_cpu, ceiling_cpu = cpu[targets[1].label], cpu[targets[0].label]
    print(
        f"Server CPU per request, all its processes (median round): ceiling {ceiling_cpu:.0f} us,"
        f" check {check_cpu:.0f} us ({check_cpu / ceiling_cpu:.2f} x); the machine has"
        f" {os.cpu_count()} cores"
    )
    throughput, p99 = paired(rounds[targets[1].label], ceiling)
    print(
        f"check/ceiling: throughput {throughput:.2f} (goal >= 0.7), p99 {p99:.2f} x the "
        "ceiling's (goal <= 1.5); medians of the rounds' ratios"
    )
    if len(targets) > 2:
        large = paired(rounds[targets[2].label], rounds[targets[1].label])[0]
        print(
            f"check with {LARGE:,} keys / with {ROTATING_KEYS:,}: throughput {large:.2f} "
            "(goal >= 0.8)"
        )


def count_writes(port: int, database: str, writer: str) -> int:
    """Check one fresh key ``WRITE_CHECKS`` times; print the rows written. Returns failures."""
    headers = {"Authorization": f"Bearer {writer}", "X-Required-Scope": SCOPE}
    before, started = writes(database), time.monotonic()
    statuses = hammer(port, CHECK, headers, WRITE_CHECKS, clients=8)
    took, written = time.monotonic() - started, writes(database) - before
    print(
        f"Database writes caused by {WRITE_CHECKS:,} checks of one key: {written} "
        f"(rows of api_key written, counted by a trigger; the checks took {took:.0f} s, "
        f"the coalescing interval is {LAST_USED_INTERVAL} s)"
    )
    return sum(status != 200 for status in statuses)


def production_defaults(server: Server) -> int:
    """Show that the check ran as shipped, request lines and metrics on: the checks its log
    has a line for, and those one scrape of /metrics counts over every worker. Returns 1
    if they differ."""
    from prometheus_client.parser import text_string_to_metric_families

    logged = 0
    with server.log.open() as lines:
        for line in lines:
            if CHECK in line and line.startswith("{"):
                entry = json.loads(line)
                logged += entry.get("path") == CHECK and entry.get("status") == 200
    status, body = get(server.port, "/metrics", {})
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    labels = (("method", "GET"), ("route", CHECK), ("status", "200"))
    counted = round(samples.get(("apikeys_http_requests_total", labels), 0))
    print(
        f"Request log and metrics on: {logged:,} checks answered 200 in the log, "
        f"{counted:,} in one scrape of /metrics (summed over the workers)"
    )
    return int(status != 200 or counted != logged)


def list_latency(port: int, reader: str) -> None:
    timings = sorted(latencies(port, LIST, {"Authorization": f"Bearer {reader}"}, LIST_SAMPLES))
    print(
        f"List endpoint, organization of {LIST_ORG_KEYS:,} keys: p50 "
        f"{statistics.median(timings):.0f} ms, p99 {timings[-1]:.0f} ms "
        f"({LIST_SAMPLES} requests one at a time; p99 is their maximum)"
    )
    headers = {"Authorization": f"Bearer {reader}"}
    first = f"{LIST}?limit={PAGE}"
    cursor = None
    for _ in range(LIST_ORG_KEYS // 2 // MAX_LIMIT):  # to the middle, the most a page holds
        path = f"{LIST}?limit={MAX_LIMIT}" + (f"&after={cursor}" if cursor else "")
        status, body = get(port, path, headers)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
        cursor = json.loads(body)["next_cursor"]
    middle = f"{first}&after={cursor}"
    for label, path in (("first page", first), ("a page from the middle", middle)):
        timings = sorted(latencies(port, path, headers, PAGE_SAMPLES))
        print(
            f"List endpoint, same organization, {label} of {PAGE} (limit, after): p50 "
            f"{statistics.median(timings):.1f} ms, p99 {timings[-1]:.1f} ms "
            f"({PAGE_SAMPLES} requests one at a time; p99 is their maximum)"
        )


if __name__ == "__main__":
    main()
