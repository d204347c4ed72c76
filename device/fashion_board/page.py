"""The one page `classify.py --serve` shows at `/`: no external assets, everything inline.

Each frame shown comes as Server-Sent Events (`/events`): its record, which carries the frame's id,
then its pictures under that id (the frame and its 28x28 view, as data URLs, so the page makes no
request per frame). The page decodes both pictures off-screen, and only once both have decoded
swaps them in with the answer, all in one step: the frame, the 28x28 view and the answer on screen
are always the same frame's, and an image that did not decode is never put on the page. While one
frame decodes, newer frames wait; the newest of them is decoded next. A button per class, or its key (1 = the first class ... 0 = the tenth), POSTs
`/capture` with the id of the frame on screen. Every text the page shows is set with textContent,
so a label can never inject markup.
"""

from __future__ import annotations

import json

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-fashion live</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1rem; background: #f4f4f4; color: #222; }
h1 { font-size: 1.4rem; margin: 0 0 0.3rem; }
main { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
section { background: #fff; padding: 0.8rem; border-radius: 6px; }
.box { background: #000; color: #bbb; display: flex; align-items: center; justify-content: center;
       overflow: hidden; text-align: center; }
.box > img { width: 100%; height: 100%; object-fit: contain; display: block; }
#live-box { width: min(512px, 90vw); aspect-ratio: 4 / 3; }
#seen-box { width: 168px; height: 168px; }
#seen-box > img { image-rendering: pixelated; }
#source { color: #555; margin: 0.4rem 0 0; min-height: 1.2em; overflow-wrap: anywhere; max-width: 512px; }
#answer { font-size: 1.8rem; margin: 0.3rem 0; min-height: 2.2rem; }
#unsure { font-size: 1rem; background: #f0b429; color: #000; border-radius: 4px; padding: 0.1rem 0.4rem;
          vertical-align: middle; }
#top { min-height: 4.2rem; }
.bar { display: flex; align-items: center; gap: 0.4rem; margin: 0.2rem 0; }
.bar span:first-child { width: 7rem; } .bar div { background: #3b7dd8; height: 0.9rem; }
#side { width: 23rem; } #side p { margin: 0.4rem 0; }
#buttons button { margin: 0.15rem; padding: 0.3rem 0.5rem; }
kbd { font-family: ui-monospace, monospace; background: #eee; border: 1px solid #bbb; border-radius: 3px;
      padding: 0 0.25rem; margin-right: 0.3rem; }
#state { font-weight: 600; } #state[data-state="live"] { color: #2f7d32; } #state[data-state="stalled"],
#state[data-state="lost"], #state[data-state="failing"] { color: #b3261e; }
#rates { color: #555; } #capture[data-result="refused"] { color: #b3261e; }
</style>
</head>
<body>
<h1>edge-fashion live</h1>
<p id="state" data-state="connecting">connecting to the board</p>
<main>
<section>
<div id="live-box" class="box"><p id="live">waiting for a frame</p></div>
<p id="source"></p>
</section>
<section id="side">
<div id="seen-box" class="box"><p id="seen">waiting for a frame</p></div>
<p id="answer"><span id="label"></span> <span id="unsure" hidden
 title="the best score is below --threshold, or the preprocessing doubted where the garment is">unsure</span></p>
<div id="top"></div>
<p id="rates"></p>
<p>Save the frame on screen as:</p><div id="buttons"></div>
<p id="capture" role="status"></p>
</section>
</main>
<script>
const LABELS = __LABELS__;
const STALE_AFTER_SECONDS = __STALE_AFTER__;
const KEYS = "1234567890";  // Key 1 labels with the first class ... 0 with the tenth.
const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const byId = (id) => document.getElementById(id);
let shown = null;      // The record of the frame in the page (swapped in, perhaps not yet painted).
let painted = null;    // The record of the frame a person sees: shown, once the browser has painted it.
let loading = false;   // A frame's pictures are loading.
let newest = null;     // The newest frame not yet decoded: {record, pictures}.
let record = null;     // The last record received, waiting for its pictures.
let lastEvent = 0;     // When the last record came (performance.now()), 0 before the first.
let connected = false;
let failed = "";       // Why the last frame could not be shown, while no later one could.

function picture(source, id, number) {
  const image = new Image();
  image.id = id;
  image.dataset.frame = number;
  image.alt = "";
  image.src = source;
  return image;
}

function bar([label, score]) {
  const row = document.createElement("div"), name = document.createElement("span"),
        length = document.createElement("div"), value = document.createElement("span");
  row.className = "bar";
  name.textContent = label;
  length.style.width = Math.round(150 * score) + "px";
  value.textContent = (100 * score).toFixed(1) + "%";
  row.append(name, length, value);
  return row;
}

// Everything on screen changes here, in one step, for one record whose pictures have decoded.
function swap(record, frame, seen) {
  byId("live-box").replaceChildren(frame);
  if (!seen) {
    seen = document.createElement("p");
    seen.id = "seen";
    seen.dataset.frame = record.frame;
    seen.textContent = "no 28x28 frame";
  }
  byId("seen-box").replaceChildren(seen);
  byId("answer").dataset.frame = record.frame;
  byId("label").textContent = record.error ? "error: " + record.error : record.label;
  byId("unsure").hidden = !record.unsure;
  byId("top").replaceChildren(...(record.top_k || []).map(bar));
  byId("source").textContent = "frame " + record.frame + " \u00b7 " + record.path
    + (record.error ? "" : " \u00b7 " + record.ms.toFixed(2) + " ms");
  document.body.dataset.frame = record.frame;
  document.body.dataset.path = record.path;
  shown = record;
  failed = "";
  // What the page holds at an animation frame is what the paint right after it draws: from then on
  // a click or key labels it; before, the frame still on screen.
  requestAnimationFrame(() => { if (!painted || shown.frame > painted.frame) painted = shown; });
}

function loadNext() {
  const next = newest;
  newest = null;
  if (!next || (shown && next.record.frame <= shown.frame)) return;
  loading = true;
  const number = next.record.frame;
  const frame = picture(next.pictures.picture, "live", number);
  const seen = next.pictures.seen ? picture(next.pictures.seen, "seen", number) : null;
  Promise.all([frame.decode(), seen && seen.decode()])
    .then(() => swap(next.record, frame, seen),
          () => { failed = "frame " + number + " could not be shown"; })
    .finally(() => { loading = false; showState(); loadNext(); });
}

function offer(pictures) {
  if (!record || record.frame !== pictures.frame) return;
  lastEvent = performance.now();
  newest = {record: record, pictures: pictures};
  if (!loading) loadNext();
}

function showState() {
  const quiet = (performance.now() - lastEvent) / 1000;
  let state = "live", text = "live";
  if (!connected) {
    [state, text] = shown ? ["lost", "lost the connection to the board: retrying"] : ["connecting", "connecting to the board"];
  } else if (!lastEvent) {
    [state, text] = ["waiting", "waiting for a frame: none has come yet"];
  } else if (quiet > STALE_AFTER_SECONDS) {
    [state, text] = ["stalled", "no new frame for " + Math.round(quiet) + " s: the stream stalled"];
  } else if (failed) {
    [state, text] = ["failing", failed + (shown ? "; still showing frame " + shown.frame : "")];
  }
  byId("state").dataset.state = state;
  byId("state").textContent = text;
}

function say(text, refused) {
  byId("capture").textContent = text;
  byId("capture").dataset.result = refused ? "refused" : "saved";
}

function capture(index) {
  if (!painted) return say("no frame on screen yet: nothing saved", true);
  const frame = painted.frame, label = LABELS[index];
  fetch("/capture" + query, {method: "POST", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({label: label, frame: frame})})
    .then((response) => response.json().then((answer) => [response.status, answer]))
    .then(([status, answer]) => status === 201
      ? say("saved frame " + frame + " as " + answer.saved, false) : say(answer.error, true))
    .catch((error) => say("capture failed: " + error, true));
}

LABELS.forEach((label, index) => {
  const button = document.createElement("button"), key = document.createElement("kbd");
  button.dataset.label = label;
  if (index < KEYS.length) {
    key.textContent = KEYS[index];
    button.append(key);
  }
  button.append(label);
  button.onclick = () => capture(index);
  byId("buttons").append(button);
});
document.addEventListener("keydown", (event) => {
  const index = KEYS.indexOf(event.key);
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey || index < 0 || index >= LABELS.length) return;
  event.preventDefault();
  capture(index);
});
const events = new EventSource("/events" + query);
events.onopen = () => { connected = true; showState(); };
events.onerror = () => { connected = false; showState(); };
events.onmessage = (message) => { record = JSON.parse(message.data); };
events.addEventListener("pictures", (message) => offer(JSON.parse(message.data)));
events.addEventListener("rates", (message) => {
  const rates = JSON.parse(message.data);
  byId("rates").textContent = rates.fps.toFixed(1) + " frames/s, " + rates.frames + " frames, "
    + rates.errors + " errors, " + rates.captured + " saved";
});
setInterval(showState, 500);
</script>
</body>
</html>
"""


def render(labels: list, stale_after: float) -> bytes:
    """The page with the model's labels and --stale-after; `</` is escaped so a label cannot end the script."""
    return (PAGE.replace("__LABELS__", json.dumps(labels).replace("</", "<\\/"))
            .replace("__STALE_AFTER__", json.dumps(stale_after))).encode()
