"""`classify.py --serve`: the classification loop on the main thread, a small web server beside it.

One interpreter, used by the main thread only. The server's front door (admission.py) reads each
request whole, within admission.REQUEST_SECONDS, on one thread of its own, and refuses a wrong
Host or token there; only then does a request get a thread and a slot: one of STREAM_SLOTS for
the live streams, of REQUEST_SLOTS for the rest, or of HEALTH_SLOTS, kept for /healthz alone, so
neither slow clients nor many viewers keep a monitor from its answer. Clients only read what the loop published (live.py),
so a slow or stalled one holds up nobody but itself.

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
import io
import ipaddress
import json
import pathlib
import re
import secrets
import socket
import threading
import urllib.parse

from . import admission, live, page, stream
from .common import log, one_line

STREAM_SLOTS = 64  # /events and /stream.mjpg viewers at once; each holds a thread while it watches.
REQUEST_SLOTS = 16  # Other requests at once; each is answered in milliseconds.
HEALTH_SLOTS = 4  # Kept for /healthz alone: a monitor gets its answer however busy the rest is.
STREAM_ROUTES = {"/events", "/stream.mjpg"}
CLIENT_TIMEOUT_SECONDS = 10  # A client that stops reading its answer for this long is dropped.
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


def offered_token(target: str, headers) -> str:
    """The token a request carries: ?token=, `Authorization: Bearer`, or the fashion_token cookie."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    if query.get("token"):
        return query["token"][0]
    authorization = headers.get("Authorization", "")
    if authorization.startswith("Bearer "):
        return authorization[len("Bearer "):].strip()
    cookies = http.cookies.SimpleCookie()
    try:
        cookies.load(headers.get("Cookie", ""))
    except http.cookies.CookieError:
        return ""
    return cookies["fashion_token"].value if "fashion_token" in cookies else ""


def refusal(settings: Settings, request: admission.Request) -> tuple | None:
    """(status, answer) for a request refused before it gets a thread, else None: the Host check (a
    loopback server answers only to loopback names, against DNS rebinding) and the token, compared
    in constant time."""
    host = urllib.parse.urlsplit("//" + request.headers.get("Host", "")).hostname or ""
    if is_loopback(settings.host) and host not in LOOPBACK_NAMES:
        return 403, {"error": "this server answers only to localhost"}
    offered = offered_token(request.target, request.headers).encode("utf-8", "replace")
    if settings.token and not hmac.compare_digest(offered, settings.token.encode()):
        return 401, {"error": "a valid token is needed: open the URL printed at start"}
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    """One request, read whole by the door already; `self.server` holds the LiveState and Settings."""

    timeout = CLIENT_TIMEOUT_SECONDS
    server_version = "edge-fashion"

    def __init__(self, request: admission.Request, server):
        self.request_bytes = request.data
        super().__init__(request.connection, request.address, server)

    def setup(self):
        super().setup()
        self.rfile.close()
        self.rfile = io.BytesIO(self.request_bytes)  # One request per connection, as the door read it.

    def do_GET(self):
        routes = {"/": self.send_page, "/stream.mjpg": self.send_stream, "/events": self.send_events,
                  "/latest.json": self.send_latest, "/healthz": self.send_health, "/metrics": self.send_metrics}
        path = urllib.parse.urlsplit(self.path).path
        route, frame_path = routes.get(path), FRAME_PATH.fullmatch(path)
        if frame_path:
            route = functools.partial(self.send_frame, int(frame_path[1]), bool(frame_path[2]))
        if route is None:
            self.reply(404, "text/plain", b"not found\n")
        else:
            route()

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/capture":
            self.reply(404, "text/plain", b"not found\n")
        else:
            self.capture()

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
        except (ValueError, RecursionError):  # Not JSON, or nested too deep for the parser.
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
        # The path only, never the query: the token may be in it. An error answered while parsing
        # the request line comes before the command and path are known.
        if self.server.settings.verbose:
            log(admission.log_line(self.client_address, getattr(self, "command", None),
                                   getattr(self, "path", None), code))

    def log_message(self, format, *arguments):
        pass  # http.server's own messages may quote the request line, token included.


class Server:
    """The listening socket, its door, and the slots the door's requests are served in."""

    def __init__(self, settings: Settings, state: live.LiveState):
        self.settings, self.live = settings, state
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.listener = socket.create_server((settings.host, settings.port), family=family, backlog=128)
        self.server_address = self.listener.getsockname()
        self.door = admission.Door(self.listener, self.dispatch, MAX_BODY_BYTES, settings.verbose)
        self.streams, self.requests, self.health = (threading.BoundedSemaphore(count) for count in
                                                    (STREAM_SLOTS, REQUEST_SLOTS, HEALTH_SLOTS))

    def serve_forever(self) -> None:
        self.door.serve()

    def slot(self, request: admission.Request):
        """The semaphore of a free slot for this request, taken; None when all of its kind are busy."""
        if request.path in STREAM_ROUTES:
            kinds = [self.streams]
        elif request.path == "/healthz":
            kinds = [self.health, self.requests]
        else:
            kinds = [self.requests]
        return next((kind for kind in kinds if kind.acquire(blocking=False)), None)

    def dispatch(self, request: admission.Request) -> None:
        """On the door's thread: refuse at once, or serve the request on a thread of its own."""
        refused = refusal(self.settings, request)
        slot = None if refused else self.slot(request)
        if refused:
            self.door.answer(request, *refused)
        elif slot is None:
            self.door.answer(request, 503, {"error": "the server is busy: try again in a moment"})
        else:
            try:
                threading.Thread(target=self.handle, args=(request, slot), name="http", daemon=True).start()
            except RuntimeError:  # No thread to be had (a board short of memory): the slot goes back.
                slot.release()
                raise

    def handle(self, request: admission.Request, slot) -> None:
        try:
            Handler(request, self)
        except Exception as error:  # One request's failure: one line, and the server goes on.
            log(f"http: {request.method} {request.path}: {one_line(error)}")
        finally:
            slot.release()
            try:
                request.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            request.connection.close()

    def shutdown(self) -> None:
        self.door.stop()

    def server_close(self) -> None:
        self.listener.close()


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
        thread.join(timeout=2)
        server.server_close()
