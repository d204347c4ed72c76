"""edge-fashion as a user installs it: the wheel carries the device files, a fresh venv holding only
that wheel (not the checkout) runs a short build, and a build with a missing input fails at once."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import click
import matplotlib
import pytest

from conftest import REPO
from edge_fashion import device_files

# The wheel's own package is installed without dependencies: TensorFlow and the rest come from this
# venv's site-packages through a .pth line, which appends them after the fresh venv's own
# site-packages (so the wheel wins) and runs none of this venv's .pth files (so not its editable
# install of the checkout).
# The folders the dependencies are installed in (this venv's site-packages, or those it borrows from).
SHARED_SITES = sorted({str(pathlib.Path(module.__file__).resolve().parents[1]) for module in (click, matplotlib)})
SOURCES = ("edge_fashion", "device")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
SHORT_BUILD = ["build", "--preset", "fast", "--epochs", "1", "--train-limit", "500", "--seed", "3"]
# Runs the CLI and says whether TensorFlow was imported before the command failed.
CHECK_ONLY = """
import sys
from edge_fashion import cli
try:
    cli.cli.main(sys.argv[1:], standalone_mode=False)
except Exception as error:
    print(f"{type(error).__name__}: {error}")
print("tensorflow imported:", "tensorflow" in sys.modules)
"""


def clean_env(home: pathlib.Path) -> dict:
    """No PYTHONPATH: it would put the checkout's edge_fashion before the installed one."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return env | {"HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The sdist and the wheel, built (as `python -m build` does: the wheel from the sdist) from a copy
    of the checkout's sources, so nothing ignored or generated in the checkout can slip in."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    for name in SOURCES:
        shutil.copytree(REPO / name, source / name, ignore=SKIPPED)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    return {"wheel": next((root / "dist").glob("*.whl")), "sdist": next((root / "dist").glob("*.tar.gz")),
            "source": source}


def fresh_venv(folder: pathlib.Path) -> pathlib.Path:
    """A venv without pip whose site-packages borrows this venv's (see SHARED_SITES)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    (installed_site(folder) / "shared_dependencies.pth").write_text("".join(site + "\n" for site in SHARED_SITES))
    return folder


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> pathlib.Path:
    """A fresh venv with the wheel installed (not editable) and the heavy dependencies borrowed."""
    folder = fresh_venv(tmp_path_factory.mktemp("venv") / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(folder / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(built["wheel"])], check=True, capture_output=True, timeout=300)
    return folder


def installed_site(venv: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])


def wheel_name(name: str) -> str:
    """Where a bundle file ('classify.py', 'fashion_board/preprocess.py') lies in the wheel."""
    return name if name.startswith("fashion_board/") else f"edge_fashion/device/{name}"


def test_the_wheel_carries_every_module_and_the_device_files(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    for path in (REPO / "edge_fashion").rglob("*.py"):
        assert path.relative_to(REPO).as_posix() in names, f"{path} is not in the wheel: list its package in pyproject.toml"
    for name in device_files.bundle_files():
        assert wheel_name(name) in names, name
    assert "edge_fashion/py.typed" in names
    sdist = subprocess.run(["tar", "-tzf", str(built["sdist"])], capture_output=True, text=True, check=True).stdout
    assert all(f"/device/{name}" in sdist for name in device_files.bundle_files())


def test_the_wheel_carries_only_what_a_user_runs_and_its_licence(built):
    wheel = zipfile.ZipFile(built["wheel"])
    tops = {name.split("/")[0] for name in wheel.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"edge_fashion", "fashion_board"}, tops
    assert not [name for name in wheel.namelist() if "emulat" in name or name.startswith("edge_fashion/device/pi_")]
    metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    text = wheel.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text and "Classifier: Typing :: Typed" in text
    import edge_fashion
    assert f"Version: {edge_fashion.__version__}" in text
    licence = next(name for name in wheel.namelist() if ".dist-info/" in name and name.endswith("/LICENSE"))
    assert "Apache License" in wheel.read(licence).decode()


def test_the_wheel_carries_the_stock_photos_their_readme_and_licence(built):
    wheel = zipfile.ZipFile(built["wheel"])
    names = set(wheel.namelist())
    stock = REPO / "edge_fashion" / "stock_photos"
    files = [path.relative_to(REPO).as_posix() for path in stock.rglob("*") if path.is_file()]
    assert len(files) > 2000 and not [name for name in files if name not in names]
    assert "CC0 1.0 Universal" in wheel.read("edge_fashion/stock_photos/LICENSE").decode()
    assert "clothing-dataset" in wheel.read("edge_fashion/stock_photos/README.md").decode()
    assert sum(wheel.getinfo(name).compress_size for name in files) < 15e6


def test_the_installed_wheel_not_the_checkout_is_what_runs(venv, tmp_path):
    script = ("import edge_fashion, edge_fashion.device_files as files; from fashion_board import preprocess; "
              "print(edge_fashion.__file__); print(files.DEVICE_DIR); print(preprocess.__file__)")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env=clean_env(tmp_path), check=True, timeout=60)
    package, device, preprocess = map(pathlib.Path, result.stdout.split())
    site = installed_site(venv).resolve()
    assert package.resolve().is_relative_to(site), package
    assert device.resolve() == site / "edge_fashion" / "device"
    assert preprocess.resolve() == site / "fashion_board" / "preprocess.py"


def test_an_editable_install_reads_device_files_in_place(built, tmp_path):
    """What `make setup` does (pip install -e): device/ is read where it is, not copied."""
    venv = fresh_venv(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-build-isolation", "--no-index", "-e", str(built["source"])],
                   check=True, capture_output=True, timeout=300)
    script = ("import edge_fashion.device_files as files; print(files.DEVICE_DIR); print(files.BOARD_DIR); "
              "print(len(files.bundle_files()))")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, env=clean_env(tmp_path), check=True, timeout=60)
    device, board, count = result.stdout.split()
    assert pathlib.Path(device) == built["source"] / "device" and int(count) == len(device_files.bundle_files())
    assert pathlib.Path(board) == built["source"] / "device" / "fashion_board"


def test_a_short_build_from_the_wheel_writes_a_complete_bundle(venv, tmp_path, data_dir, device_python):
    out = tmp_path / "out"
    result = subprocess.run([str(venv / "bin" / "edge-fashion"), *SHORT_BUILD, "--data-dir", str(data_dir),
                             "--out", str(out)], capture_output=True, text=True, cwd=tmp_path,
                            env=clean_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int8 test accuracy" in result.stdout
    # It trained on the stock photos the wheel carries.
    stock = len(list((REPO / "edge_fashion" / "stock_photos").glob("*/*.jpg")))
    assert json.loads((out / "report.json").read_text())["photos"]["training"]["stock"] == stock
    for name in device_files.bundle_files():
        assert (out / "device" / name).read_bytes() == (REPO / "device" / name).read_bytes(), name
    assert (out / "device" / "fashion_board" / "preprocess.py").is_file()
    test = subprocess.run([str(device_python), str(out / "device" / "classify.py"), "--self-test"],
                          capture_output=True, text=True, timeout=120)
    assert test.returncode == 0 and "PASS" in test.stdout, test.stdout + test.stderr


def check_only(venv: pathlib.Path, cwd: pathlib.Path, *args: str) -> list:
    """[error line, 'tensorflow imported: ...'] of `edge-fashion ARGS` in the installed venv."""
    result = subprocess.run([str(venv / "bin" / "python"), "-c", CHECK_ONLY, *args], capture_output=True, text=True,
                            cwd=cwd, env=clean_env(cwd), timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout.splitlines()


def data_copy(folder: pathlib.Path, data_dir: pathlib.Path, broken: str | None, missing: str | None) -> pathlib.Path:
    """Links to the four real files, one of them replaced by a non-gzip file or left out."""
    folder.mkdir()
    for path in sorted(data_dir.glob("*-ubyte.gz")):
        if path.name == broken:
            (folder / path.name).write_bytes(b"not gzip at all")
        elif path.name != missing:
            (folder / path.name).symlink_to(path)
    return folder


@pytest.mark.parametrize("case", ["no data folder", "a data file missing", "a data file not gzip",
                                  "output inside a file"])
def test_a_missing_input_fails_before_tensorflow_loads(case, venv, tmp_path, data_dir):
    data, out = data_dir, tmp_path / "out"
    if case == "no data folder":
        data = tmp_path / "nowhere"
    elif case == "a data file missing":
        data = data_copy(tmp_path / "data", data_dir, None, "t10k-labels-idx1-ubyte.gz")
    elif case == "a data file not gzip":
        data = data_copy(tmp_path / "data", data_dir, "train-labels-idx1-ubyte.gz", None)
    else:
        (tmp_path / "file").write_text("in the way")
        out = tmp_path / "file" / "out"  # (An --out that is a file is refused by click itself.)
    error, loaded = check_only(venv, tmp_path, *SHORT_BUILD, "--data-dir", str(data), "--out", str(out))
    expected = {"no data folder": "nowhere: missing", "a data file missing": "missing t10k-labels-idx1-ubyte.gz",
                "a data file not gzip": "train-labels-idx1-ubyte.gz: not a readable gzip file",
                "output inside a file": "is not a folder"}[case]
    assert error.startswith("ClickException: ") and expected in error, error
    assert loaded == "tensorflow imported: False"
    assert not out.is_dir()


def test_missing_device_files_fail_before_tensorflow_loads(venv, tmp_path, data_dir):
    installed = installed_site(venv) / "edge_fashion" / "device" / "classify.py"
    kept = installed.read_bytes()
    installed.unlink()
    try:
        lines = check_only(venv, tmp_path, *SHORT_BUILD, "--data-dir", str(data_dir), "--out", str(tmp_path / "out"))
    finally:
        installed.write_bytes(kept)
    assert len(lines) == 2, lines
    error, loaded = lines
    assert "device/classify.py not found" in error and "device files are incomplete" in error, error
    assert loaded == "tensorflow imported: False"
