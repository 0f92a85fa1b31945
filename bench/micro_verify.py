"""Micro-benchmark of the hot path: ``verification.verify`` in-process, no HTTP.

    .venv/bin/python -m bench.micro_verify [--keys 1000] [--calls 20000]

Seeds a fresh SQLite database, then times verify() over the seeded keys in rotation
(every key already touched, so no call writes): CPU microseconds per call, best of 5
(CPU time, so that other processes on a shared machine do not count).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from apikeys import db
from apikeys.verification import verify
from bench import seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        db.init(f"sqlite:///{Path(directory) / 'micro.db'}")
        db.migrate()
        with db.database.connection_context():
            secrets = seed.keys(seed.organization("micro"), args.keys)
            for secret in secrets:
                assert verify(secret, 60) is not None
            rounds = []
            for _ in range(5):
                start = time.process_time()
                for number in range(args.calls):
                    verify(secrets[number % len(secrets)], 60)
                rounds.append((time.process_time() - start) / args.calls)
        db.close_all()
    print(f"verify(): {min(rounds) * 1e6:.1f} us of CPU per call (best of 5 x {args.calls} calls)")


if __name__ == "__main__":
    main()
