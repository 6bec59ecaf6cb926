"""The bot as an operator runs it: `python -m bot` in a process of its own, configured by its environment,
which a test can kill (SIGKILL: no cleanup at all) and start again on the same database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BotProcess:
    def __init__(self, environment: dict[str, str], *, workdir: Path, name: str = "bot"):
        self.port = free_port()
        self.environment = {**environment, "PORT": str(self.port)}
        self.workdir = workdir  # no stray .env is read from here
        self.log_path = workdir / f"{name}.log"
        self._process: subprocess.Popen | None = None

    async def start(self, timeout: float = 30.0) -> None:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **self.environment}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bot"], cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self._process.poll() is not None:
                    raise AssertionError(f"the bot exited with {self._process.returncode}:\n{self.log()}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"the bot did not answer /healthz within {timeout}s:\n{self.log()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the process vanishes mid-answer, as after an out-of-memory kill or a power cut."""
        assert self._process is not None
        self._process.kill()
        self._process.wait(timeout=10)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, as a platform stops a process; the exit status."""
        if self._process is None or self._process.poll() is not None:
            return self._process.returncode if self._process else 0
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            raise AssertionError(f"the bot did not stop within {timeout}s:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
