"""Run the whole test suite on both database profiles at once: SQLite (embedded) and PostgreSQL + Redis
(production), each in its own process, so the two cores of a small machine are both busy.

Usage (inside deploy/with_services.py, which provides the servers): ``python deploy/run_suites.py -- pytest [args]``.
Each profile's output goes to a log file and is printed whole when that profile is done, SQLite first;
a line every minute says the run is alive. Exits non-zero when either profile fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROFILES = (("sqlite", "SQLite (embedded profile)"), ("postgres", "PostgreSQL + Redis (production profile)"))


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: run_suites.py -- pytest [args]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    # Stopped from outside (CI's time limit, with_services): stop both suites on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path(tempfile.mkdtemp(prefix="market-suites-"))
    running: dict[str, tuple[subprocess.Popen[bytes], Path, float]] = {}
    for index, (profile, _title) in enumerate(PROFILES):
        log = logs / f"{profile}.log"
        env = {**os.environ, "MARKET_TEST_DATABASE": profile, "PYTHONHASHSEED": "0"}
        if redis := env.get("MARKET_TEST_REDIS_URL"):
            # One Redis database per profile: their workers must not take each other's tasks.
            env["MARKET_TEST_REDIS_URL"] = f"{redis.rsplit('/', 1)[0]}/{index + 1}"
        with log.open("wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        running[profile] = (process, log, time.monotonic())
    started = time.monotonic()
    codes: dict[str, int] = {}
    shown: set[str] = set()
    next_note = started + 60
    try:
        while len(codes) < len(running):
            for profile, (process, _log, _begin) in running.items():
                if profile not in codes and process.poll() is not None:
                    codes[profile] = process.returncode
            # Show finished profiles in order, so the output reads the same on every run.
            for profile, title in PROFILES:
                if profile in shown or profile not in codes:
                    break
                _process, log, _begin = running[profile]
                print(f"=== whole suite on {title}: exit {codes[profile]} ===", flush=True)
                sys.stdout.write(log.read_text(encoding="utf-8", errors="replace"))
                sys.stdout.flush()
                shown.add(profile)
            if time.monotonic() >= next_note:
                busy = ", ".join(p for p in running if p not in codes)
                if busy:
                    print(f"--- {int(time.monotonic() - started)} s: still running: {busy}", flush=True)
                next_note += 60
            time.sleep(0.5)
        for profile, title in PROFILES:
            if profile not in shown:
                print(f"=== whole suite on {title}: exit {codes[profile]} ===", flush=True)
                sys.stdout.write(running[profile][1].read_text(encoding="utf-8", errors="replace"))
    finally:
        for process, _log, _begin in running.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
    print(
        f"=== both profiles done in {int(time.monotonic() - started)} s: " + ", ".join(f"{p} exit {c}" for p, c in codes.items())
    )
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
