"""The live page as a user sees it, in a real headless Chromium on loopback: the frame, its 28x28 view
and its answer always of one frame, captures that save the frame on screen, and one record schema
for --json, /latest.json, /events and the captures' JSON lines.

The replayed photos are the real photos of tests/photos, each with its frame's number drawn in as
eight black or white squares (and its name as text), so that a screenshot says which photo is shown.
"""

import hashlib
import io
import json
import pathlib
import random
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image, ImageDraw

import browser
from conftest import REPO
from fashion_board import capture as capture_module
from fashion_board import record
from test_serve import read_event, serve  # noqa: F401  (serve: the fixture, started servers killed after)

pytestmark = pytest.mark.skipif(browser.find_chromium() is None, reason="needs Debian's chromium (make test installs it)")

PHOTOS = sorted((REPO / "tests" / "photos").glob("*/*.jpg"))
BITS, SQUARE, INSET = 8, 14, 4  # The code: BITS squares of SQUARE pixels, INSET from the top left.
KEYS = "1234567890"
PAGE_STATE = """(() => {
  const byId = (id) => document.getElementById(id);
  const rect = (element) => { const r = element.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
  const live = byId("live"), seen = byId("seen");
  return {live: live.dataset.frame || null, seen: seen.dataset.frame || null, answer: byId("answer").dataset.frame || null,
          path: document.body.dataset.path || null, label: byId("label").textContent, unsure: !byId("unsure").hidden,
          live_rect: rect(live), seen_rect: rect(seen), natural: [live.naturalWidth || 0, live.naturalHeight || 0],
          images: document.images.length,
          broken: [...document.images].filter((image) => !image.complete || image.naturalWidth === 0).length,
          state: byId("state").dataset.state, state_text: byId("state").textContent,
          capture: byId("capture").textContent, capture_result: byId("capture").dataset.result || null,
          ratio: window.devicePixelRatio, t: performance.now()};
})()"""
# Installed by the tests, not part of the page: before each frame the browser paints, the page's state
# when it changed, with the time (performance.now()). The state at time t is the last entry before t.
PAINT_LOG = f"""(() => {{
  window.paintLog = [];
  const tick = () => {{
    const state = {PAGE_STATE}, last = window.paintLog[window.paintLog.length - 1];
    const key = (entry) => [entry.live, entry.seen, entry.answer, entry.label, entry.unsure, entry.state, entry.capture].join();
    if (!last || key(last) !== key(state)) window.paintLog.push(state);
    requestAnimationFrame(tick);
  }};
  requestAnimationFrame(tick);
}})()"""


def coded_photos(folder: pathlib.Path, count: int) -> pathlib.Path:
    """`count` JPEGs: the real photos in turn, photo n with the code of n and its name drawn in."""
    folder.mkdir(parents=True)
    for number in range(count):
        source = PHOTOS[number % len(PHOTOS)]
        image = Image.open(source).convert("RGB")
        draw = ImageDraw.Draw(image)
        for bit in range(BITS):
            left = INSET + bit * SQUARE
            white = (number >> (BITS - 1 - bit)) & 1
            draw.rectangle([left, INSET, left + SQUARE - 1, INSET + SQUARE - 1], fill=(255,) * 3 if white else (0,) * 3)
        name = f"{number:04d}-{source.parent.name}.jpg"
        draw.text((INSET, INSET + SQUARE + 2), name, fill=(255, 0, 0))
        image.save(folder / name, quality=90)
    return folder


def photo_number(path: str) -> int:
    return int(pathlib.PurePath(path).name.split("-")[0])


def shown_picture(state: dict) -> tuple:
    """(left, top, scale) of the frame's picture inside its element (object-fit: contain)."""
    left, top, width, height = state["live_rect"]
    natural_width, natural_height = state["natural"]
    scale = min(width / natural_width, height / natural_height)
    return left + (width - natural_width * scale) / 2, top + (height - natural_height * scale) / 2, scale


def read_code(screenshot: np.ndarray, state: dict) -> int:
    """The number drawn into the photo on screen, read from the screenshot's pixels."""
    left, top, scale = shown_picture(state)
    number = 0
    for bit in range(BITS):
        x = left + (INSET + bit * SQUARE + SQUARE / 2) * scale
        y = top + (INSET + SQUARE / 2) * scale
        number = 2 * number + int(screenshot[round(y), round(x)].mean() > 128)
    return number


def read_seen(screenshot: np.ndarray, state: dict) -> np.ndarray:
    """The 28x28 view on screen, one sample from the middle of each enlarged pixel."""
    left, top, width, height = state["seen_rect"]
    centres = (np.arange(28) + 0.5) / 28
    rows, columns = np.round(top + centres * height).astype(int), np.round(left + centres * width).astype(int)
    return screenshot[np.ix_(rows, columns)].mean(axis=2)


def now(chromium) -> float:
    return chromium.evaluate("performance.now()")


def painted(chromium, started: float, ended: float) -> list:
    """The page's states on screen from `started` to `ended` (page times), from the paint log."""
    log = chromium.evaluate("window.paintLog")
    return [entry for entry in log if entry["t"] <= started][-1:] + [entry for entry in log if started < entry["t"] <= ended]


def screenshot_and_state(chromium) -> tuple:
    """(the page's state the screenshot shows, the screenshot as an (H, W, 3) array, the states on
    screen while it was taken): the one whose photo's code is in the screenshot's pixels."""
    started = now(chromium)
    picture = np.asarray(Image.open(io.BytesIO(chromium.screenshot())).convert("RGB"))
    states = painted(chromium, started, now(chromium))
    matching = [state for state in states if state["path"] and state["natural"][0]
                and read_code(picture, state) == photo_number(state["path"])]
    assert matching, f"the screenshot shows none of the frames on screen then: {states}"
    return matching[-1], picture, states


@pytest.fixture(scope="module")
def bundle(tiny_build):
    return tiny_build / "device"


@pytest.fixture
def chromium():
    opened = browser.Browser(browser.find_chromium())
    yield opened
    opened.close()


def test_frame_28x28_view_and_answer_on_screen_are_always_one_frame(serve, chromium, tmp_path, record_property):
    frames = coded_photos(tmp_path / "frames", 200)
    seen_folder = tmp_path / "seen"
    served = serve("--replay", str(frames), "--fps", "10", "--save-preprocessed", str(seen_folder))
    chromium.open(served.url)
    chromium.wait_for("document.body.dataset.frame")
    chromium.evaluate(PAINT_LOG)
    draws = random.Random(21)  # One seeded stream for all 20 moments (a fresh one each time gave one moment 20 times).
    moments = sorted(draws.uniform(0.5, 14) for _ in range(20))
    started = time.monotonic()
    checked, screenshots = [], []
    for moment in moments:
        time.sleep(max(0.0, started + moment - time.monotonic()))
        state, screenshot, states = screenshot_and_state(chromium)
        checked.append((state, read_code(screenshot, state), read_seen(screenshot, state), states))
        screenshots.append(screenshot)
    Image.fromarray(screenshots[len(screenshots) // 2]).save(tmp_path / "page.png")
    served.wait_until(lambda: served.frames_done() >= 200, "200 frames replayed", 60)
    lines, _ = served.stop()
    by_frame = {line["frame"]: line for line in lines[:-1]}
    assert len(by_frame) >= 200 and lines[-1]["summary"]["errors"] == 0
    for line in by_frame.values():
        record.validate(line)
    for state, code, seen, states in checked:
        assert all(other["live"] == other["seen"] == other["answer"] for other in states), states  # One id on all three.
        assert state["state"] == "live" and state["ratio"] == 1 and state["broken"] == 0
        line = by_frame[int(state["answer"])]
        assert state["path"] == line["path"] and code == photo_number(line["path"]) == (line["frame"] - 1) % 200
        if "error" in line:  # The photo on screen is that frame's; so are the answer and the 28x28 view.
            assert state["label"] == "error: " + line["error"] and state["images"] == 1
            continue
        assert (state["label"], state["unsure"], state["images"]) == (line["label"], line["unsure"], 2)
        saved = next(seen_folder.glob(f"{line['frame']:05d}_*.png"))
        assert np.abs(seen - np.asarray(Image.open(saved), dtype=np.float64)).max() <= 2
    shown = [int(state["answer"]) for state, *_ in checked]
    assert shown == sorted(shown) and len(set(shown)) >= 8  # The page went on with the frames.
    unsure = [state["unsure"] for state, *_ in checked]
    record_property("distinct_frames", len(set(shown)))
    record_property("unsure_shown", sum(unsure))
    record_property("states_per_screenshot", [len(states) for *_, states in checked])


def capture_once(chromium, index: int, by_key: bool) -> tuple:
    """Label the frame on screen with class `index`, by its key or by a click on its button, as a user
    does; (the state a screenshot just before showed, the states on screen during the click or key
    press, what the page then said)."""
    chromium.evaluate("document.getElementById('capture').textContent = ''")
    button = chromium.evaluate(f"(() => {{ const r = document.querySelectorAll('#buttons button')[{index}]"
                               ".getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()")
    before, _, _ = screenshot_and_state(chromium)
    started = now(chromium)
    if by_key:
        chromium.press(KEYS[index])
    else:
        chromium.click(*button)
    during = painted(chromium, started, now(chromium))
    return before, during, chromium.wait_for("document.getElementById('capture').textContent")


def test_capture_by_click_and_by_key_saves_the_photo_on_screen(serve, chromium, tmp_path, record_property):
    frames = coded_photos(tmp_path / "frames", 40)
    captures = tmp_path / "captures"
    served = serve("--replay", str(frames), "--fps", "10", "--captures", str(captures))
    labels = json.loads(served.get("/")[2].split(b"const LABELS = ")[1].split(b";")[0])
    chromium.open(served.url)
    chromium.wait_for("document.body.dataset.frame")
    chromium.evaluate(PAINT_LOG)
    rng, known, single = random.Random(7), set(), 0
    for attempt in range(20):
        index = rng.randrange(len(labels))
        before, during, said = capture_once(chromium, index, by_key=attempt % 2 == 1)
        files = {path for path in captures.rglob("*") if path.is_file()}
        new, known = sorted(files - known), files
        assert len(new) == 2 and new[0].suffix == ".jpg" and new[1].name == new[0].stem + ".json", new
        image, line = new[0], json.loads(new[1].read_text())
        record.validate(line)
        assert said == f"saved frame {line['frame']} as {image.parent.name}/{image.name}"
        assert image.parent.name == capture_module.folder_name(labels[index])
        assert line["capture"] == {"label": labels[index], "file": image.name}
        on_screen = {state["answer"]: state["path"] for state in during}
        assert str(line["frame"]) in on_screen and line["path"] == on_screen[str(line["frame"])]  # On screen then,
        photo = frames / pathlib.PurePath(line["path"]).name  # and its photo's bytes are what was saved.
        assert hashlib.sha256(image.read_bytes()).hexdigest() == hashlib.sha256(photo.read_bytes()).hexdigest()
        assert int(before["answer"]) <= line["frame"]  # Not older than the frame a screenshot showed before.
        single += len(on_screen) == 1
    record_property("captures_with_one_frame_on_screen", single)


def settled_state(chromium, quiet_seconds: float = 1.0, timeout: float = 30.0) -> dict:
    """The page's state once the frame it shows has not changed for `quiet_seconds`."""
    def shown(state: dict) -> tuple:
        return state["live"], state["seen"], state["answer"]
    deadline = time.monotonic() + timeout
    state, since = chromium.evaluate(PAGE_STATE), time.monotonic()
    while time.monotonic() - since < quiet_seconds:
        assert time.monotonic() < deadline, "the page never settled"
        time.sleep(0.1)
        now = chromium.evaluate(PAGE_STATE)
        if shown(now) != shown(state):
            since = time.monotonic()
        state = now
    return state


def test_an_expired_frame_is_refused_and_the_page_says_so(serve, chromium, tmp_path):
    frames = coded_photos(tmp_path / "frames", 40)
    captures = tmp_path / "captures"
    served = serve("--replay", str(frames), "--fps", "20", "--captures", str(captures))
    chromium.open(served.url)
    chromium.wait_for("document.body.dataset.frame")
    # The page hears no more frames (its event stream closed, as on a network that stopped) while the
    # board goes on, until the frame on screen has left the board's memory.
    chromium.evaluate("events.close()")
    state = settled_state(chromium)  # A frame already decoding when the stream closed may still be swapped in.
    served.wait_until(lambda: served.get(f"/frames/{state['answer']}")[0] == 410, "the frame on screen expiring", 60)
    assert chromium.evaluate(PAGE_STATE)["answer"] == state["answer"]
    chromium.press("1")
    refused = chromium.wait_for("document.getElementById('capture').textContent")
    assert refused.startswith(f"frame {state['answer']} is no longer on the board") and refused.endswith("not saved")
    assert chromium.evaluate(PAGE_STATE)["capture_result"] == "refused"
    status, answer = served.json("/capture", headers={"Content-Type": "application/json"},
                                 body=json.dumps({"label": "Coat", "frame": 1}).encode())
    assert status == 410 and answer["error"].startswith("frame 1 is no longer on the board")
    assert served.get("/frames/1")[0] == served.get("/frames/1/seen.png")[0] == 410
    assert served.get("/frames/99999999")[0] == 404
    assert not captures.exists() or not [path for path in captures.rglob("*") if path.is_file()]
    chromium.evaluate("location.reload()")  # And a page that hears the board again goes on.
    chromium.wait_for(f"(() => {{ const state = {PAGE_STATE}; return state.state === 'live' && "
                      f"Number(state.answer) > {state['answer']}; }})()")


def test_the_page_says_when_no_frame_came_yet_and_when_the_stream_stalls(serve, chromium, tmp_path):
    watched = tmp_path / "incoming"
    watched.mkdir()
    served = serve("--watch", str(watched), "--stale-after", "1.5")
    chromium.open(served.url)
    state = chromium.wait_for(f"(() => {{ const state = {PAGE_STATE}; return state.state === 'waiting' && state; }})()")
    assert state["images"] == 0 and state["live"] is None and state["state_text"] == "waiting for a frame: none has come yet"
    assert chromium.evaluate("document.getElementById('live').textContent") == "waiting for a frame"
    (watched / "one.jpg").write_bytes(PHOTOS[0].read_bytes())
    chromium.wait_for(f"(() => {{ const state = {PAGE_STATE}; return state.state === 'live' && state.images === 2; }})()")
    state = chromium.wait_for(f"(() => {{ const state = {PAGE_STATE}; return state.state === 'stalled' && state; }})()")
    assert state["state_text"].startswith("no new frame for ") and state["state_text"].endswith(" s: the stream stalled")
    assert state["broken"] == 0 and state["images"] == 2 and state["path"].endswith("one.jpg")  # The last frame stays.
    served.stop()
    state = chromium.wait_for(f"(() => {{ const state = {PAGE_STATE}; return state.state === 'lost' && state; }})()")
    assert state["state_text"] == "lost the connection to the board: retrying" and state["broken"] == 0


def test_one_record_schema_for_json_lines_latest_events_and_captures(serve, device_python, bundle, tmp_path):
    frames = coded_photos(tmp_path / "frames", 6)
    (frames / "broken.jpg").write_bytes(b"not a photo")
    captures = tmp_path / "captures"
    served = serve("--replay", str(frames), "--fps", "20", "--captures", str(captures))
    with urllib.request.urlopen(served.url + "events", timeout=30) as response:
        events = [read_event(response) for _ in range(5)]
    status, latest = served.json("/latest.json")
    assert status == 200
    status, saved = served.json("/capture", headers={"Content-Type": "application/json"},
                                body=json.dumps({"label": "Coat", "frame": latest["frame"]}).encode())
    assert status == 201, saved
    lines, _ = served.stop()
    capture_lines = [json.loads(path.read_text()) for path in captures.rglob("*.json")]
    outputs = {"--json": lines[:-1], "/latest.json": [latest], "/events": events, "captures": capture_lines}
    assert all(outputs.values()) and any("error" in line for line in lines[:-1])
    for where, found in outputs.items():
        for line in found:
            record.validate(line)
    by_frame = {line["frame"]: line for line in lines[:-1]}
    assert all(event == by_frame[event["frame"]] for event in events) and latest == by_frame[latest["frame"]]
    assert capture_lines == [{**by_frame[latest["frame"]], "capture": {"label": "Coat", "file": pathlib.PurePath(saved["saved"]).name}}]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {line["model_sha256"] for line in lines[:-1]} == {manifest["model"]["sha256"]}


def test_the_validator_refuses_what_the_schema_does_not_allow():
    good = {"path": "a.jpg", "frame": 3, "label": "Coat", "index": 4, "score": 0.5, "top_k": [["Coat", 0.5], ["Bag", 0.25]],
            "unsure": False, "objects": 1, "ms": 2.5, "model_sha256": "0" * 64}
    record.validate(good)
    record.validate({"path": "b.jpg", "frame": 4, "error": "no garment found", "model_sha256": "f" * 64})
    record.validate({**good, "capture": {"label": "Bag", "file": "x.jpg"}})
    bad = [{key: value for key, value in good.items() if key != "objects"}, {**good, "extra": 1},
           {**good, "frame": 0}, {**good, "frame": True}, {**good, "unsure": 1}, {**good, "score": "0.5"},
           {**good, "label": "Bag"}, {**good, "top_k": [["Bag", 0.25], ["Coat", 0.5]]}, {**good, "top_k": []},
           {**good, "top_k": [["Coat", 1.5]], "score": 1.5}, {**good, "model_sha256": "xyz"}, {**good, "path": ""},
           {**good, "ms": -1.0}, {**good, "capture": {"label": "Bag"}}, [good]]
    for line in bad:
        with pytest.raises(ValueError):
            record.validate(line)
