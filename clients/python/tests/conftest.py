"""Test support: a real `switchboard up` per test (its own socket, data
directory and optional config), the real CLI, and helper processes.

The binaries come from `$SWITCHBOARD_BIN_DIR`, else the workspace's
`target/debug` (the test command builds them first).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("SWITCHBOARD_BIN_DIR", REPO / "target" / "debug"))
SWITCHBOARD = BIN_DIR / "switchboard"
HERE = Path(__file__).resolve().parent

T = TypeVar("T")


def run_async(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Runs an async test function on a fresh event loop (bounded at 60 s)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 60))

    return wrapper


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit: float = 10.0) -> None:
    """Polls `check` until it holds (every 20 ms, at most `limit` seconds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened within {limit} s: {what}")


class Daemon:
    """A `switchboard up` process of this test."""

    def __init__(
        self,
        directory: Path,
        config: Optional[str] = None,
        args: Optional[List[str]] = None,
        wrapper: Optional[List[str]] = None,
    ) -> None:
        self.dir = directory
        self.wrapper = list(wrapper or [])
        self.socket = directory / "bus.sock"
        self.address = f"unix:{self.socket}"
        self.args = list(args or [])
        self.config: Optional[Path] = None
        if config is not None:
            self.config = directory / "switchboard.toml"
            self.config.write_text(config)
        self.process: Optional[subprocess.Popen[str]] = None
        self.start()

    def start(self) -> None:
        command = [
            *self.wrapper,
            str(SWITCHBOARD),
            "up",
            "--listen",
            self.address,
            "--data-dir",
            str(self.dir / "data"),
        ]
        if self.config is not None:
            command += ["--config", str(self.config)]
        log = open(self.dir / "daemon.log", "a")  # noqa: SIM115 - the daemon keeps writing after we return
        self.process = subprocess.Popen(
            command + self.args,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "SWITCHBOARD_LOG": "info"},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            if "ready" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise AssertionError(f"the daemon did not start: {self.log()}")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def log(self) -> str:
        return (self.dir / "daemon.log").read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Runs the `switchboard` CLI against this daemon."""
        result = subprocess.run(
            [str(SWITCHBOARD), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "SWITCHBOARD_ADDR": self.address},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"switchboard {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    d.stop()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: List[Daemon] = []

    def make(
        config: Optional[str] = None, args: Optional[List[str]] = None, wrapper: Optional[List[str]] = None
    ) -> Daemon:
        d = Daemon(tmp_path, config, args, wrapper)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


class Helper:
    """A Python helper process (tests/helpers.py ROLE ...) on the bus; killed at the end."""

    def __init__(self, address: str, role: str, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "helpers.py"), role, *args],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "SWITCHBOARD_ADDR": address, **(env or {})},
        )
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().strip()
        assert self.first_line, f"helper {role} did not start"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def helpers() -> Iterator[Callable[..., Helper]]:
    started: List[Helper] = []

    def start(address: str, role: str, *args: str, env: Optional[Dict[str, str]] = None) -> Helper:
        helper = Helper(address, role, *args, env=env)
        started.append(helper)
        return helper

    yield start
    for helper in started:
        helper.kill()


class Program:
    """A Rust program of the workspace (target/debug/NAME ROLE) on the bus; killed at the end."""

    def __init__(self, address: str, name: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN_DIR / name), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "SWITCHBOARD_ADDR": address},
        )

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        out, _ = self.process.communicate()
        return out
