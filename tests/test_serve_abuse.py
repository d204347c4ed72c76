"""`classify.py --serve` under abuse, on loopback: slow sockets, many viewers, bodies nested or cut
short, request lines too long, fuzzed heads. The server answers each with a status and goes on:
no traceback, no hang, and /healthz answers whatever the others do."""

import random
import socket
import threading
import time

import pytest
from PIL import Image

from test_serve import Served

TOKEN = "a-token-for-the-abuse-tests-0123"
PROBE_SECONDS = 5  # Generous on a loaded 2-core machine; benchmarks/abuse.py measures the real figure.


@pytest.fixture
def frames(tiny_build, data_dir, tmp_path):
    from edge_fashion.pipeline import data

    folder = tmp_path / "frames"
    folder.mkdir()
    for index, image in enumerate(data.load_fashion_mnist(data_dir, download=False).test_images[:4]):
        Image.fromarray(image).resize((224, 224)).save(folder / f"{index}.jpg", quality=90)
    return folder


@pytest.fixture
def serve(device_python, tiny_build, tmp_path):
    started = []

    def start(*arguments: str) -> Served:
        started.append(Served(device_python, tiny_build / "device", tmp_path, *arguments))
        return started[-1]
    yield start
    for served in started:
        served.kill()


def port_of(served: Served) -> int:
    return int(served.url.rsplit(":", 1)[1].strip("/"))


def exchange(port: int, data: bytes, seconds: float = PROBE_SECONDS, finish: bool = True,
             head_only: bool = False) -> bytes:
    """Send `data`, then (finish) close the sending side; what is answered within `seconds`, up to
    the end of the answer's head when head_only (a stream's body never ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as connection:
        try:
            connection.sendall(data)
            if finish:
                connection.shutdown(socket.SHUT_WR)
        except OSError:  # Answered and closed before all was sent (a head too long): read the answer.
            pass
        answer, deadline = b"", time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            answer += chunk
            if head_only and b"\r\n\r\n" in answer:
                break
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def healthz(port: int, token: str | None) -> tuple:
    """(status, seconds) of one /healthz with the token."""
    started = time.monotonic()
    query = f"?token={token}" if token else ""
    answer = exchange(port, f"GET /healthz{query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), finish=False,
                      head_only=True)
    return status_of(answer), time.monotonic() - started


class Crowd:
    """Slow sockets (one header line every `period` s, never finishing) and /events viewers, held open."""

    def __init__(self, port: int, slow: int, viewers: int, period: float = 2.0):
        self.port, self.period, self.running = port, period, True
        self.slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(slow)]
        for connection in self.slow:
            connection.sendall(b"GET /healthz HTTP/1.1\r\n")
        self.viewers = []
        for _ in range(viewers):
            viewer = socket.create_connection(("127.0.0.1", port))
            viewer.sendall(f"GET /events?token={TOKEN} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            self.viewers.append(viewer)
        self.thread = threading.Thread(target=self.drip, daemon=True)
        self.thread.start()

    def drip(self):
        while self.running:
            time.sleep(self.period)
            for connection in self.slow:
                try:
                    connection.sendall(b"X-Slow: 1\r\n")
                except OSError:  # Dropped by the server: that is its right.
                    pass

    def served_viewers(self) -> int:
        """How many viewers got their event stream's head."""
        count = 0
        for viewer in self.viewers:
            viewer.settimeout(PROBE_SECONDS)
            try:
                count += viewer.recv(64).startswith(b"HTTP/1.0 200")
            except OSError:
                pass
        return count

    def close(self):
        self.running = False
        self.thread.join()
        for connection in self.slow + self.viewers:
            connection.close()


@pytest.mark.parametrize("token", [None, TOKEN], ids=["loopback", "token"])
def test_slow_sockets_and_many_viewers_leave_healthz_answering(serve, frames, token):
    served = serve("--replay", str(frames), "--fps", "20", *(["--token", token] if token else []))
    port = port_of(served)
    served.wait_until(lambda: healthz(port, token)[0] == 200, "a first frame")
    crowd = Crowd(port, slow=80, viewers=80)
    path = f"/healthz?token={token}" if token else "/healthz"
    try:
        time.sleep(3)  # Past a drip or two: every slow socket is in the middle of its head.
        before = served.json(path)[1]["frames"]
        probes = [healthz(port, token) for _ in range(10)]
        assert [status for status, _ in probes] == [200] * 10, probes
        assert max(seconds for _, seconds in probes) < PROBE_SECONDS
        assert crowd.served_viewers() >= 60  # Streams have their own slots.
        time.sleep(2)
        after = served.json(path)[1]["frames"]
        assert after >= before + 10  # Frames kept being classified (20 a second asked).
    finally:
        crowd.close()
    served.stop()


def test_a_deeply_nested_capture_body_is_answered_400(serve, frames):
    served = serve("--replay", str(frames), "--fps", "20", "--captures", "labelled")
    served.wait_until(served.frames_done, "a first frame")
    body = b"[" * 1000
    answer = exchange(port_of(served), b"POST /capture HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                      b"\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    assert status_of(answer) == 400 and b"label" in answer
    assert served.get("/healthz")[0] == 200
    _, stderr = served.stop()  # Asserts no traceback.
    assert not (served.stdout_path.parent / "labelled").exists()


def test_a_request_line_over_64_kb_is_answered_414_with_verbose(serve, frames):
    served = serve("--replay", str(frames), "--fps", "20", "--verbose")
    answer = exchange(port_of(served), b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status_of(answer) == 414
    assert served.get("/healthz")[0] == 200
    _, stderr = served.stop()
    assert "http: 127.0.0.1 - - 414" in stderr


def test_a_capture_body_shorter_than_its_length_is_answered_408(serve, frames):
    served = serve("--replay", str(frames), "--fps", "20", "--captures", "labelled")
    served.wait_until(served.frames_done, "a first frame")
    started = time.monotonic()
    answer = exchange(port_of(served), b"POST /capture HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 200\r\n\r\n{\"label\": ", seconds=30, finish=False)
    assert status_of(answer) == 408 and b"did not arrive whole" in answer, answer
    assert time.monotonic() - started < 20
    served.stop()
    assert not (served.stdout_path.parent / "labelled").exists()


def fuzzed_request(rng: random.Random) -> bytes:
    """A request head and body, mangled: half of them well formed but for one part (so that the
    routes and the capture's body parsing are reached), the rest odd from the start; some cut."""
    method = rng.choice(["GET", "POST", "POST", "PUT", "HEAD", "get", "\x00", "GET GET", ""])
    path = rng.choice(["/", "/healthz", "/capture", "/capture", "/events", "/stream.mjpg", "/latest.json", "/metrics",
                       "//", "/%00", "/" + "a" * rng.randrange(1, 20000), "*", "http://x/healthz"])
    version = rng.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "HTTP/1.1 extra"])
    body = rng.choice([b"", b'{"label": "Coat"}', b'{"label": ' * rng.randrange(1, 100),
                       b"[" * rng.choice([1, 100, 1000, 1024]), b"{" * 500 + b"}" * 500, b'{"label": "\\ud800"}',
                       b'"Coat"', b"[]", b"null",
                       bytes(rng.randrange(256) for _ in range(rng.randrange(0, 1500)))])
    headers = [rng.choice(["Host: localhost", "Host:", "Host: 127.0.0.1:1", "Content-Type: application/json",
                           f"Content-Length: {rng.choice([-1, 0, 5, 100, 1024, 1025, 10**12])}",
                           "Content-Length: x", "Transfer-Encoding: chunked", "Cookie: fashion_token=\x7f;;=",
                           "Authorization: Bearer " + "b" * rng.randrange(0, 300), ": no name", "no colon",
                           "X: " + "y" * rng.randrange(0, 9000)]) for _ in range(rng.randrange(0, 8))]
    if rng.random() < 0.5:  # Well formed, but for what the choices above made odd; half of them captures.
        method, version = rng.choice(["GET", "POST"]), "HTTP/1.1"
        if rng.random() < 0.5:
            method, path = "POST", "/capture"
        headers += ["Host: localhost", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        rng.shuffle(headers)
    head = f"{method} {path} {version}\r\n" + "".join(line + rng.choice(["\r\n", "\r\n", "\n"]) for line in headers)
    request = head.encode("utf-8", "replace") + rng.choice([b"\r\n", b"\r\n", b"\n", b""]) + body
    return request[:rng.randrange(0, len(request) + 1)] if rng.random() < 0.2 else request


def test_fuzzed_request_heads_and_bodies_are_each_answered_or_closed(serve, frames):
    served = serve("--replay", str(frames), "--fps", "20", "--captures", "labelled")
    port, rng = port_of(served), random.Random(22)
    served.wait_until(served.frames_done, "a first frame")
    statuses = []
    for _ in range(200):
        answer = exchange(port, fuzzed_request(rng), seconds=2, head_only=True)
        statuses.append(status_of(answer))
    assert served.get("/healthz")[0] == 200
    served.stop()  # Asserts no traceback.
    assert 500 not in statuses and len(set(statuses)) >= 5, sorted(set(statuses))
