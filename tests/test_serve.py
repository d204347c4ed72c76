"""`classify.py --serve` as a board runs it (the board-like venv), over real HTTP on loopback, on a
real tiny build's bundle and real test images played by --replay or dropped into a --watch folder."""

import io
import json
import pathlib
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import browser
from edge_fashion.pipeline import data

READY_SECONDS = 60  # Start-up of a board-like process on a loaded 2-core machine.


@pytest.fixture(scope="module")
def images(data_dir):
    return data.load_fashion_mnist(data_dir, download=False).test_images


@pytest.fixture(scope="module")
def bundle(tiny_build):
    return tiny_build / "device"


@pytest.fixture
def frames(images, tmp_path):
    """Six real test images: four PNGs (28x28) and two JPEGs (enlarged, as files from a camera)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(4):
        Image.fromarray(images[index]).save(folder / f"{index}.png")
    for index in (4, 5):
        Image.fromarray(images[index]).resize((224, 224)).save(folder / f"{index}.jpg", quality=95)
    return folder


class Served:
    """classify.py --serve in a subprocess; stdout and stderr go to files, so a full pipe never blocks it."""

    def __init__(self, python, bundle, folder: pathlib.Path, *arguments: str):
        self.stdout_path, self.stderr_path = folder / "stdout.jsonl", folder / "stderr.txt"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen([str(python), str(bundle / "classify.py"), "--serve", "--port", "0",
                                             "--json", *arguments], stdout=stdout, stderr=stderr, cwd=folder)
        self.url = self.wait_for_url()

    def wait_for_url(self) -> str:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            for line in self.stderr_path.read_text().splitlines():
                if line.startswith("serving on "):
                    return line.split()[2].split("?")[0]
            time.sleep(0.1)
        raise AssertionError(f"no 'serving on' line: {self.stderr_path.read_text()}")

    def get(self, path: str, headers: dict | None = None, body: bytes | None = None) -> tuple:
        """(status, headers, body) of one request; HTTP errors are answers too."""
        request = urllib.request.Request(self.url + path.lstrip("/"), data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def json(self, path: str, **options) -> tuple:
        status, _, body = self.get(path, **options)
        return status, json.loads(body)

    def wait_until(self, condition, what: str, seconds: float = 30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{what} did not happen in {seconds} s")

    def frames_done(self) -> int:
        return self.json("/healthz")[1]["frames"]

    def stop(self) -> tuple:
        """(JSON lines, stderr) after Ctrl-C."""
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        stderr = self.stderr_path.read_text()
        assert "Traceback" not in stderr, stderr
        return [json.loads(line) for line in self.stdout_path.read_text().splitlines()], stderr

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def serve(device_python, bundle, tmp_path):
    started = []

    def start(*arguments: str) -> Served:
        started.append(Served(device_python, bundle, tmp_path, *arguments))
        return started[-1]
    yield start
    for served in started:
        served.kill()


def plain_run(python, bundle, folder) -> dict:
    """{file name: JSON line} of a plain classify.py run over the folder."""
    completed = subprocess.run([str(python), str(bundle / "classify.py"), str(folder), "--json", "--top-k", "3"],
                               capture_output=True, text=True, timeout=120, check=True)
    lines = [json.loads(line) for line in completed.stdout.splitlines()]
    return {pathlib.Path(line["path"]).name: line for line in lines if "path" in line}


def without_ms(line: dict) -> dict:
    """A record without what differs between runs: the time, the path and the frame's number in the run."""
    return {key: value for key, value in line.items() if key not in ("ms", "path", "frame")}


def read_multipart_jpeg(response) -> bytes:
    """The next JPEG of a multipart/x-mixed-replace stream."""
    assert response.readline() == b"--frame\r\n"
    headers = {}
    for line in iter(response.readline, b"\r\n"):
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    jpeg = response.read(int(headers["content-length"]))
    assert response.readline() == b"\r\n"
    return jpeg


def read_event(response, kind: str = "message") -> dict:
    """The data of the next Server-Sent Event of this kind: "message" (a frame's record) or "rates"."""
    event, data = "message", None
    for line in response:
        if line.startswith(b"event: "):
            event = line[len(b"event: "):].strip().decode()
        elif line.startswith(b"data: "):
            data = json.loads(line[len(b"data: "):])
        elif line == b"\n":
            if data is not None and event == kind:
                return data
            event, data = "message", None
    raise AssertionError("the event stream ended")


def test_page_stream_events_and_lines_match_a_plain_run(serve, device_python, bundle, frames):
    expected = plain_run(device_python, bundle, frames)
    served = serve("--replay", str(frames), "--fps", "30", "--top-k", "3")
    status, headers, page = served.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"EventSource" in page and b'"pictures"' in page
    assert b"http://" not in page and b"https://" not in page and b"src=\"//" not in page  # No external assets.
    with urllib.request.urlopen(served.url + "stream.mjpg", timeout=30) as response:
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        for _ in range(3):
            jpeg = read_multipart_jpeg(response)
            assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    with urllib.request.urlopen(served.url + "events", timeout=30) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        for _ in range(5):
            event = read_event(response)
            assert without_ms(event) == without_ms(expected[pathlib.Path(event["path"]).name])
            assert read_event(response, "rates")["fps"] > 0
            status, headers, seen = served.get(f"/frames/{event['frame']}/seen.png")
            assert status == 200 and headers["Content-Type"] == "image/png"
            assert Image.open(io.BytesIO(seen)).size == (28, 28)
    status, latest = served.json("/latest.json")
    assert status == 200 and latest["label"] == expected[pathlib.Path(latest["path"]).name]["label"]
    lines, _ = served.stop()
    assert len(lines) > 12 and "summary" in lines[-1]
    for line in lines[:-1]:
        assert without_ms(line) == without_ms(expected[pathlib.Path(line["path"]).name])


def test_healthz_and_stalls(serve, bundle, images, tmp_path):
    watched = tmp_path / "incoming"
    watched.mkdir()
    served = serve("--watch", str(watched), "--stale-after", "1.5")
    manifest = json.loads((bundle / "manifest.json").read_text())
    status, health = served.json("/healthz")
    assert status == 200 and health["status"] == "ok" and health["frames"] == 0
    assert health["model_sha256"] == manifest["model"]["sha256"] and health["runtime"].startswith("tflite_runtime")
    served.wait_until(lambda: served.get("/healthz")[0] == 503, "a stale /healthz before the first frame")
    Image.fromarray(images[0]).save(watched / "a.png")
    status, health = served.wait_until(lambda: (lambda answer: answer if answer[0] == 200 else None)(
        served.json("/healthz")), "a healthy /healthz after a frame")
    assert health["frames"] == 1 and health["last_frame_age_s"] < 1.5
    served.wait_until(lambda: served.get("/healthz")[0] == 503, "a stale /healthz when the source stalls")
    assert served.json("/healthz")[1]["status"] == "stale"


def test_metrics_parse_and_agree_with_the_lines(serve, images, tmp_path):
    watched = tmp_path / "incoming"
    watched.mkdir()
    served = serve("--watch", str(watched))
    for index in range(5):
        Image.fromarray(images[index]).save(watched / f"{index}.png")
    (watched / "broken.png").write_bytes(b"not a png at all")
    served.wait_until(lambda: served.frames_done() == 5 and served.json("/healthz")[1]["errors"] == 1,
                      "5 frames and 1 error")
    status, headers, body = served.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    lines, _ = served.stop()
    value = {family: {sample.name + str(sorted(sample.labels.items())): sample.value
                      for sample in families[family].samples} for family in families}
    assert value["fashion_frames"]["fashion_frames_total[]"] == 5
    assert value["fashion_errors"]["fashion_errors_total[]"] == 1
    histogram = value["fashion_frame_seconds"]
    assert histogram["fashion_frame_seconds_count[]"] == 5 == histogram["fashion_frame_seconds_bucket[('le', '+Inf')]"]
    counted = {sample.labels["label"]: sample.value for sample in families["fashion_predictions"].samples}
    printed = [line["label"] for line in lines if "label" in line]
    assert counted == {label: printed.count(label) for label in counted} and sum(counted.values()) == 5


def test_capture_saves_the_raw_frame_with_its_prediction(serve, frames, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "4.jpg").write_bytes((frames / "4.jpg").read_bytes())
    served = serve("--replay", str(one), "--fps", "20", "--captures", "labelled")
    served.wait_until(served.frames_done, "a first frame")
    labels = json.loads(served.get("/")[2].split(b"const LABELS = ")[1].split(b";")[0])
    capture = {"Content-Type": "application/json"}
    frame = served.json("/latest.json")[1]["frame"]
    status, answer = served.json("/capture", headers=capture, body=json.dumps({"label": labels[0], "frame": frame}).encode())
    assert status == 201, answer
    folder = tmp_path / "labelled" / labels[0].replace("/", "-")
    saved = folder / pathlib.PurePath(answer["saved"]).name
    assert saved.read_bytes() == (one / "4.jpg").read_bytes()  # The raw frame, as it came.
    record = json.loads((folder / (saved.stem + ".json")).read_text())
    assert record["capture"] == {"label": labels[0], "file": saved.name} and len(record["top_k"]) == 3
    assert record["frame"] == frame
    for bad in ("../../escape", "Coat/../../x", "", 7, None):
        status, answer = served.json("/capture", headers=capture, body=json.dumps({"label": bad, "frame": frame}).encode())
        assert status == 400 and "one of the model's labels" in answer["error"]
    for bad in (None, "1", 0, True, [frame]):
        status, answer = served.json("/capture", headers=capture, body=json.dumps({"label": labels[0], "frame": bad}).encode())
        assert status == 400 and "name the frame on screen" in answer["error"]
    assert served.get("/capture", headers={"Content-Type": "text/plain"}, body=b'{"label": "Coat"}')[0] == 415
    assert served.get("/capture", headers=capture, body=b"{" + b" " * 5000 + b"}")[0] == 413
    assert served.get("/capture", headers=capture, body=b"not json")[0] == 400
    assert sorted(path.relative_to(tmp_path / "labelled").as_posix() for path in (tmp_path / "labelled").rglob("*")) \
        == sorted([folder.name, f"{folder.name}/{saved.name}", f"{folder.name}/{saved.stem}.json"])


def test_token_is_needed_accepted_and_never_logged(serve, frames):
    served = serve("--replay", str(frames), "--fps", "20", "--host", "0.0.0.0", "--verbose")
    start_line = next(line for line in served.stderr_path.read_text().splitlines() if line.startswith("serving on"))
    token = start_line.split("?token=")[1]
    assert len(token) >= 16
    served.url = served.url.replace("0.0.0.0", "127.0.0.1")
    for path in ("/", "/healthz", "/metrics", "/latest.json", f"/healthz?token={token}x"):
        assert served.get(path)[0] == 401
    assert served.get("/healthz", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert served.get(f"/?token={token}")[0] == 200
    assert served.get("/metrics", headers={"Authorization": f"Bearer {token}"})[0] == 200
    assert served.get("/healthz", headers={"Cookie": f"fashion_token={token}"})[0] == 200
    _, stderr = served.stop()
    assert stderr.count(token) == 1 and "http: 127.0.0.1 GET /healthz 200" in stderr  # Only the start line has it.


def test_a_given_token_is_never_printed(serve, frames):
    token = "a-token-of-mine-0123456789"
    served = serve("--replay", str(frames), "--token", token)
    assert served.get("/healthz")[0] == 401 and served.get(f"/healthz?token={token}")[0] == 200
    assert token not in served.stop()[1]


def test_twenty_clients_at_once_lose_nothing(serve, frames):
    served = serve("--replay", str(frames), "--fps", "40")
    served.wait_until(served.frames_done, "a first frame")
    results, failures = [], []

    def client(kind: str):
        try:
            with urllib.request.urlopen(served.url + kind, timeout=30) as response:
                read = read_event if kind == "events" else read_multipart_jpeg
                numbers = [read(response) for _ in range(15)]
                results.append((kind, numbers))
        except Exception as error:  # Any failure of any client fails the test below.
            failures.append(f"{kind}: {error!r}")
    threads = [threading.Thread(target=client, args=("events" if number % 2 else "stream.mjpg",))
               for number in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    lines, _ = served.stop()
    assert not failures and len(results) == 20
    for kind, received in results:
        if kind == "events":
            numbers = [event["frame"] for event in received]
            assert numbers == sorted(set(numbers))  # Each event newer than the one before.
        else:
            assert all(jpeg[:3] == b"\xff\xd8\xff" for jpeg in received)
    summary = lines[-1]["summary"]
    assert summary["errors"] == 0 and summary["count"] == len(lines) - 1  # Every frame classified and printed.


def test_a_client_that_stops_reading_holds_up_nobody(serve, frames):
    served = serve("--replay", str(frames), "--fps", "40")
    staller = socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1].strip("/"))))
    staller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    staller.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")  # And never reads.
    half_open = socket.create_connection(("127.0.0.1", int(served.url.rsplit(":", 1)[1].strip("/"))))
    half_open.sendall(b"GET /healthz HTTP/1.1\r\n")  # Headers never finished.
    try:
        before = served.frames_done()
        time.sleep(3)
        after = served.frames_done()
        assert after - before >= 40  # 40 frames/s asked: the loop kept going (half of it, on a loaded machine).
        assert served.get("/healthz")[0] == 200 and served.get("/latest.json")[0] == 200
    finally:
        staller.close()
        half_open.close()
    lines, _ = served.stop()
    assert lines[-1]["summary"]["errors"] == 0


def test_serve_needs_a_live_source_and_a_good_token(device_python, bundle, frames):
    for arguments in (["--serve", str(frames / "0.png")], ["--replay", str(frames), "--serve", "--token", "short"]):
        completed = subprocess.run([str(device_python), str(bundle / "classify.py"), *arguments],
                                   capture_output=True, text=True, timeout=60)
        assert completed.returncode == 2 and "Traceback" not in completed.stderr
        assert completed.stderr.strip().splitlines()[-1].startswith(("usage:", "classify.py: error:"))


@pytest.mark.skipif(browser.find_chromium() is None, reason="needs Debian's chromium (make test installs it)")
def test_the_page_in_a_real_browser_shows_the_printed_label(serve, frames, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "5.jpg").write_bytes((frames / "5.jpg").read_bytes())
    served = serve("--replay", str(one), "--fps", "5")
    chromium = browser.Browser(browser.find_chromium())
    try:
        chromium.open(served.url)
        shown = chromium.wait_for("document.getElementById('rates').textContent && "
                                  "document.getElementById('label').textContent")
        chromium.wait_for("document.getElementById('live').naturalWidth > 0")  # The MJPEG frame arrived.
        screenshot = chromium.screenshot()
    finally:
        chromium.close()
    (tmp_path / "page.png").write_bytes(screenshot)
    picture = np.asarray(Image.open(tmp_path / "page.png").convert("L"))
    assert picture.shape[1] == 1000 and picture.std() > 20  # A page with images, not a blank one.
    lines, _ = served.stop()
    assert shown == lines[0]["label"] and all(line["label"] == shown for line in lines[:-1])
