"""A private Redis for the tests that need one: `redis-server` on a free port, killed (and restarted) at will.

Redis is optional on a developer's machine (those tests skip, saying why) and mandatory in CI, where
`.ci/run` sets REQUIRE_REDIS=1 and a skip becomes a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

REDIS_REQUIRED = os.environ.get("REQUIRE_REDIS") == "1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str):
        self.binary = binary
        self.port = _free_port()
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "yes",
            ],  # DEBUG SLEEP: a Redis that answers slowly
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """As a crashed or unreachable Redis: gone at once, with everything it held."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


def redis_binary() -> str:
    binary = shutil.which("redis-server") or next(
        (path for path in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.path.exists(path)), None
    )
    if binary is None:
        message = "redis-server is not installed"
        if REDIS_REQUIRED:
            pytest.fail(message + " and REQUIRE_REDIS=1")
        pytest.skip(
            message + "; install it (apt install redis-server) to run the tests that share budgets through Redis"
        )
    return binary
