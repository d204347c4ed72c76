"""The board's releases, seen from the host: prepare one, switch to it, roll back, list them.

A board holds each bundle in DIR/releases/<name>/ (the name is the start of the sha256 over the
bundle's files) and DIR/current, a symlink to the one in use. The work is done on the board by
agent.py; these functions take `call(action, arguments, payload) -> answer`, one agent call on one
board (transport.call_agent bound to a target), and say what happened in lines for `progress`.
"""

import dataclasses
import datetime
import json
import typing

Call = typing.Callable[..., dict]
Progress = typing.Callable[[str], None]


class ReleaseError(ValueError):
    """A release step the board refused or could not do, said in one line."""


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    deployed_at: float | None  # When a deploy first made it current; None if none ever did.
    model_sha256: str | None
    current: bool


def prepare(call: Call, release: str, sha256_by_name: dict[str, str]) -> dict:
    """Make the release folder on the board, reusing files it already holds; answer what is there."""
    return call("prepare", [release], json.dumps(sha256_by_name).encode() + b"\n")


def switch(call: Call, release: str, keep: int, progress: Progress, rollback: bool = False) -> dict:
    """Point current at the release (the service restarts if installed) and prune to `keep` releases."""
    answer = call("switch", [release, str(keep), "rollback" if rollback else "deploy"])
    if answer["old"] == release:
        progress(f"releases/{release}/ was already current")
    else:
        old = f"releases/{answer['old']}/" if answer["old"] else "nothing"
        progress(f"current: {old} -> releases/{release}/ (service: {answer['service']})")
    if answer["pruned"]:
        progress(f"removed old releases {', '.join(answer['pruned'])} (keeping {keep})")
    return answer


def self_test(call: Call, release: str, python: str | None, where: str, progress: Progress) -> str:
    """Run the release's classify.py --self-test on the board; raise ReleaseError unless it passes."""
    answer = call("self-test", [release, *([python] if python else [])])
    progress(f"self-test of releases/{release}/ on {where} with {answer['python']}:")
    progress(answer["output"].rstrip())
    if not answer["passed"]:
        raise ReleaseError(f"self-test FAILED on {where} (exit status {answer['status']}): "
                           f"releases/{release}/ is not made current")
    return answer["output"]


def releases(call: Call) -> list[Release]:
    """The board's releases, oldest deploy first."""
    answer = call("releases", [])
    return [Release(entry["name"], entry.get("deployed_at"), entry.get("model_sha256"),
                    entry["name"] == answer["current"]) for entry in answer["releases"]]


def previous(found: list[Release]) -> Release:
    """The release deployed before the current one: what --rollback goes back to."""
    current = [release for release in found if release.current]
    if not current:
        raise ReleaseError("the board has no current release: deploy one first")
    earlier = [release for release in found if release.deployed_at is not None
               and release.deployed_at < (current[0].deployed_at or 0)]
    if not earlier:
        raise ReleaseError(f"no release was deployed before releases/{current[0].name}/: nothing to roll back to")
    return earlier[-1]


def rollback(call: Call, keep: int, python: str | None, where: str, progress: Progress) -> dict:
    """Switch back to the previous release, after its self-test passes again on the board."""
    target = previous(releases(call))
    self_test(call, target.name, python, where, progress)
    return switch(call, target.name, keep, progress, rollback=True)


def describe(found: list[Release]) -> list[str]:
    """One line per release, newest first: a star on the current one, deploy time, model sha256."""
    lines = []
    for release in reversed(found):
        when = (datetime.datetime.fromtimestamp(release.deployed_at).strftime("%Y-%m-%d %H:%M:%S")
                if release.deployed_at else "never current")
        model = (release.model_sha256 or "?")[:12]
        lines.append(f"{'*' if release.current else ' '} {release.name}  {when:19}  model {model}")
    return lines or ["no releases on this board"]
