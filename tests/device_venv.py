"""A cached venv that holds only what a Raspberry Pi OS Bookworm board holds, for running classify.py.

Bookworm ships Python 3.11, numpy 1.24.2 and Pillow 9.4.0; the board adds tflite-runtime 2.14.0 (see
device/requirements.txt). The tests run device/classify.py with this venv's python, as a subprocess,
so nothing from the host's TensorFlow or newer numpy can leak in.
"""

import fcntl
import pathlib
import shutil
import subprocess
import sys

REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy==1.24.2", "pillow==9.4.0")
CHECK = "import tflite_runtime.interpreter, numpy, PIL.Image; print(numpy.__version__, PIL.__version__)"
PYTHON_NAMES = ("python3.11", "python3.10", "python3.9")  # tflite-runtime 2.14 has wheels up to 3.11.


def base_python() -> str:
    """A Python for which tflite-runtime 2.14 has wheels: this one if it is 3.9-3.11, else one on PATH."""
    if (3, 9) <= sys.version_info[:2] <= (3, 11):
        return sys.executable
    for name in PYTHON_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("the device venv needs Python 3.9-3.11 (tflite-runtime 2.14 has no newer wheels)")


def is_ready(venv: pathlib.Path) -> bool:
    """True when the venv was finished for these requirements and its imports still work."""
    marker = venv / "ready"
    python = venv / "bin" / "python"
    if not marker.is_file() or marker.read_text() != "\n".join(REQUIREMENTS) or not python.exists():
        return False
    return subprocess.run([str(python), "-c", CHECK], capture_output=True, check=False).returncode == 0


def build(venv: pathlib.Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([base_python(), "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
                   check=True)
    (venv / "ready").write_text("\n".join(REQUIREMENTS))


def ensure_device_venv(root: pathlib.Path) -> pathlib.Path:
    """The python of `<root>/.cache/device-venv`, built once; safe when several processes ask at once."""
    cache = pathlib.Path(root) / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / "device-venv"
    with open(cache / "device-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes, also if this process dies.
        if not is_ready(venv):
            build(venv)
    return venv / "bin" / "python"


if __name__ == "__main__":
    print(ensure_device_venv(pathlib.Path(__file__).resolve().parent.parent))
