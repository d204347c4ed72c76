"""The agent's actions, each a function of (DIR, the action's arguments, stdin), and its one-line errors."""

from __future__ import annotations

import json
import sys

from edge_fashion import files
from edge_fashion.deploy.agent import common, frames, releases, service


def prepare(directory, arguments, stdin):
    return releases.prepare(common.open_folder(directory, True), arguments[0], json.loads(stdin.readline()))


def receive(directory, arguments, stdin):
    folder = common.release_folder(common.open_folder(directory, True), arguments[0])
    return {"received": releases.receive(folder, stdin)}


def verify(directory, arguments, stdin):
    folder = common.release_folder(common.open_folder(directory, True), arguments[0])
    return {"sha256": {name: files.sha256_file(common.bundle_path(folder, name)) for name in arguments[1:]}}


def install(directory, arguments, stdin):
    board = common.open_folder(directory, True)
    return {"output": releases.install(board, common.release_folder(board, arguments[0]))}


def self_test(directory, arguments, stdin):
    board = common.open_folder(directory, True)
    python = arguments[1] if len(arguments) > 1 else None
    return releases.self_test(board, common.release_folder(board, arguments[0]), python)


def switch(directory, arguments, stdin):
    board = common.open_folder(directory, True)
    return releases.switch(board, arguments[0], int(arguments[1]), rollback=arguments[2] == "rollback")


def list_releases(directory, arguments, stdin):
    return releases.list_releases(common.open_folder(directory, False))


def check_service(directory, arguments, stdin):
    return service.check(common.open_folder(directory, False))


def install_service(directory, arguments, stdin):
    return service.install(common.open_folder(directory, True), stdin.read().decode())


def health(directory, arguments, stdin):
    return service.health(common.open_folder(directory, True), int(arguments[0]), float(arguments[1]))


def list_frames(directory, arguments, stdin):
    return {"files": frames.list_frames(frames.existing_folder(directory))}


def send_frames(directory, arguments, stdin):
    return {"files": frames.send(frames.existing_folder(directory), json.loads(stdin.readline()))}


ACTIONS = {
    "prepare": prepare, "receive": receive, "verify": verify, "install": install, "self-test": self_test,
    "switch": switch, "releases": list_releases, "service-check": check_service, "service": install_service, "health": health,
    "frames": list_frames, "send": send_frames,
}


def main(arguments: list) -> None:
    """ACTION DIR [ARGUMENT...]: one JSON answer on stdout, or one line on stderr and exit status 3."""
    action, directory, rest = arguments[0], arguments[1], arguments[2:]
    try:
        if action not in ACTIONS:
            raise common.AgentError(f"unknown action {action!r}: the host and the agent disagree")
        answer = ACTIONS[action](directory, rest, sys.stdin.buffer)
    except (common.AgentError, OSError, ValueError) as error:
        sys.stderr.write(f"{common.ERROR_PREFIX}{common.explain(error, directory)}\n")
        sys.exit(common.ERROR_EXIT)
    sys.stdout.write(json.dumps(answer))
