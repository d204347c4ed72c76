"""Runs: every build in a folder of its own under OUT/runs/, published whole, and OUT/latest.

    OUT/runs/20261129T160530Z-1a2b3c4d/   one build: models, report, device/ (named by UTC time
                                         and the int8 model's short sha256)
    OUT/latest -> runs/<newest good run>  moved by one rename of a new symlink over it
    OUT/device -> latest/device           and the same for every other file of a run, so the paths
    OUT/model_int8.tflite -> latest/...   users know keep working and all move with `latest`
    OUT/.lock                            held (flock) by the build writing into OUT

A build stages in OUT/runs/.staging-<pid>/ and publishes with one rename of that folder; a build
killed at any point leaves `latest` on the last good run, whole.
"""

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import shutil

from edge_fashion import files

RUNS, LATEST, LOCK = "runs", "latest", ".lock"
# Leftovers named after the pid that made them; removed once that process is gone.
PID_PREFIXES = (".staging-", ".retired-", ".latest.tmp-")
SHORT_SHA = 8  # Hex digits of the int8 model's sha256 in a run's name.


class BuildLocked(ValueError):
    """Another build holds the output folder."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    path: pathlib.Path
    latest: bool
    seed: int | None
    float_accuracy: float | None
    int8_accuracy: float | None
    photo_accuracy: float | None  # Real phone photos, when the build measured them.
    int8_bytes: int | None
    int8_sha256: str | None


# The lock, and what dead builds left behind.


@contextlib.contextmanager
def lock(out_dir: pathlib.Path):
    """Hold OUT/.lock for a build; a second build into OUT stops with BuildLocked naming the holder."""
    out_dir = pathlib.Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / LOCK, "a+")
    except OSError as error:
        raise files.write_error(out_dir / LOCK, error) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildLocked(f"{out_dir} is in use by another build ({holder(handle)}); wait for it to "
                              f"finish or build into another --out") from None
        handle.truncate(0)
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        handle.write(json.dumps({"pid": os.getpid(), "started_at": started}) + "\n")
        handle.flush()
        remove_dead_leftovers(out_dir)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(handle) -> str:
    handle.seek(0)
    try:
        value = json.loads(handle.read())
        return f"pid {value['pid']}, started at {value['started_at']}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Someone else's process: alive.
    return True


def remove_dead_leftovers(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Remove staging folders and temporary links whose process is gone; return what was removed."""
    removed = []
    for folder in (out_dir, out_dir / RUNS):
        for path in sorted(folder.glob(".*")) if folder.is_dir() else []:
            prefix = next((prefix for prefix in PID_PREFIXES if path.name.startswith(prefix)), None)
            pid = path.name[len(prefix):].split("-")[0] if prefix else ""
            if pid.isdigit() and (not pid_alive(int(pid)) or int(pid) == os.getpid()):
                remove(path)
                removed.append(path)
    return removed


def remove(path: pathlib.Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def retire(folder: pathlib.Path) -> None:
    """Delete a folder after renaming it aside, so it is there whole or not at all (a killed delete
    leaves a .retired- folder the next build removes)."""
    retired = folder.with_name(f".retired-{os.getpid()}-{folder.name}")
    os.replace(folder, retired)
    shutil.rmtree(retired, ignore_errors=True)


# Staging and publishing.


def new_stage(out_dir: pathlib.Path) -> pathlib.Path:
    """A fresh staging folder inside OUT/runs/, so publishing is one rename on the same file system."""
    stage = pathlib.Path(out_dir) / RUNS / f".staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir(parents=True)
    except OSError as error:
        raise files.write_error(stage, error) from None
    return stage


@contextlib.contextmanager
def staging(out_dir: pathlib.Path):
    """A stage for one build, removed on the way out unless published or kept aside by then."""
    stage = new_stage(out_dir)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def copy_file(source: pathlib.Path, target: pathlib.Path) -> None:
    try:
        shutil.copyfile(source, target)
    except OSError as error:
        raise files.write_error(target, error) from None


def swap_folder(stage: pathlib.Path, target: pathlib.Path) -> None:
    """Put `stage` in place of the folder `target` (OUT/rejected, OUT/trained), the old one renamed aside first."""
    retired = target.with_name(f".retired-{os.getpid()}-{target.name}")
    try:
        if target.exists():
            os.replace(target, retired)
        os.replace(stage, target)
    except OSError as error:
        raise files.write_error(target, error) from None
    shutil.rmtree(retired, ignore_errors=True)  # Already out of sight; a kill here leaves it for the next build.


def run_name(out_dir: pathlib.Path, int8_sha256: str, when: datetime.datetime | None = None) -> str:
    """UTC time and the int8 model's short sha256; a suffix if a run of that second and model exists."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    name = f"{when:%Y%m%dT%H%M%SZ}-{int8_sha256[:SHORT_SHA]}"
    candidate, number = name, 1
    while (pathlib.Path(out_dir) / RUNS / candidate).exists():
        number += 1
        candidate = f"{name}-{number}"
    return candidate


def publish(stage: pathlib.Path, out_dir: pathlib.Path, name: str) -> pathlib.Path:
    """Rename the stage into OUT/runs/NAME, then move `latest` to it; return the run's folder."""
    run = pathlib.Path(out_dir) / RUNS / name
    try:
        os.replace(stage, run)
        link_top_level(out_dir, run)
        point_latest(out_dir, name)
        remove_dangling_links(out_dir)
    except OSError as error:
        raise files.write_error(pathlib.Path(error.filename or run), error) from None
    return run


def point_latest(out_dir: pathlib.Path, name: str) -> None:
    """A new symlink under a temporary name, renamed over OUT/latest: readers see the old run or the new."""
    temporary = pathlib.Path(out_dir) / f".latest.tmp-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(f"{RUNS}/{name}", temporary)
    os.replace(temporary, pathlib.Path(out_dir) / LATEST)


def link_top_level(out_dir: pathlib.Path, run: pathlib.Path) -> None:
    """OUT/NAME -> latest/NAME for every file of a run; they resolve through `latest`, so never change."""
    for entry in run.iterdir():
        top, target = pathlib.Path(out_dir) / entry.name, f"{LATEST}/{entry.name}"
        if top.is_symlink() and os.readlink(top) == target:
            continue
        temporary = top.with_name(f".latest.tmp-{os.getpid()}-{entry.name}")
        temporary.unlink(missing_ok=True)
        os.symlink(target, temporary)
        if top.is_dir() and not top.is_symlink():
            retired = top.with_name(f".retired-{os.getpid()}-{entry.name}")
            os.replace(top, retired)
            os.replace(temporary, top)
            shutil.rmtree(retired)
        else:
            os.replace(temporary, top)


def remove_dangling_links(out_dir: pathlib.Path) -> None:
    """Links to files the latest run does not have (an older build's extra file) would only mislead."""
    for top in pathlib.Path(out_dir).iterdir():
        if top.is_symlink() and os.readlink(top).startswith(f"{LATEST}/") and not top.exists():
            top.unlink()


# Reading, listing and pruning.


def latest_run(out_dir: pathlib.Path) -> pathlib.Path | None:
    latest = pathlib.Path(out_dir) / LATEST
    return latest.resolve() if latest.is_symlink() and latest.exists() else None


def read_report(run: pathlib.Path) -> dict:
    try:
        return json.loads((run / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def photo_accuracy(report: dict) -> float | None:
    """The int8 model's real-photo accuracy, when the build measured one: on the held-out photos of
    `build --photos`, else on those of `evaluate --photos` (report.json's photos section)."""
    photos = report.get("photos")
    if isinstance(photos, dict):
        section = photos.get("held_out") or photos.get("evaluated") or photos
        int8 = section.get("int8") if isinstance(section, dict) else None
        photos = int8.get("accuracy") if isinstance(int8, dict) else int8
    return float(photos) if isinstance(photos, (int, float)) and not isinstance(photos, bool) else None


def describe(run: pathlib.Path, latest: pathlib.Path | None) -> Run:
    report = read_report(run)
    metrics = report.get("metrics", {})
    # The seed the model was trained with; the config is `convert`'s own when a run was converted.
    seed = report.get("training", {}).get("seed")
    return Run(name=run.name, path=run, latest=latest is not None and run.resolve() == latest,
               seed=seed if seed is not None else report.get("config", {}).get("seed"),
               float_accuracy=metrics.get("float_tflite", {}).get("accuracy"),
               int8_accuracy=metrics.get("int8", {}).get("accuracy"), photo_accuracy=photo_accuracy(report),
               int8_bytes=report.get("sizes", {}).get("model_int8.tflite"),
               int8_sha256=report.get("sha256", {}).get("model_int8.tflite"))


def list_runs(out_dir: pathlib.Path) -> list[Run]:
    """Every published run of OUT, oldest first (names start with the UTC time)."""
    runs_dir = pathlib.Path(out_dir) / RUNS
    if not runs_dir.is_dir():
        raise ValueError(f"{runs_dir} not found: no build in {out_dir} yet (run `edge-fashion build --out {out_dir}`)")
    latest = latest_run(out_dir)
    return [describe(run, latest) for run in sorted(runs_dir.iterdir())
            if run.is_dir() and not run.name.startswith(".")]


def prune(out_dir: pathlib.Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` runs, never the latest; return the names deleted."""
    if keep < 1:
        raise ValueError("--keep must be at least 1")
    runs = list_runs(out_dir)
    doomed = [run for run in runs[:max(len(runs) - keep, 0)] if not run.latest]
    for run in doomed:
        retire(run.path)  # A half-deleted run never shows as a run.
    return [run.name for run in doomed]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def table(runs: list[Run]) -> str:
    """The runs for people, newest last, the latest marked with *."""
    lines = [f"  {'run':<28} {'seed':>5} {'float':>7} {'int8':>7} {'photos':>7} {'int8 MB':>8}  sha256"]
    for run in runs:
        size = "-" if run.int8_bytes is None else f"{run.int8_bytes / 1e6:.3f}"
        lines.append(f"{'*' if run.latest else ' '} {run.name:<28} {run.seed if run.seed is not None else '-':>5} "
                     f"{percent(run.float_accuracy):>7} {percent(run.int8_accuracy):>7} "
                     f"{percent(run.photo_accuracy):>7} {size:>8}  {(run.int8_sha256 or '-')[:12]}")
    return "\n".join(lines)


def bundle_folder(path: pathlib.Path) -> pathlib.Path:
    """The device bundle of a bundle folder, a run, OUT/latest or OUT, pinned to its real path so a
    build publishing meanwhile cannot mix two runs' files into one deploy."""
    path = pathlib.Path(path)
    if not (path / "manifest.json").is_file() and (path / "device").is_dir():
        path = path / "device"
    return path.resolve()


def models_folder(out_dir: pathlib.Path) -> pathlib.Path:
    """Where a finished build's models are read from: the latest run (resolved once), or OUT itself."""
    return latest_run(out_dir) or pathlib.Path(out_dir)
