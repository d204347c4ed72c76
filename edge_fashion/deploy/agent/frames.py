"""The agent's part of `edge-fashion pull`: what classify.py --save-frames kept under DIR, and its bytes."""

from __future__ import annotations

import base64
import os
import pathlib

from edge_fashion import files
from edge_fashion.deploy.agent import common
from fashion_board import common as board_common


def existing_folder(directory: str) -> pathlib.Path:
    folder = pathlib.Path(directory).expanduser()
    if not folder.is_dir():
        raise common.AgentError(f"{directory}: no such folder (classify.py --save-frames makes it)")
    return folder


def list_frames(folder: pathlib.Path) -> dict:
    """{relative name: {size, sha256}} of the image files under folder, hidden files and folders left out."""
    found = {}
    for root, folders, names in os.walk(str(folder)):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            path = pathlib.Path(root, name)
            if not name.startswith(".") and path.suffix.lower() in board_common.IMAGE_SUFFIXES and path.is_file():
                found[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size,
                                                              "sha256": files.sha256_file(path)}
    return found


def send(folder: pathlib.Path, names: list) -> dict:
    """{name: base64 of its bytes} for the named files under folder."""
    return {name: base64.b64encode(common.bundle_path(folder, name).read_bytes()).decode("ascii")
            for name in names}
