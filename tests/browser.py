"""A real headless Chromium, driven over its DevTools pipe (fd 3 in, fd 4 out, JSON messages ended by NUL),
so tests can wait for a page to update, read its text and take a screenshot with the standard library only."""

import base64
import collections
import json
import os
import shutil
import subprocess
import time

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)


class Browser:
    """One headless Chromium process; `evaluate` and `screenshot` work on the page opened with `open`."""

    def __init__(self, executable: str, width: int = 1000, height: int = 700):
        to_chromium, self.commands = os.pipe()
        self.answers, from_chromium = os.pipe()

        def connect_pipe():  # In the child: Chromium reads commands on fd 3 and answers on fd 4.
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)
            for descriptor in (3, 4):  # dup2 onto the same number keeps close-on-exec: clear it.
                os.set_inheritable(descriptor, True)
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "--no-first-run", "about:blank"],
            preexec_fn=connect_pipe, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chromium)
        os.close(from_chromium)
        self.buffer, self.next_id, self.session, self.answered = b"", 0, None, {}
        self.events = collections.deque(maxlen=1000)  # The last events Chromium sent, oldest first.

    def send(self, method: str, params: dict | None = None) -> int:
        """Send one command without waiting for its answer; its id, for `receive`."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        return self.next_id

    def receive(self, wanted, timeout: float = 30) -> dict:
        """The result of the command with id `wanted`, or the params of the next event named `wanted`
        (such as "Debugger.paused"); other answers and the last events are kept for their turn."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = next((event for event in self.events if event.get("method") == wanted), None)
            if event is not None:
                self.events.remove(event)
                return event.get("params", {})
            if wanted in self.answered:
                answer = self.answered.pop(wanted)
                if "error" in answer:
                    raise RuntimeError(f"command {wanted}: {answer['error']}")
                return answer["result"]
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    self.answered[message["id"]] = message
                else:
                    self.events.append(message)
            if wanted in self.answered or any(event.get("method") == wanted for event in self.events):
                continue
            block = os.read(self.answers, 1 << 20)
            if not block:
                raise RuntimeError("Chromium closed its pipe")
            self.buffer += block
        raise TimeoutError(f"{wanted}: no answer in {timeout} s")

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        try:
            return self.receive(self.send(method, params), timeout)
        except (RuntimeError, TimeoutError) as error:
            raise type(error)(f"{method}: {error}") from None

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 20):
        """The value of expression once it is truthy."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{expression} stayed false for {seconds} s")

    def click(self, x: float, y: float) -> None:
        """A left click at (x, y) in CSS pixels, as a user's mouse makes it."""
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def press(self, key: str) -> None:
        """One key of the top row of digits, pressed and released as a keyboard does it."""
        code = {"key": key, "code": f"Digit{key}", "windowsVirtualKeyCode": ord(key), "nativeVirtualKeyCode": ord(key)}
        self.call("Input.dispatchKeyEvent", {"type": "keyDown", "text": key, **code})
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", **code})

    def screenshot(self) -> bytes:
        # Still lossless; a faster PNG encoding, so that fewer frames of a live page change during it.
        parameters = {"format": "png", "optimizeForSpeed": True}
        return base64.b64decode(self.call("Page.captureScreenshot", parameters)["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.answers)
