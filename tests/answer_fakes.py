"""A fake OpenAI-compatible chat-completions server for the answer tests (tests/test_answer.py)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = "Light cotton dresses [1][3]; also [2, 9] and [0]."


class FakeGenerator:
    """A chat-completions server on 127.0.0.1. Each request takes the next step of `script`
    ("ok" once it is empty): "ok", "500", "401" (its body quotes the key it was sent), "sleep"
    (`sleep` seconds, then ok), "garbage" (HTML), "no_choices" (JSON without choices). A streamed
    answer is `chunks`, and with `gate` set it waits for the gate after its first chunk."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[str] = []
        self.reply, self.chunks, self.sleep = REPLY, None, 2.0
        self.gate: threading.Event | None = None
        self.gate_opened: list[bool] = []
        self.active = self.most_active = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status: int, body: bytes, kind: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = fake.script.pop(0) if fake.script else "ok"
                    fake.active += 1
                    fake.most_active = max(fake.most_active, fake.active)
                try:
                    self.answer(step, body)
                except OSError:  # the client gave up (a timeout)
                    pass
                finally:
                    with fake._lock:
                        fake.active -= 1

            def answer(self, step: str, body: dict):
                if step == "sleep":
                    time.sleep(fake.sleep)
                if step == "500":
                    return self.send(500, b"upstream exploded", "text/plain")
                if step == "401":
                    sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    return self.send(401, json.dumps({"error": {"message": f"Incorrect API key: {sent}"}}).encode())
                if step == "garbage":
                    return self.send(200, b"<html>surprise</html>", "text/html")
                if step == "no_choices":
                    return self.send(200, b'{"id": "x", "object": "chat.completion"}')
                if not body.get("stream"):
                    message = {"role": "assistant", "content": fake.reply}
                    return self.send(200, json.dumps({"choices": [{"index": 0, "message": message}]}).encode())
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i, piece in enumerate(fake.chunks or [fake.reply]):
                    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                    if i == 0 and fake.gate is not None:
                        fake.gate_opened.append(fake.gate.wait(10))
                self.wfile.write(b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def prompts(self) -> list[str]:
        return [r["body"]["messages"][0]["content"] for r in self.requests]

    def close(self):
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()
