"""Bring the frames a board kept (`classify.py --save-frames DIR`) into a local folder: `edge-fashion pull`.

The board's agent (agent.py, as for deploy) lists every image under DIR with its sha256; the
frames whose bytes are not already anywhere in the local folder travel, in batches, and land at the
same relative path (DIR/<label>/<name>). A frame you moved to another class folder is not pulled
again, and a different local file is never overwritten: the frame then takes a free name beside it.
"""

import base64
import dataclasses
import hashlib
import json
import pathlib
import typing

from edge_fashion import files
from edge_fashion.deploy import transport

BATCH_BYTES = 8_000_000  # Bytes of frames per agent call: small for a Pi Zero's memory, few calls.


@dataclasses.dataclass(frozen=True)
class PullResult:
    pulled: tuple[str, ...]  # Local relative paths of the frames written.
    already_here: int  # Frames whose bytes the local folder already held (anywhere in it).
    bytes_pulled: int


def local_sha256s(folder: pathlib.Path) -> set[str]:
    """The sha256 of every file under folder (hidden ones too: a half-pulled frame is not counted)."""
    if not folder.is_dir():
        return set()
    return {hashlib.sha256(path.read_bytes()).hexdigest()
            for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")}


def batches(names: list[str], sizes: dict[str, int]) -> typing.Iterator[list[str]]:
    """The names in runs of at most BATCH_BYTES (a bigger file goes alone)."""
    batch, total = [], 0
    for name in names:
        if batch and total + sizes[name] > BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(name)
        total += sizes[name]
    if batch:
        yield batch


def local_path(folder: pathlib.Path, name: str) -> pathlib.Path:
    """folder/name for the board's relative name, never outside folder; a free name if it is taken."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise transport.DeployError(f"refusing the board's file name {name!r}: not a plain relative path")
    path, count = folder.joinpath(*parts), 1
    while path.exists():
        count += 1
        path = path.with_name(f"{pathlib.PurePath(parts[-1]).stem}-{count}{path.suffix}")
    return path




def pull(target: transport.Target, folder: pathlib.Path,
         progress: typing.Callable[[str], None] = lambda line: None) -> PullResult:
    """Copy the frames under the target's folder that `folder` lacks; check each one's sha256."""
    folder = pathlib.Path(folder)
    with transport.shared_connection(target) as connected:
        listed = transport.call_agent(connected, "frames", [])["files"]
        have = local_sha256s(folder)
        wanted = [name for name in sorted(listed) if listed[name]["sha256"] not in have]
        pulled, size = [], 0
        for batch in batches(wanted, {name: listed[name]["size"] for name in wanted}):
            payload = json.dumps(batch).encode() + b"\n"
            sent = transport.call_agent(connected, "send", [], payload)["files"]
            for name in batch:
                content = base64.b64decode(sent[name])
                if files.sha256_bytes(content) != listed[name]["sha256"]:
                    raise transport.DeployError(f"{target}: {name} changed or arrived damaged; run pull again")
                path = local_path(folder, name)
                files.atomic_write_bytes(path, content)  # A name no file has: nothing is overwritten.
                pulled.append(path.relative_to(folder).as_posix())
                size += len(content)
            progress(f"pulled {len(pulled)} of {len(wanted)} frames ({size:,} bytes)")
    progress(f"{len(pulled)} frames pulled into {folder}, {len(listed) - len(wanted)} already here, from {target}")
    return PullResult(tuple(pulled), len(listed) - len(wanted), size)
