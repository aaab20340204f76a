"""The serve page (`GET /`) in headless Chromium: `python -m deepseek_tf.bench.page --index DIR
--query Q --output bench/page.png` (`make page-screenshot`) starts `deepseek-tf serve` on DIR,
opens `/?q=Q&left=dense&right=bm25`, waits for both columns and writes a PNG of the page.

`Chromium` drives the browser over the DevTools protocol on a pair of pipes
(`--remote-debugging-pipe`: JSON messages ended by a NUL byte on file descriptors 3 and 4), so
nothing beyond the Chromium binary is needed; tests/test_page.py loads, types into and reads the
page with it. The page runs in real time: its round-trip latencies are real ones."""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry

__all__ = ["CHROMIUM_NAMES", "Chromium", "find_chromium", "page_url"]

# DEEPSEEK_TF_CHROMIUM names a binary; else the first of these on PATH
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",  # as root (CI containers) Chromium refuses to start with its sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    given = os.environ.get("DEEPSEEK_TF_CHROMIUM")
    if given:
        return shutil.which(given)
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


def page_url(base: str, query: str, left: str = "dense", right: str = "bm25", k: int = 10, **more: str) -> str:
    """The page's address that runs QUERY in both columns as soon as it loads."""
    params = {"q": query, "left": left, "right": right, "k": str(k), **more}
    return f"{base.rstrip('/')}/?{urlencode(params)}"


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol:

    with Chromium(window=(1400, 900)) as browser:
        browser.open(url)
        browser.wait_for("document.body.dataset.state === 'done'")
        rows = browser.evaluate("[...document.querySelectorAll('.hit')].map(li => li.dataset.id)")
    """

    def __init__(self, binary: str | None = None, window: tuple[int, int] = (1400, 900), timeout: float = 60.0):
        binary = binary or find_chromium()
        if binary is None:
            raise UserError(f"no Chromium found (tried {', '.join(CHROMIUM_NAMES)}): `make install-browser`")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="deepseek-chromium-")
        self._log = open(Path(self._profile.name) / "stderr.log", "w+b")  # noqa: SIM115 (closed in close)
        # the browser reads commands on fd 3 and writes answers on fd 4: bash puts the pipes there
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        script = f'exec "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-'
        argv = [binary, *FLAGS, f"--user-data-dir={self._profile.name}", f"--window-size={window[0]},{window[1]}"]
        self.proc = subprocess.Popen(
            ["bash", "-c", script, "chromium", *argv, "about:blank"],
            pass_fds=(cmd_r, out_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=self._profile.name,
        )
        os.close(cmd_r)
        os.close(out_w)
        self._send_fd, self._ids, self._answers = cmd_w, 0, queue.Queue()
        threading.Thread(target=self._read, args=(out_r,), daemon=True).start()
        try:
            targets = self.call("Target.getTargets")["targetInfos"]
            page = next((t["targetId"] for t in targets if t["type"] == "page"), None)
            if page is None:
                page = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.attached = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
            self.call("Page.enable", to=self.attached)
            self.page(
                "Emulation.setDeviceMetricsOverride",
                width=window[0],
                height=window[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            self.call("Runtime.enable", to=self.attached)
        except BaseException:
            self.close()
            raise

    def _read(self, fd: int) -> None:
        buffer = b""
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._answers.put(json.loads(message))
        self._answers.put(None)  # the browser is gone

    def call(self, method: str, to: str | None = None, **params):
        """Sends one DevTools command (to the browser, or TO an attached page's id) and returns its
        result; events that arrive meanwhile are dropped."""
        self._ids += 1
        message = {"id": self._ids, "method": method, "params": params}
        if to is not None:
            message["sessionId"] = to
        os.write(self._send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                answer = self._answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise UserError(f"Chromium did not answer {method} within {self.timeout:.0f} s") from None
            if answer is None:
                raise UserError(f"Chromium exited during {method}: {self.stderr_tail()}")
            if answer.get("id") == self._ids:
                if "error" in answer:
                    raise UserError(f"Chromium refused {method}: {answer['error'].get('message')}")
                return answer.get("result", {})

    def stderr_tail(self, lines: int = 5) -> str:
        self._log.seek(0)
        return " | ".join(self._log.read().decode(errors="replace").strip().splitlines()[-lines:])

    def page(self, method: str, **params):
        return self.call(method, to=self.attached, **params)

    def open(self, url: str) -> None:
        """Loads URL and waits until its document has been parsed."""
        self.evaluate("window.deepseekLeaving = true")  # marks the document being left
        result = self.page("Page.navigate", url=url)
        if result.get("errorText"):
            raise UserError(f"Chromium could not load {url}: {result['errorText']}")
        self.wait_for("!window.deepseekLeaving && document.readyState !== 'loading'")

    def evaluate(self, expression: str):
        """EXPRESSION's value in the page (a JSON value; a promise is awaited)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise UserError(f"{expression[:80]!r} failed in the page: {details.get('exception', details)}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float | None = None) -> None:
        """Polls CONDITION (a JavaScript expression) until it is true."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.evaluate(f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise UserError(f"the page never met {condition!r}")
            time.sleep(0.05)

    def type_text(self, selector: str, text: str) -> None:
        """Focuses SELECTOR's element and types TEXT into it, as keys would."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.page("Input.insertText", text=text)

    def press_enter(self) -> None:
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "nativeVirtualKeyCode": 13}
        self.page("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
        self.page("Input.dispatchKeyEvent", type="keyUp", **key)

    def screenshot(self, path: str | Path) -> None:
        """The page as shown, a PNG written at PATH."""
        data = self.page("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.write(self._send_fd, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        os.close(self._send_fd)
        self._log.close()
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_args(argv: list[str] | None):
    p = command_parser(
        "page-screenshot",
        "The serve page in headless Chromium: a server on --index, both columns run, a PNG written.",
        ["python -m deepseek_tf.bench.page --index runs/soak_index --query 'wing flutter' --output bench/page.png"],
    )
    p.add_argument("--index", required=True, help="an index built by `deepseek-tf index`")
    p.add_argument("--query", default="boundary layer transition on a swept wing")
    p.add_argument("--left", default="dense", choices=["dense", "bm25", "hybrid"])
    p.add_argument("--right", default="bm25", choices=["dense", "bm25", "hybrid"])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--output", default="bench/page.png", help="the PNG to write")
    p.add_argument("--window", default="1400x1000", help="WIDTHxHEIGHT in pixels")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    from deepseek_tf.bench.serve_process import Server, serve_argv

    args = parse_args(argv)
    width, _, height = args.window.partition("x")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    server = Server(serve_argv(Path(args.index), [], threads=0))
    try:
        url = page_url(server.url, args.query, args.left, args.right, args.k)
        with Chromium(window=(int(width), int(height))) as browser:
            # another query first warms the encoder (and not the result cache): the picture shows steady latencies
            for shown in (page_url(server.url, "warm up " + args.query, args.left, args.right, args.k), url):
                browser.open(shown)
                browser.wait_for("document.body.dataset.state === 'done'")
            browser.screenshot(output)
    finally:
        server.stop()
    print(f"wrote {output} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
