#!/usr/bin/env python3
"""Run a command with private, throw-away PostgreSQL and Redis servers.

Usage: python3 deploy/with_services.py [--no-postgres] [--no-redis] -- CMD [ARGS...]

The servers listen on free loopback ports, keep their data in temporary
directories, and are stopped and removed when CMD exits.  CMD sees
MARKET_TEST_POSTGRES_URL and MARKET_TEST_REDIS_URL; its exit code is returned.
"""

import argparse
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from types import FrameType
from typing import Any

Proc = subprocess.Popen[bytes]
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
PACKAGES = "postgresql redis-server"
APT_INSTALL = "apt-get install -y --no-install-recommends"
HOST, TIMEOUT = "127.0.0.1", 60.0


def say(message: str) -> None:
    """Print a status line to stderr."""
    print(f"with_services: {message}", file=sys.stderr, flush=True)


def find_pg_bindir() -> Path | None:
    """Return the directory holding initdb/pg_ctl/postgres, or None."""
    found = [shutil.which(name) for name in PG_TOOLS]
    if all(found):
        return Path(str(found[0])).resolve().parent
    dirs = glob.glob("/usr/lib/postgresql/*/bin")
    dirs.sort(key=lambda d: [int(n) for n in d.split("/")[4].split(".") if n.isdigit()])
    for bindir in reversed(dirs):
        if all((Path(bindir) / name).exists() for name in PG_TOOLS):
            return Path(bindir)
    return None


def find_redis() -> str | None:
    """Return the path of redis-server, or None."""
    return shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")


def ensure_binaries(want_pg: bool, want_redis: bool) -> tuple[Path | None, str | None]:
    """Locate the server binaries, installing Debian packages as root if needed."""
    missing = ["postgresql"] if want_pg and not find_pg_bindir() else []
    missing += ["redis-server"] if want_redis and not find_redis() else []
    names = " ".join(missing)
    if missing and os.geteuid() == 0:
        say(f"{names} not found: installing {PACKAGES} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env)
        subprocess.run([*APT_INSTALL.split(), *PACKAGES.split()], check=True, env=env)
    elif missing:
        say(f"missing package(s) {names}; install with: sudo {APT_INSTALL} {names}")
        sys.exit(2)
    pg_bin, redis_bin = find_pg_bindir(), find_redis()
    return (pg_bin if want_pg else None), (redis_bin if want_redis else None)


def free_ports(count: int) -> list[int]:
    """Ask the OS for `count` distinct free loopback TCP ports."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]


def probe(port: int, send: bytes = b"") -> bytes:
    """Connect to HOST:`port` and send `send`; return the reply, b"" on failure."""
    with suppress(OSError), socket.create_connection((HOST, port), 1) as sock:
        sock.sendall(send)
        return sock.recv(64) if send else b"connected"
    return b""


def pg_user() -> str | None:
    """Return the unprivileged user to run PostgreSQL as (None if not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "markettest"):
        with suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    cmd = ["useradd", "--system", "--no-create-home", "markettest"]
    subprocess.run(cmd, check=True)
    return "markettest"


def make_tempdir(prefix: str, stack: ExitStack) -> Path:
    """Create a temporary directory that is removed when `stack` closes."""

    def remove() -> None:  # retry: a dying server may still be writing files
        for _ in range(25):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                return
            time.sleep(0.2)

    path = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(remove)
    return path


def spawn(args: list[str], log: Path, stack: ExitStack, **kw: Any) -> Proc:
    """Start `args` in a new session logging to `log`; `stack` will stop it."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, start_new_session=True, **kw)
    stack.callback(terminate, proc, 5.0, signal.SIGTERM, True)
    return proc


def terminate(proc: Proc, grace: float, sig: int | None, group: bool) -> None:
    """Send `sig` to `proc` (or its session), then SIGKILL after `grace` s."""
    for signum in (sig, signal.SIGKILL):
        if signum is not None and proc.poll() is None:
            with suppress(ProcessLookupError):
                (os.killpg if group else os.kill)(proc.pid, signum)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            return


def wait_until(ready: Callable[[], bool], proc: Proc, what: str, log: Path) -> None:
    """Poll `ready` until true; fail if `proc` exits or TIMEOUT passes."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = "exited" if proc.returncode is not None else "timed out"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{what} {why} before accepting connections:\n{tail}")
        time.sleep(0.2)


def start_postgres(bindir: Path, port: int, stack: ExitStack) -> None:
    """Create a temporary cluster with initdb and serve it on HOST:`port`."""
    user = pg_user()
    tmp = make_tempdir("market-pg-", stack)
    data, sock, log = tmp / "data", tmp / "sock", tmp / "postgres.log"
    sock.mkdir()
    if user:
        for path in (tmp, sock):
            shutil.chown(path, user, user)
    run: dict[str, Any] = {"user": user, "group": user, "cwd": tmp}
    run["extra_groups"] = [] if user else None  # drop root's supplementary groups
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    for locale in ("C.UTF-8", "C"):
        shutil.rmtree(data, ignore_errors=True)
        args = [*initdb, "--encoding=UTF8", f"--locale={locale}"]
        if spawn(args, log, stack, **run).wait() == 0:
            break
    else:
        raise RuntimeError(f"initdb failed:\n{log.read_text(errors='replace')}")
    opts = "fsync=off synchronous_commit=off full_page_writes=off max_connections=200"
    args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", HOST]
    args += ["-k", str(sock), *(a for opt in opts.split() for a in ("-c", opt))]
    proc = spawn(args, log, stack, **run)
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]

    def stop() -> None:
        subprocess.run(pg_ctl, check=False, capture_output=True, **run)

    stack.callback(stop)
    isready = [str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(port)]

    def ready() -> bool:
        if Path(isready[0]).exists():
            return subprocess.run(isready, check=False).returncode == 0
        if probe(port):
            time.sleep(0.5)  # the port opens a moment before logins are accepted
            return True
        return False

    wait_until(ready, proc, "PostgreSQL", log)
    say(f"PostgreSQL started on {HOST}:{port}")


def start_redis(binary: str, port: int, stack: ExitStack) -> None:
    """Start a non-persistent redis-server on HOST:`port`."""
    tmp = make_tempdir("market-redis-", stack)
    opts = f"--port {port} --bind {HOST} --appendonly no --daemonize no --save"
    log = tmp / "redis.log"
    proc = spawn([binary, *opts.split(), "", "--dir", str(tmp)], log, stack)
    wait_until(lambda: b"+PONG" in probe(port, b"PING\r\n"), proc, "Redis", log)
    say(f"Redis started on {HOST}:{port}")


class SignalError(Exception):
    """Raised from the SIGINT/SIGTERM handler so that cleanup runs."""


def on_signal(signum: int, _frame: FrameType | None) -> None:
    """Ignore further SIGINT/SIGTERM and unwind with SignalError."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SignalError(signum)


def main(argv: list[str]) -> int:
    """Parse arguments, start the services, run the command and clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("missing COMMAND (after --)")
    pg_bin, redis_bin = ensure_binaries(not opts.no_postgres, not opts.no_redis)
    env, child = dict(os.environ), None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    with ExitStack() as stack:
        try:
            pg_port, redis_port = free_ports(2)
            if pg_bin:
                start_postgres(pg_bin, pg_port, stack)
                url = f"postgresql://postgres@{HOST}:{pg_port}/postgres"
                env["MARKET_TEST_POSTGRES_URL"] = url
            if redis_bin:
                start_redis(redis_bin, redis_port, stack)
                env["MARKET_TEST_REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
            child = subprocess.Popen(command, env=env)
            code = child.wait()
            return 128 - code if code < 0 else code
        except SignalError as exc:
            signum = int(exc.args[0])
            say(f"got signal {signum}: stopping the command and services")
            if child is not None:  # a terminal's Ctrl-C has already reached it
                terminate(child, 5.0, None if signum == signal.SIGINT else signum, False)
            return 128 + signum
        except (RuntimeError, OSError) as exc:
            say(f"error: {exc}")
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
