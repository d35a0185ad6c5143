"""A throw-away PostgreSQL server for tests of the PostgreSQL participant.

    with TemporaryPostgres() as server:
        dsn = server.create_database("bank_a")
        ...

`__enter__` runs `initdb` and `pg_ctl start` from `bin_dir` (default
/usr/lib/postgresql/15/bin) in a new temporary directory: the server listens
on 127.0.0.1 only, on a free port, with its unix socket inside that
directory, trust authentication for the `postgres` superuser and
`max_prepared_transactions` set (2PC needs it above 0). Durability is off
(fsync, full_page_writes): it is a test server. `__exit__` stops it with
`pg_ctl stop -m immediate`, kills the postmaster (and its children) by PID
if it is still there, and removes the directory.

initdb and postgres refuse to run as root. When the effective uid is 0, all
server-side commands run as an existing unprivileged user (`nobody` unless
`run_as` says otherwise) through `setpriv --reuid --regid --clear-groups`
(or `runuser -u` without setpriv), and the temporary directory is chowned to
that user. No user is created.

`PostgresUnavailable` is raised when the binaries (or the unprivileged user,
or a way to switch to it) are missing; a test fixture turns it into
`pytest.skip(str(error))`. Any other failure (initdb or start failing) is a
RuntimeError carrying the command's output and the server log.

Not for production: no password, no durability.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["DEFAULT_BIN_DIR", "PostgresUnavailable", "TemporaryPostgres"]

DEFAULT_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
HOST = "127.0.0.1"

INITDB_TIMEOUT_S = 120.0
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
COMMAND_TIMEOUT_S = 60.0
EXIT_WAIT_S = 5.0
# A free port is picked, then bound by the server: another process may take
# it in between, so starting is tried this many times.
START_ATTEMPTS_MAX = 3
LOG_TAIL_CHARS_MAX = 4000
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run here (binaries or an unprivileged user missing)."""


class TemporaryPostgres:
    """A PostgreSQL server in a temporary directory, for one `with` block."""

    def __init__(
        self,
        *,
        bin_dir: str | Path = DEFAULT_BIN_DIR,
        max_prepared_transactions: int = 20,
        max_connections: int = 40,
        run_as: str = "nobody",
    ) -> None:
        assert 0 < max_prepared_transactions <= 1000, max_prepared_transactions
        assert 0 < max_connections <= 1000, max_connections
        self.bin_dir = Path(bin_dir)
        self.max_prepared_transactions = max_prepared_transactions
        self.max_connections = max_connections
        self.run_as = run_as
        self.host = HOST
        self.port: int | None = None
        self.pid: int | None = None
        self.directory: Path | None = None
        self._prefix: list[str] = []
        self._owner: tuple[int, int] | None = None

    # -- public --------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for `dbname` on this server (TCP, loopback)."""
        assert self.port is not None, "the server is not running"
        _check_database_name(dbname)
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; return its DSN."""
        assert self.port is not None, "the server is not running"
        _check_database_name(name)
        self._run(
            [str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", SUPERUSER, name],
            timeout_s=COMMAND_TIMEOUT_S,
            as_server=False,
        )
        return self.dsn(name)

    def __enter__(self) -> TemporaryPostgres:
        self._check_available()
        self.directory = Path(tempfile.mkdtemp(prefix="pgtest-"))
        try:
            if self._owner is not None:
                os.chown(self.directory, *self._owner)
            self._initdb()
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (immediate mode, then SIGKILL) and remove the directory."""
        directory, self.directory = self.directory, None
        if directory is None:
            return
        try:
            if self.pid is not None:
                self._stop_server(directory)
        finally:
            self.pid = None
            self.port = None
            shutil.rmtree(directory, ignore_errors=True)

    # -- setup ---------------------------------------------------------------

    def _check_available(self) -> None:
        for name in ("initdb", "pg_ctl", "postgres", "createdb"):
            path = self.bin_dir / name
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise PostgresUnavailable(
                    f"PostgreSQL binary {path} not found (install PostgreSQL 15"
                    " server binaries, e.g. the postgresql-15 package)"
                )
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam(self.run_as)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no user {self.run_as!r} to run PostgreSQL as"
            ) from None
        if user.pw_uid == 0:
            raise PostgresUnavailable(f"user {self.run_as!r} is root; initdb refuses it")
        self._owner = (user.pw_uid, user.pw_gid)
        setpriv, runuser = shutil.which("setpriv"), shutil.which("runuser")
        if setpriv is not None:
            self._prefix = [setpriv, f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        elif runuser is not None:
            self._prefix = [runuser, "-u", self.run_as, "--"]
        else:
            raise PostgresUnavailable("running as root and neither setpriv nor runuser exists")

    def _initdb(self) -> None:
        assert self.directory is not None
        data = self.directory / "data"
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            timeout_s=INITDB_TIMEOUT_S,
        )
        settings = {
            "listen_addresses": _quote_setting(HOST),
            "unix_socket_directories": _quote_setting(str(self.directory)),
            "max_prepared_transactions": str(self.max_prepared_transactions),
            "max_connections": str(self.max_connections),
            "shared_buffers": "'16MB'",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
            "logging_collector": "off",
        }
        lines = "".join(f"{name} = {value}\n" for name, value in settings.items())
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# pgtest.TemporaryPostgres\n" + lines)

    def _start(self) -> None:
        assert self.directory is not None
        data, log = self.directory / "data", self.directory / "postgres.log"
        last_error: RuntimeError | None = None
        for _ in range(START_ATTEMPTS_MAX):
            port = _free_port()
            try:
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "start",
                        "-D",
                        str(data),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(START_TIMEOUT_S),
                        "-o",
                        f"-p {port}",
                    ],
                    timeout_s=START_TIMEOUT_S + 10,
                )
            except RuntimeError as error:
                last_error = error
                self.pid = _read_pid(data)
                if self.pid is not None:  # started but not ready in time
                    raise
                continue
            self.port, self.pid = port, _read_pid(data)
            if self.pid is None:
                raise RuntimeError(f"postgres started but wrote no postmaster.pid\n{_tail(log)}")
            return
        assert last_error is not None
        raise RuntimeError(f"{last_error}\n--- server log ---\n{_tail(log)}")

    # -- teardown ------------------------------------------------------------

    def _stop_server(self, directory: Path) -> None:
        pid = self.pid
        assert pid is not None
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(directory / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    str(STOP_TIMEOUT_S),
                ],
                timeout_s=STOP_TIMEOUT_S + 10,
                cwd=directory,
            )
        if _wait_exit(pid, EXIT_WAIT_S):
            return
        # Still there: SIGKILL the postmaster and its children (each backend
        # is its own session leader, so they are found by parent PID).
        for process in [*_children(pid), pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process, signal.SIGKILL)
        if not _wait_exit(pid, EXIT_WAIT_S):
            raise RuntimeError(f"postgres (pid {pid}) did not exit after SIGKILL")

    # -- helpers -------------------------------------------------------------

    def _run(self, command: list[str], *, timeout_s: float, as_server: bool = True, cwd: Path | None = None) -> str:
        cwd = cwd if cwd is not None else self.directory
        assert cwd is not None
        prefix = self._prefix if as_server else []
        completed = subprocess.run(
            prefix + command,
            cwd=cwd,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} exited with {completed.returncode}:\n{completed.stdout[-LOG_TAIL_CHARS_MAX:]}"
            )
        return completed.stdout


def _check_database_name(name: str) -> None:
    if DATABASE_NAME.fullmatch(name) is None:
        raise ValueError(f"database name must match {DATABASE_NAME.pattern}: {name!r}")


def _quote_setting(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _environment() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGHOST...) of the caller must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _read_pid(data: Path) -> int | None:
    try:
        first = (data / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone; reaped if it is ours)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (read from /proc; empty where there is none)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS_MAX:]
    except OSError:
        return "(no server log)"
