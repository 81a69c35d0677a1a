"""Verifying incoming provider webhooks (`agent.webhooks`) with the emulator's signer and the openai SDK."""

from __future__ import annotations

import base64
import json
import time

import pytest

from agent.emulator.webhooks import event_body, sign
from agent.webhooks import (
    BadPayloadError,
    BadSignatureError,
    verify_event,
)

SECRET = "whsec_" + base64.b64encode(b"emulator-test-key-0123456789").decode()
OTHER = "whsec_" + base64.b64encode(b"another-key-000000000000000000").decode()


def _signed(provider: str, phase: str, job: dict[str, str], *, at: int | None = None):
    body = event_body(provider, phase, job, int(time.time()))
    return body, sign(SECRET, "wh_1", at if at is not None else int(time.time()), body)


def test_an_openai_event_signed_by_the_emulator_unwraps_with_the_sdk() -> None:
    body, headers = _signed("openai", "done", {"id": "batch_abc"})
    event = verify_event("openai", body, headers, SECRET)
    assert (event.provider, event.webhook_id, event.type, event.job_id) == (
        "openai",
        "wh_1",
        "batch.completed",
        "batch_abc",
    )
    assert event.is_batch_event


def test_a_gemini_event_names_the_batch() -> None:
    body, headers = _signed("gemini", "expired", {"id": "x1", "name": "batches/x1"})
    event = verify_event("gemini", body, headers, SECRET)
    assert (event.type, event.job_id, event.is_batch_event) == ("batch.expired", "batches/x1", True)


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_a_wrong_secret_a_changed_body_or_a_stale_timestamp_is_refused(provider: str) -> None:
    body, headers = _signed(provider, "done", {"id": "b1", "name": "batches/b1"})
    with pytest.raises(BadSignatureError):
        verify_event(provider, body, headers, OTHER)
    with pytest.raises(BadSignatureError):
        verify_event(provider, body.replace(b"b1", b"b2"), headers, SECRET)
    stale_body, stale = _signed(provider, "done", {"id": "b1"}, at=int(time.time()) - 301)
    with pytest.raises(BadSignatureError):
        verify_event(provider, stale_body, stale, SECRET)
    with pytest.raises(BadSignatureError):  # no signature at all
        verify_event(provider, body, {"content-type": "application/json"}, SECRET)


def test_a_signed_body_that_is_not_an_event_is_a_bad_payload() -> None:
    body = json.dumps(["not", "an", "event"]).encode()
    headers = sign(SECRET, "wh_2", int(time.time()), body)
    with pytest.raises(BadPayloadError):
        verify_event("gemini", body, headers, SECRET)


def test_an_event_about_something_else_is_not_a_batch_event() -> None:
    body = json.dumps({"id": "evt", "type": "response.completed", "data": {"id": "resp_1"}})
    headers = sign(SECRET, "wh_3", int(time.time()), body.encode())
    event = verify_event("openai", body.encode(), headers, SECRET)
    assert not event.is_batch_event


def test_the_emulator_redelivers_until_the_receiver_accepts() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from agent.emulator.webhooks import deliver

    received: list[tuple[bytes, dict[str, str]]] = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(500 if len(received) == 1 else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = event_body("openai", "failed", {"id": "batch_f"}, int(time.time()))
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert deliver(url, SECRET, body, "wh_retry")
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 2  # the 500 was retried
    assert {headers["webhook-id"] for _, headers in received} == {"wh_retry"}
    event = verify_event("openai", received[1][0], received[1][1], SECRET)
    assert (event.type, event.job_id) == ("batch.failed", "batch_f")
