"""Shared fixtures: tests stay away from the user's folders; one real short build serves many tests."""

import contextlib
import os
import pathlib
import subprocess

import pytest
from click.testing import CliRunner

from edge_fashion import cli

REPO = pathlib.Path(__file__).resolve().parent.parent
SYSTEM_DATA = pathlib.Path("/usr/share/datasets/fashion-mnist")
# A real build, small: 3,000 training images, 2 epochs (about 10 s on 2 cores); Fashion-MNIST alone, so
# that the many builds of the suite do not each read the stock photos (tests/test_build.py has a build
# with them).
TINY_BUILD_ARGS = ["--preset", "fashion-mnist", "--epochs", "2", "--train-limit", "3000", "--seed", "7"]
# What `convert` takes of those: its calibration images come from the images the model trained on.
TINY_CONVERT_ARGS = ["--train-limit", "3000", "--seed", "7"]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real ~/.keras or ~/.ssh; the data comes from Debian's package."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("EDGE_FASHION_DATA", os.environ.get("EDGE_FASHION_DATA", str(SYSTEM_DATA)))
    return home


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    folder = pathlib.Path(os.environ.get("EDGE_FASHION_DATA", SYSTEM_DATA))
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not in {folder}: sudo apt-get install dataset-fashion-mnist")
    return folder


def run_cli(*args: str, expect_exit: int = 0):
    """Run `edge-fashion ARGS` in-process; check its exit code; return the click Result."""
    result = CliRunner().invoke(cli.cli, list(args), catch_exceptions=False)
    assert result.exit_code == expect_exit, result.output
    return result


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, data_dir) -> pathlib.Path:
    """A real build folder (model.keras, both TFLite models, report, device/) made once per session."""
    out = tmp_path_factory.mktemp("tiny_build") / "build"
    run_cli("build", *TINY_BUILD_ARGS, "--data-dir", str(data_dir), "--out", str(out))
    return out


@pytest.fixture(scope="session")
def device_python() -> pathlib.Path:
    """The python of a venv holding only what a board holds: tflite-runtime 2.14, numpy<2, Pillow."""
    import device_venv

    return device_venv.ensure_device_venv(REPO)


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """A real OpenSSH server on loopback (tests/sshd.py), one per test module."""
    import sshd

    if not sshd.SSHD.exists():
        pytest.skip("no /usr/sbin/sshd: apt-get install openssh-server openssh-client")
    with sshd.running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@contextlib.contextmanager
def small_tmpfs(folder: pathlib.Path, size: str):
    """A tmpfs of `size` (mount's spelling: 64k, 4m) mounted at `folder`, for tests of a full disk;
    the test is skipped where mounting needs a root this run lacks."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
