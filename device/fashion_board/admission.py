"""The server's front door: each connection's request read whole (head and body) by one thread,
within REQUEST_SECONDS, before the server gives it a thread and a slot of its own.

A client that sends its head a line at a time, or a body shorter than its Content-Length, costs the
door a small buffer and a deadline, never a thread or a slot: at the deadline it is answered 408 and
dropped. A head over MAX_HEAD_BYTES is answered 414 (the request line alone is that long) or 431;
more than MAX_PENDING connections waiting at once are answered 503. Only a whole request, its
request line and headers parsed, reaches `dispatch`, which runs on the door's thread and must not
block. Every answer the door gives is small and sent without waiting; the connection is then shut
for writing and drained for LINGER_SECONDS, so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import re
import selectors
import socket
import time
import urllib.parse

from .common import log, one_line

REQUEST_SECONDS = 10  # From the connection to the whole request, head and body.
MAX_HEAD_BYTES = 16384  # Request line and headers; a browser's are under 2 KB.
MAX_PENDING = 256  # Connections whose request is still arriving; each holds at most MAX_HEAD_BYTES.
LINGER_SECONDS = 2  # After the door's own answer, what the client still sends is read and dropped this long.
HEAD_END = re.compile(rb"\r?\n\r?\n")
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 408: "Request Timeout",
           414: "URI Too Long", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


@dataclasses.dataclass
class Request:
    """A whole request, as it came: what the handler reads, and what the server routes on."""
    connection: socket.socket
    address: tuple
    data: bytes  # Head and body.
    method: str
    target: str  # The path and query, as sent: never logged whole (the token may be in the query).
    headers: http.client.HTTPMessage

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path


@dataclasses.dataclass
class Pending:
    address: tuple
    deadline: float
    data: bytearray = dataclasses.field(default_factory=bytearray)
    scanned: int = 0  # Bytes of data already searched for the head's end: a head sent a byte at a time costs little.
    head: tuple | None = None  # (bytes of head, method, target, headers, body length) once complete.
    lingering: bool = False  # Answered; what still comes is dropped until the deadline.


def log_line(address, method: str | None, target: str | None, status) -> str:
    """One request's log line: the client, the method, the path without its query, the status."""
    path = urllib.parse.urlsplit(target or "").path or "-"
    return f"http: {address[0] if address else '-'} {method or '-'} {path} {status}"


def parse_head(head: bytes) -> tuple:
    """(method, target, headers) of a request head; ValueError when it is not HTTP."""
    request_line, _, rest = head.partition(b"\n")
    words = request_line.decode("latin-1").split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    try:
        headers = http.client.parse_headers(io.BytesIO(rest))
    except http.client.HTTPException as error:
        raise ValueError(f"bad headers ({type(error).__name__})") from None
    return words[0], words[1], headers


def body_length(headers: http.client.HTTPMessage, max_body: int) -> int:
    """The bytes of body to wait for: the Content-Length when within max_body, else none (the
    handler answers the request as it is, 411 or 413 for a capture)."""
    try:
        length = int(headers.get("Content-Length", "0"))
    except ValueError:
        return 0
    return length if 0 < length <= max_body else 0


class Door:
    """Accepts connections on `listener` and hands each whole request to `dispatch(request)`."""

    def __init__(self, listener: socket.socket, dispatch, max_body: int, verbose: bool):
        self.listener, self.dispatch, self.max_body, self.verbose = listener, dispatch, max_body, verbose
        self.selector = selectors.DefaultSelector()
        self.pending: dict = {}  # socket -> Pending
        self.running = True

    def serve(self) -> None:
        """The door's loop, until stop(); run it on a thread of its own."""
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ)
        while self.running:
            for key, _ in self.selector.select(timeout=0.25):
                if key.fileobj is self.listener:
                    self.accept()
                elif key.fileobj in self.pending:
                    self.receive_safely(key.fileobj)
            self.expire(time.monotonic())
        for connection in list(self.pending):
            self.close(connection)
        self.selector.close()

    def expire(self, now: float) -> None:
        for connection, pending in list(self.pending.items()):
            if now <= pending.deadline:
                continue
            if pending.lingering:
                self.close(connection)
            else:
                self.answer_pending(connection, 408, f"the request did not arrive whole within {REQUEST_SECONDS} s")

    def stop(self) -> None:
        self.running = False

    def accept(self) -> None:
        try:
            connection, address = self.listener.accept()
        except OSError:  # Gone already, or out of file descriptors: the next round tries again.
            time.sleep(0.01)
            return
        connection.setblocking(False)
        self.pending[connection] = Pending(address, time.monotonic() + REQUEST_SECONDS)
        self.selector.register(connection, selectors.EVENT_READ)
        if len(self.pending) > MAX_PENDING:
            self.answer_pending(connection, 503, "too many connections at once: try again")

    def receive_safely(self, connection: socket.socket) -> None:
        """receive(), and whatever one connection's request raises (a thread that cannot start, a
        parse this code did not foresee) costs that connection only, in one line: the door stays."""
        address = self.pending[connection].address
        try:
            self.receive(connection)
        except Exception as error:
            log(f"http: {address[0]}: {one_line(error)}")
            self.close(connection)

    def receive(self, connection: socket.socket) -> None:
        pending = self.pending[connection]
        try:
            chunk = connection.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # The client closed, or reset.
            self.close(connection)
        elif not pending.lingering:
            pending.data += chunk
            self.advance(connection, pending)

    def advance(self, connection: socket.socket, pending: Pending) -> None:
        """Parse the head once it is complete; dispatch the request once its body is there too."""
        if pending.head is None:
            end = HEAD_END.search(pending.data, max(0, pending.scanned - 3), MAX_HEAD_BYTES)
            pending.scanned = len(pending.data)
            if end is None:
                if len(pending.data) >= MAX_HEAD_BYTES:
                    line_ends = b"\n" in pending.data[:MAX_HEAD_BYTES]
                    self.answer_pending(connection, 431 if line_ends else 414,
                                        f"the request's head is over {MAX_HEAD_BYTES} bytes")
                return
            try:
                method, target, headers = parse_head(bytes(pending.data[:end.end()]))
            except ValueError as error:
                return self.answer_pending(connection, 400, str(error))
            pending.head = (end.end(), method, target, headers, body_length(headers, self.max_body))
        size, method, target, headers, length = pending.head
        if len(pending.data) < size + length:
            return
        self.selector.unregister(connection)
        del self.pending[connection]
        connection.setblocking(True)
        self.dispatch(Request(connection, pending.address, bytes(pending.data[:size + length]), method, target,
                              headers))

    def answer_pending(self, connection: socket.socket, status: int, error: str) -> None:
        pending = self.pending[connection]
        head = pending.head or (0, None, None)
        self.send_answer(connection, pending, head[1], head[2], status, {"error": error})

    def answer(self, request: Request, status: int, answer: dict) -> None:
        """Answer a dispatched request at once, from the door's thread: a refusal, or "busy"."""
        request.connection.setblocking(False)
        pending = Pending(request.address, 0.0)
        self.pending[request.connection] = pending
        self.selector.register(request.connection, selectors.EVENT_READ)
        self.send_answer(request.connection, pending, request.method, request.target, status, answer)

    def send_answer(self, connection, pending: Pending, method, target, status: int, answer: dict) -> None:
        body = json.dumps(answer).encode() + b"\n"
        head = (f"HTTP/1.0 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
        try:
            connection.send(head.encode() + body)  # Small, into an empty buffer: it does not wait.
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            return self.close(connection)
        if self.verbose:
            log(log_line(pending.address, method, target, status))
        pending.lingering, pending.deadline = True, time.monotonic() + LINGER_SECONDS

    def close(self, connection: socket.socket) -> None:
        self.pending.pop(connection, None)
        try:
            self.selector.unregister(connection)
        except (KeyError, ValueError):
            pass
        connection.close()
