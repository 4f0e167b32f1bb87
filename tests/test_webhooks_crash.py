"""Webhooks survive crashes (extension): a real ``stepstone serve`` killed with SIGKILL while
it is sending, and a receiver that dies mid-request; the notice still arrives, signed."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import orjson

from stepstone.webhooks.signing import verify
from tests.cli.conftest import start_server

SECRET = "crash-test-secret-0123456789"


class Receiver(threading.Thread):
    """Request 1 is held open (the sender is killed meanwhile), request 2 has its connection
    dropped unanswered (the receiver "dies"), request 3 on gets a 200."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.bodies: list[tuple[str, bytes]] = []
        self.first = threading.Event()
        self.delivered = threading.Event()
        self.held: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            headers = dict(line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:])
            while len(body) < int(headers.get("content-length", "0")):
                body += conn.recv(65536)
            self.bodies.append((headers.get("stepstone-signature", ""), body))
            if len(self.bodies) == 1:
                self.held.append(conn)
                self.first.set()
            elif len(self.bodies) == 2:
                conn.close()
            else:
                conn.sendall(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                conn.close()
                self.delivered.set()


def test_a_notice_survives_a_killed_sender_and_a_dying_receiver(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.start()
    server = start_server(tmp_path / "p", "--insecure-no-auth")
    try:
        hooks = f"{server.url}/client/v4/accounts/default/workflows/failing/stepstone/hooks"
        made = httpx.post(
            hooks,
            json={
                "url": f"http://127.0.0.1:{receiver.port}/h",
                "events": ["errored"],
                "secret": SECRET,
            },
        )
        assert made.status_code == 200, made.text
        server.run("workflows", "trigger", "failing", "--id", "k1")
        server.wait_status("failing", "k1", "errored")
        assert receiver.first.wait(30), "the first attempt never arrived"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()
    for held in receiver.held:
        held.close()
    # The same database, a new process: the lease of the killed one is dropped at start.
    again = start_server(tmp_path / "p", "--insecure-no-auth")
    try:
        assert receiver.delivered.wait(60), f"never delivered: {len(receiver.bodies)} tries"
        deliveries = httpx.get(
            f"{again.url}/client/v4/accounts/default/workflows/failing/stepstone/hooks/deliveries"
        ).json()["result"]
        deadline = time.monotonic() + 10
        while deliveries[0]["state"] != "delivered" and time.monotonic() < deadline:
            time.sleep(0.1)
            deliveries = httpx.get(
                f"{again.url}/client/v4/accounts/default/workflows/failing"
                "/stepstone/hooks/deliveries"
            ).json()["result"]
    finally:
        again.stop()
        receiver.sock.close()
    [delivery] = deliveries
    assert delivery["state"] == "delivered" and delivery["instance"] == "k1"
    # Attempt 1 died with its sender (no log row), attempt 2 with the receiver, 3 arrived.
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["log"]] == [None, 204]
    bodies = [orjson.loads(b) for _, b in receiver.bodies]
    assert {b["id"] for b in bodies} == {delivery["id"]}  # one notice, sent at least once
    assert bodies[-1]["instance"] == "k1" and bodies[-1]["status"] == "errored"
    signature, body = receiver.bodies[-1]
    assert verify(SECRET, signature, body, int(time.time()))
