"""The one page `classify.py --serve` shows at `/`: no external assets, everything inline.

The live frame is an MJPEG stream (`/stream.mjpg`); the results come as Server-Sent Events
(`/events`, one JSON object per frame); a button per class POSTs `/capture`. Every text the page
shows is set with textContent, so a label can never inject markup.
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
main { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
section { background: #fff; padding: 0.8rem; border-radius: 6px; }
#live { max-width: 640px; width: 100%; background: #000; min-height: 120px; display: block; }
#seen { width: 168px; height: 168px; image-rendering: pixelated; background: #000; display: block; }
#label { font-size: 2rem; margin: 0.3rem 0; }
.bar { display: flex; align-items: center; gap: 0.4rem; margin: 0.2rem 0; }
.bar span { width: 7rem; } .bar div { background: #3b7dd8; height: 0.9rem; }
#buttons button { margin: 0.15rem; padding: 0.4rem 0.6rem; }
#rates, #status { color: #555; }
</style>
</head>
<body>
<h1>edge-fashion live</h1>
<main>
<section><img id="live" alt="live frame"></section>
<section>
<img id="seen" alt="the 28x28 frame the model saw">
<p id="label">waiting for a frame</p>
<div id="top"></div>
<p id="rates"></p>
</section>
<section><p>Save this frame as:</p><div id="buttons"></div><p id="status"></p></section>
</main>
<script>
const LABELS = __LABELS__;
const token = new URLSearchParams(location.search).get("token");
const query = token ? "?token=" + encodeURIComponent(token) : "";
const byId = (id) => document.getElementById(id);

function show(frame) {
  byId("label").textContent = frame.error ? "error: " + frame.error : frame.label;
  if (frame.seen) byId("seen").src = frame.seen;
  const top = byId("top");
  top.replaceChildren(...frame.top.map(([label, score]) => {
    const row = document.createElement("div"), name = document.createElement("span"),
          bar = document.createElement("div"), value = document.createElement("span");
    row.className = "bar";
    name.textContent = label;
    bar.style.width = Math.round(150 * score) + "px";
    value.textContent = (100 * score).toFixed(1) + "%";
    row.append(name, bar, value);
    return row;
  }));
  byId("rates").textContent = frame.ms.toFixed(2) + " ms/frame, " + frame.fps.toFixed(1) + " frames/s, "
    + frame.frames + " frames, " + frame.errors + " errors";
}

function capture(label) {
  fetch("/capture" + query, {method: "POST", headers: {"Content-Type": "application/json"},
                             body: JSON.stringify({label: label})})
    .then((response) => response.json())
    .then((answer) => { byId("status").textContent = answer.saved ? "saved " + answer.saved : answer.error; })
    .catch((error) => { byId("status").textContent = "capture failed: " + error; });
}

for (const label of LABELS) {
  const button = document.createElement("button");
  button.textContent = label;
  button.onclick = () => capture(label);
  byId("buttons").append(button);
}
new EventSource("/events" + query).onmessage = (message) => show(JSON.parse(message.data));
// The stream never ends, so it starts after the page has loaded.
window.addEventListener("load", () => { byId("live").src = "/stream.mjpg" + query; });
</script>
</body>
</html>
"""


def render(labels: list) -> bytes:
    """The page with the model's labels; `</` is escaped so a label cannot end the script."""
    return PAGE.replace("__LABELS__", json.dumps(labels).replace("</", "<\\/")).encode()
