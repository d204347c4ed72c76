"""`classify.py --serve`: the classification loop on the main thread, a small web server beside it.

One interpreter, used by the main thread only. The server (Python's ThreadingHTTPServer) gives each
client a thread of its own, with a socket timeout, and at most MAX_CLIENTS at once; clients only
read what the loop published (live.py), so a slow or stalled one holds up nobody but itself.

    /             the page (page.py)          /stream.mjpg  the live frame, multipart/x-mixed-replace
    /events       each frame shown: record, pictures, rates (Server-Sent Events)
    /latest.json  the latest frame's record, for polling
    /frames/ID    a frame shown, as it came   /frames/ID/seen.png  the 28x28 frame the model saw
    /healthz      JSON; 503 when stale        /metrics      Prometheus' text format
    POST /capture {"label": one of the model's labels, "frame": ID}: save that frame as it came
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import http.cookies
import http.server
import ipaddress
import json
import pathlib
import re
import secrets
import socket
import threading
import urllib.parse

from . import live, page, stream
from .common import log, one_line

MAX_CLIENTS = 64  # Connections served at once; more are answered 503 straight away.
CLIENT_TIMEOUT_SECONDS = 10  # A client that neither sends nor reads for this long is dropped.
MAX_BODY_BYTES = 1024  # A capture request is a label: nothing bigger is read.
KEEPALIVE_SECONDS = 5  # An idle event stream gets a comment line this often, so proxies keep it open.
TOP_SHOWN = 3  # Classes the page shows, unless --top-k says otherwise.
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
FRAME_PATH = re.compile(r"/frames/([0-9]{1,18})(/seen\.png)?")  # A frame's picture, or its 28x28 view.


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str  # Where to listen; 127.0.0.1 unless the user says otherwise.
    port: int
    token: str | None  # Needed on every request when set; always set for a non-loopback host.
    captures: pathlib.Path  # Labelled frames go to captures/<label>/.
    stale_after: float  # /healthz answers 503 when no frame came for this many seconds.
    verbose: bool


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def choose_token(host: str, token: str | None) -> tuple:
    """(token or None, generated?): a host other than loopback always gets one."""
    if token is not None:
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"--token must be at least {MIN_TOKEN_LENGTH} characters")
        return token, False
    if is_loopback(host):
        return None, False
    return secrets.token_urlsafe(24), True


def offered_token(handler) -> str:
    """The token a request carries: ?token=, `Authorization: Bearer`, or the fashion_token cookie."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query)
    if query.get("token"):
        return query["token"][0]
    authorization = handler.headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer "):].strip()
    cookies = http.cookies.SimpleCookie()
    try:
        cookies.load(handler.headers.get("Cookie", ""))
    except http.cookies.CookieError:
        return ""
    return cookies["fashion_token"].value if "fashion_token" in cookies else ""


class Handler(http.server.BaseHTTPRequestHandler):
    """One request; `self.server` holds the LiveState and Settings."""

    timeout = CLIENT_TIMEOUT_SECONDS
    server_version = "edge-fashion"

    def do_GET(self):
        routes = {"/": self.send_page, "/stream.mjpg": self.send_stream, "/events": self.send_events,
                  "/latest.json": self.send_latest, "/healthz": self.send_health, "/metrics": self.send_metrics}
        path = urllib.parse.urlsplit(self.path).path
        route, frame_path = routes.get(path), FRAME_PATH.fullmatch(path)
        if frame_path:
            route = functools.partial(self.send_frame, int(frame_path[1]), bool(frame_path[2]))
        if not self.allowed():
            return
        if route is None:
            self.reply(404, "text/plain", b"not found\n")
        else:
            route()

    def do_POST(self):
        if not self.allowed():
            return
        if urllib.parse.urlsplit(self.path).path != "/capture":
            self.reply(404, "text/plain", b"not found\n")
        else:
            self.capture()

    def allowed(self) -> bool:
        """The Host check (a loopback server answers only to loopback names, against DNS rebinding)
        and the token, compared in constant time."""
        settings = self.server.settings
        host = urllib.parse.urlsplit("//" + self.headers.get("Host", "")).hostname or ""
        if is_loopback(settings.host) and host not in LOOPBACK_NAMES:
            self.reply_json(403, {"error": "this server answers only to localhost"})
            return False
        expected = settings.token
        if expected and not hmac.compare_digest(offered_token(self).encode(), expected.encode()):
            self.reply_json(401, {"error": "a valid token is needed: open the URL printed at start"})
            return False
        return True

    def reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, status: int, answer: dict) -> None:
        self.reply(status, "application/json", json.dumps(answer).encode() + b"\n")

    def send_page(self):
        self.reply(200, "text/html; charset=utf-8", page.render(self.server.live.labels,
                                                                  self.server.settings.stale_after))

    def send_latest(self):
        frame = self.server.live.frame
        if frame is None:
            self.reply_json(404, {"error": "no frame yet"})
        else:
            self.reply_json(200, frame.record)

    def send_frame(self, number: int, seen: bool):
        """A frame shown in the last few seconds, by id: its picture, or the 28x28 frame the model saw."""
        state = self.server.live
        try:
            frame = state.frame_by_id(number)
            content_type, body = ("image/png", state.seen(frame)) if seen else state.picture(frame)
        except live.FrameGone as error:
            return self.reply_json(410, {"error": str(error)})
        except LookupError as error:
            return self.reply_json(404, {"error": str(error)})
        self.reply(200, content_type, body)

    def send_health(self):
        healthy, answer = self.server.live.health(self.server.settings.stale_after)
        self.reply_json(200 if healthy else 503, answer)

    def send_metrics(self):
        self.reply(200, "text/plain; version=0.0.4; charset=utf-8", self.server.live.metrics().encode())

    def start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()

    def frames(self):
        """Each frame shown (live.SHOWN_FPS a second at most); None after KEEPALIVE_SECONDS without one."""
        state, number = self.server.live, 0
        while not state.closed:
            frame = state.wait_newer(number, KEEPALIVE_SECONDS)
            if frame is not None:
                number = frame.number
            yield frame

    def send_stream(self):
        self.start_stream("multipart/x-mixed-replace; boundary=frame")
        for frame in self.frames():
            if frame is not None:
                jpeg = self.server.live.jpeg(frame)
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%b\r\n"
                                 % (len(jpeg), jpeg))

    def send_events(self):
        self.start_stream("text/event-stream")
        for frame in self.frames():
            self.wfile.write(b": idle\n\n" if frame is None else self.server.live.event(frame))
            self.wfile.flush()

    def capture(self):
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.reply_json(411, {"error": "Content-Length is needed"})
        if not 0 < length <= MAX_BODY_BYTES:
            return self.reply_json(413, {"error": f"the body must be 1 to {MAX_BODY_BYTES} bytes"})
        # Only JSON: a browser cannot send it from another site without asking first (CORS).
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self.reply_json(415, {"error": 'send {"label": ...} as application/json'})
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            return self.reply_json(400, {"error": 'the body must be JSON: {"label": ..., "frame": ...}'})
        try:
            self.reply_json(201, self.server.live.capture(request))
        except ValueError as error:
            self.reply_json(400, {"error": str(error)})
        except live.FrameGone as error:
            self.reply_json(410, {"error": f"{error}: not saved"})
        except LookupError as error:
            self.reply_json(404, {"error": f"{error}: not saved"})
        except OSError as error:  # Such as a full disk: the client hears why, the loop goes on.
            self.reply_json(500, {"error": f"cannot save the frame: {one_line(error)}"})

    def handle(self):
        try:
            super().handle()
        except OSError:  # The client went away or stalled past the timeout: drop it quietly.
            self.close_connection = True

    def log_request(self, code="-", size="-"):
        # The path only, never the query: the token may be in it.
        if self.server.settings.verbose:
            log(f"http: {self.client_address[0]} {self.command} {urllib.parse.urlsplit(self.path).path} {code}")

    def log_message(self, format, *arguments):
        pass  # http.server's own messages may quote the request line, token included.


class Server(http.server.ThreadingHTTPServer):
    """A thread per client, at most MAX_CLIENTS at once."""

    daemon_threads = True
    request_queue_size = MAX_CLIENTS

    def __init__(self, settings: Settings, state: live.LiveState):
        self.settings, self.live = settings, state
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        if ":" in settings.host:
            self.address_family = socket.AF_INET6
        super().__init__((settings.host, settings.port), Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve(sources, classifier, options: stream.Options, runtime, settings: Settings, generated_token: bool) -> dict:
    """Start the server, classify every source, each frame also published to the page, stop the
    server; the summary of stream.classify_sources."""
    runtime_name = f"{runtime.name} {runtime.version}"
    state = live.LiveState(classifier.labels, runtime_name, options.model_sha256, settings.captures)
    try:
        server = Server(settings, state)
    except OSError as error:  # Taken, not an address of this machine, or not allowed.
        raise ValueError(f"--host {settings.host} --port {settings.port}: cannot listen there "
                         f"({error.strerror or one_line(error)})") from None
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{host}:{server.server_address[1]}/"
    log(f"serving on {url}?token={settings.token}" if generated_token else
        f"serving on {url}" + (" (give the token: ?token=...)" if settings.token else ""))

    def publish(line: dict, load, image, pixels) -> None:
        state.publish(line, live.Frame.shown(line, load, image, pixels))
    try:
        return stream.classify_sources(sources, classifier, options, runtime, publish)
    finally:
        state.close()
        server.shutdown()
        server.server_close()
