"""The board under abuse, probed again: a crowd of slow sockets and viewers against /healthz, fuzzed
request heads and bodies, special files (FIFOs, devices, links) and damaged bundles, and models truncated
or bit-flipped with a rewritten sha256 on every runtime.

Usage (after `edge-fashion build`, from the repository root):
    python benchmarks/abuse.py --bundle artifacts/device

Loopback only; every run is bounded in time (a hang is counted, then killed) and in count; it stops
by itself (about 10 minutes on a busy 2-core PC). classify.py runs in the board's venv
(tests/device_venv.py: tflite-runtime 2.14, numpy 1.24, Pillow 9.4) and, for ai-edge-litert, under
this python. Prints: /healthz's statuses and latencies under the crowd, the viewers served and the
frames classified meanwhile; the fuzz's statuses; each case's outcome; each runtime's exit codes
over the damaged models. Targets: 30 of 30 probes 200 within 1 s; 0 tracebacks, 0 hangs, 0 crashes.
"""

import argparse
import collections
import gzip
import json
import os
import pathlib
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import device_venv  # noqa: E402  (tests/device_venv.py)
from test_bundle_checks import flipped, replace_model, weight_bytes  # noqa: E402
from test_serve_abuse import exchange, fuzzed_request, status_of  # noqa: E402

TOKEN = "a-token-for-the-abuse-probe-0123"
PROBES, PROBE_SECONDS = 30, 1.0
RUN_SECONDS = 60  # Any one classify.py run past this is a hang.
ENVIRONMENT = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


class Board:
    """classify.py --serve in the board's venv, its stderr kept to look for tracebacks."""

    def __init__(self, python, bundle, folder, *arguments):
        """--serve --replay folder ARGUMENTS, in folder's parent (where captures would go)."""
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen([python, str(bundle / "classify.py"), "--serve", "--port", "0", "--json",
                                         "--replay", str(folder), "--fps", "10", *arguments],
                                        stdout=subprocess.DEVNULL, stderr=self.stderr, cwd=folder.parent,
                                        env=ENVIRONMENT)
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            lines = [line for line in self.text().splitlines() if line.startswith("serving on ")]
            if lines:
                self.port = int(lines[0].split()[2].split("?")[0].rsplit(":", 1)[1].strip("/"))
                return
            time.sleep(0.05)
        raise SystemExit(f"classify.py --serve did not start: {self.text()[-500:]}")

    def text(self) -> str:
        return text_of(self.stderr)

    def health(self, seconds: float = 5.0) -> tuple:
        """(status, seconds, JSON or None) of one /healthz with the token."""
        started = time.monotonic()
        answer = exchange(self.port, f"GET /healthz?token={TOKEN} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(),
                          seconds=seconds, finish=False)
        body = answer.split(b"\r\n\r\n", 1)[-1]
        return status_of(answer), time.monotonic() - started, json.loads(body) if body.startswith(b"{") else None

    def stop(self) -> int:
        """Tracebacks in its stderr, once stopped."""
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return self.text().count("Traceback")


def viewer(port: int, running: threading.Event, received: list) -> None:
    """One /events viewer: its status, then events until the crowd disperses."""
    events, status = 0, 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(f"GET /events?token={TOKEN} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            buffer = b""
            while running.is_set():
                chunk = connection.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                status = status or status_of(buffer)
                events += chunk.count(b"data: ")
                buffer = buffer[-64:]
    except OSError:
        pass
    received.append((status, events))


def crowd(python, bundle, folder, slow: int, viewers: int) -> int:
    """Slow sockets (one header line every 5 s, no token) and viewers at once; /healthz probed."""
    board = Board(python, bundle, folder, "--token", TOKEN)
    sockets = [socket.create_connection(("127.0.0.1", board.port)) for _ in range(slow)]
    for connection in sockets:
        connection.sendall(b"GET /healthz HTTP/1.1\r\n")
    running, received = threading.Event(), []
    running.set()
    threads = [threading.Thread(target=viewer, args=(board.port, running, received)) for _ in range(viewers)]
    for thread in threads:
        thread.start()
    time.sleep(6)  # One drip of the slow sockets past their first line.
    for connection in sockets:
        connection.sendall(b"X-Slow: 1\r\n")
    frames_before = board.health()[2]["frames"]
    probes = []
    for _ in range(PROBES):
        probes.append(board.health(PROBE_SECONDS)[:2])
        time.sleep(0.2)
    frames_after = board.health()[2]["frames"]
    running.clear()
    for connection in sockets:
        connection.close()
    for thread in threads:
        thread.join(15)
    tracebacks = board.stop()
    fast = sum(status == 200 and seconds < PROBE_SECONDS for status, seconds in probes)
    latencies = sorted(seconds for _, seconds in probes)
    served = [events for status, events in received if status == 200]
    print(f"crowd: {slow} slow sockets, {viewers} /events viewers, replay at 10 frames/s")
    print(f"  /healthz with the token: {fast} of {PROBES} answered 200 within {PROBE_SECONDS:.0f} s "
          f"(statuses {dict(collections.Counter(status for status, _ in probes))}; "
          f"p50 {1000 * latencies[PROBES // 2]:.0f} ms, max {1000 * latencies[-1]:.0f} ms)")
    print(f"  viewers: {len(served)} served ({min(served, default=0)}-{max(served, default=0)} events each), "
          f"{sum(status == 503 for status, _ in received)} answered 503; frames classified during the "
          f"{PROBES} probes: {frames_after - frames_before}; tracebacks: {tracebacks}")
    return tracebacks + (PROBES - fast)


def fuzz(python, bundle, folder, count: int) -> int:
    board = Board(python, bundle, folder, "--captures", "labelled")
    rng, statuses, started = random.Random(2000), collections.Counter(), time.monotonic()
    for _ in range(count):
        statuses[status_of(exchange(board.port, fuzzed_request(rng), seconds=2, head_only=True))] += 1
    healthy = board.health()[0] == 200
    tracebacks = board.stop()
    print(f"fuzz: {count} request heads and bodies in {time.monotonic() - started:.0f} s; statuses "
          f"{dict(sorted(statuses.items()))} (0: closed without an answer); /healthz after: "
          f"{'200' if healthy else 'FAILED'}; tracebacks: {tracebacks}")
    return tracebacks + (not healthy) + statuses[500]


def run_classify(python, bundle, *arguments) -> tuple:
    """(exit code or 'hang', stderr) of one classify.py run."""
    try:
        result = subprocess.run([python, str(bundle / "classify.py"), *map(str, arguments)], capture_output=True,
                                text=True, timeout=RUN_SECONDS, env=ENVIRONMENT)
    except subprocess.TimeoutExpired:
        return "hang", ""
    return result.returncode, result.stderr


def models(pythons: dict, bundle: pathlib.Path, work: pathlib.Path, count: int) -> int:
    """Truncated and bit-flipped models with a rewritten sha256, --self-test on each runtime."""
    content = (bundle / "model_int8.tflite").read_bytes()
    weights = weight_bytes(content)
    structure = np.setdiff1d(np.arange(len(content)), weights)
    damaged = {"truncated": [content[:length] for length in np.linspace(16, len(content) - 1, count).astype(int)],
               "100 bits anywhere": [flipped(content, np.arange(len(content)), 100, seed) for seed in range(count)],
               "100 weight bits": [flipped(content, weights, 100, seed) for seed in range(count)],
               "3 structure bits": [flipped(content, structure, 3, seed) for seed in range(count)]}
    bad = 0
    for runtime, python in pythons.items():
        copy = shutil.copytree(bundle, work / f"models-{runtime}")
        for kind, mutants in damaged.items():
            outcomes = collections.Counter()
            for mutant in mutants:
                replace_model(copy, mutant)
                code, stderr = run_classify(python, copy, "--self-test", "--runtime", runtime)
                ours = [line for line in stderr.splitlines() if not line.startswith("INFO: ")]
                one_line = code == 2 and len(ours) == 1 and ours[0].startswith("classify.py: error: ")
                outcome = {0: "PASS", 1: "FAIL", 2: "one-line refusal" if one_line else "exit 2, not one line"}.get(
                    code, "hang" if code == "hang" else f"crash (signal {-code})" if code < 0 else f"exit {code}")
                outcomes["traceback" if "Traceback" in stderr else outcome] += 1
            # A PASS is right for a model whose flipped bits changed nothing it computes, never for 100 weight bits.
            allowed = ("FAIL", "one-line refusal") + (("PASS",) if kind == "3 structure bits" else ())
            bad += sum(number for outcome, number in outcomes.items() if outcome not in allowed)
            print(f"models, {runtime}, {kind} ({len(mutants)}): {dict(outcomes)}")
    return bad


def special_files(folder: pathlib.Path) -> None:
    os.mkfifo(folder / "a_fifo.jpg")
    (folder / "b_zero.jpg").symlink_to("/dev/zero")


def cases(python, bundle, folder, work: pathlib.Path) -> int:
    """Items 2-12 of the probe, each once; item 1 is the crowd above, 8 the damaged models below."""
    board = Board(python, bundle, folder, "--verbose", "--captures", str(work / "labelled"))
    nested = exchange(board.port, b"POST /capture HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n" + b"[" * 1000)
    long_line = exchange(board.port, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    short_body = exchange(board.port, b"POST /capture HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                          b"\r\nContent-Length: 200\r\n\r\n{", seconds=30, finish=False)
    outcomes = {"2 nested capture body": status_of(nested), "3 70 KB request line, --verbose": status_of(long_line),
                "4 capture body cut short": status_of(short_body)}
    tracebacks = board.stop()
    outcomes["5 --watch with a FIFO and /dev/zero"], stderr = watch_case(python, bundle, folder, work)
    tracebacks += stderr.count("Traceback")
    special = work / "special-replay"
    special.mkdir()
    special_files(special)
    shutil.copy(next(folder.iterdir()), special / "c.jpg")
    outcomes["6 --replay with a FIFO and /dev/zero"], stderr = run_classify(
        python, bundle, "--replay", special, "--count", "3", "--json")
    tracebacks += stderr.count("Traceback")
    outcomes["7 named FIFO held open"], stderr = held_fifo(python, bundle, work, folder)
    tracebacks += stderr.count("Traceback")
    for name, damage in (("9 labels reordered", reorder_labels), ("10 case without image_b64", drop_image)):
        copy = shutil.copytree(bundle, work / name.replace(" ", "-"))
        damage(copy)
        outcomes[name], stderr = run_classify(python, copy, "--self-test")
        tracebacks += stderr.count("Traceback")
    outcomes.update(release_cases(python, bundle, work))
    for name, outcome in outcomes.items():
        print(f"case {name}: {outcome}")
    print("case 1 (slow sockets): the crowd above; case 8 (damaged models): below")
    print(f"cases: tracebacks {tracebacks}, hangs {sum(outcome == 'hang' for outcome in outcomes.values())}")
    return tracebacks + sum(outcome == "hang" or str(outcome).startswith("FAILED") for outcome in outcomes.values())


def release_cases(python, bundle, work) -> dict:
    """Items 11-12 on a folder target: what a death left in prune (.removing-<r>) and in a switch's
    write of .release.json; each then deploys (in-process, as edge-fashion deploy does)."""
    from edge_fashion.deploy import transport

    board = work / "board"
    target = transport.parse_target(str(board), python=python)
    variants = []
    for index in range(3):
        variants.append(shutil.copytree(bundle, work / f"release-{index}"))
        with (variants[-1] / "README.md").open("a") as readme:
            readme.write(f"\nRelease {index}.\n")
    first = transport.deploy(variants[0], target).release
    shutil.copytree(board / "releases" / first, board / "releases" / f".removing-{first}")
    outcomes = {}
    try:
        for variant in variants[1:]:
            transport.deploy(variant, target, keep=1)
        left = [path.name for path in (board / "releases").iterdir() if path.name.startswith(".")]
        outcomes["11 a prune that died half way, then 2 deploys"] = f"ok, leftovers {left}"
    except ValueError as error:
        outcomes["11 a prune that died half way, then 2 deploys"] = f"FAILED: {error}"
    current = board / "releases" / os.path.basename(os.readlink(board / "current"))
    (current / ".release.json.partial-4242").write_text("{")
    transport.deploy(variants[-1], target, keep=1)
    left = len(list(current.glob("*.partial-*")))
    outcomes["12 a switch's write that died, then a deploy"] = f"FAILED: {left} left" if left else "ok, none left"
    return outcomes


def watch_case(python, bundle, folder, work) -> tuple:
    """(exit code or 'hang', stderr) of --watch --count 3 fed a FIFO, a /dev/zero link and an image."""
    watched = work / "special-watch"
    watched.mkdir()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen([python, str(bundle / "classify.py"), "--watch", str(watched), "--count", "3",
                                    "--json"], stdout=subprocess.DEVNULL, stderr=stderr, env=ENVIRONMENT)
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline and "watching" not in text_of(stderr):
            time.sleep(0.1)
        special_files(watched)
        time.sleep(1)
        shutil.copy(next(folder.iterdir()), watched / "c.jpg")
        try:
            code = process.wait(RUN_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            code = "hang"
        return code, text_of(stderr)


def text_of(file) -> str:
    file.seek(0)
    return file.read().decode(errors="replace")


def held_fifo(python, bundle, work, folder) -> tuple:
    fifo = work / "held.jpg"
    os.mkfifo(fifo)
    release = threading.Event()

    def hold():
        with open(fifo, "wb"):
            release.wait(RUN_SECONDS)
    threading.Thread(target=hold, daemon=True).start()
    try:
        return run_classify(python, bundle, fifo, next(folder.iterdir()), "--json")
    finally:
        release.set()


def reorder_labels(bundle: pathlib.Path) -> None:
    labels = (bundle / "labels.txt").read_text().splitlines()
    (bundle / "labels.txt").write_text("\n".join([labels[1], labels[0], *labels[2:]]) + "\n")


def drop_image(bundle: pathlib.Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["self_test"]["cases"][0]["image_b64"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def replay_folder(data_dir: pathlib.Path, folder: pathlib.Path, count: int = 20) -> pathlib.Path:
    """Real test images, enlarged and saved as camera-sized JPEGs."""
    with gzip.open(data_dir / "t10k-images-idx3-ubyte.gz") as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    folder.mkdir()
    for index in range(count):
        Image.fromarray(images[index]).resize((320, 320)).save(folder / f"{index:02d}.jpg", quality=90)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=pathlib.Path, default=REPO / "artifacts" / "device")
    parser.add_argument("--data-dir", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("EDGE_FASHION_DATA", "/usr/share/datasets/fashion-mnist")))
    parser.add_argument("--slow", type=int, default=100, help="slow sockets in the crowd")
    parser.add_argument("--viewers", type=int, default=100, help="/events viewers in the crowd")
    parser.add_argument("--fuzz", type=int, default=2000, help="fuzzed request heads and bodies")
    parser.add_argument("--models", type=int, default=12, help="damaged models of each kind, per runtime")
    arguments = parser.parse_args()
    board_python = str(device_venv.ensure_device_venv(REPO))
    pythons = {"tflite_runtime": board_python, "ai_edge_litert": sys.executable, "numpy": board_python}
    bundle, started = arguments.bundle.resolve(), time.monotonic()
    with tempfile.TemporaryDirectory() as temporary:
        work = pathlib.Path(temporary)
        folder = replay_folder(arguments.data_dir, work / "frames")
        problems = crowd(board_python, bundle, folder, arguments.slow, arguments.viewers)
        problems += fuzz(board_python, bundle, folder, arguments.fuzz)
        problems += cases(board_python, bundle, folder, work)
        problems += models(pythons, bundle, work, arguments.models)
    print(f"\n{'no' if not problems else problems} problems (tracebacks, hangs, crashes, probes over "
          f"{PROBE_SECONDS:.0f} s, PASSes of a damaged model) in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
