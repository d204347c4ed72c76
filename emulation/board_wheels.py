"""The wheels a virtual board's pip takes for a requirements.txt, fetched on this machine.

The board reaches no network, so its pip installs from a folder (/etc/pip.conf: no-index,
find-links). The folder holds what pip on a real trixie board would download from PyPI: the
requirements whose markers hold for the board's Python and machine, less what Debian's numpy and
Pillow (seen through a venv made with --system-site-packages) already meet, with their
dependencies, picked by pi_packages.resolve as for the emulated Pi userlands. Each set is cached
in .cache/virtual-board/wheels/<arch>-<sha256 of the text>/.
"""

import hashlib
import pathlib
import shutil
import tempfile

import board_image
import pi_packages
import pi_userland
from packaging import utils

GLIBC_MINOR = 41  # trixie's glibc is 2.41.


def ensure_wheels(image: board_image.Image, requirements_text: str) -> pathlib.Path:
    """The folder of wheels for requirements_text on the image's board, downloaded once."""
    key = hashlib.sha256(f"{GLIBC_MINOR}\n{requirements_text}".encode()).hexdigest()[:12]
    cache = board_image.cache_folder() / "wheels"
    folder = cache / f"{image.arch.name}-{key}"
    if (folder / "done").is_file():
        return folder
    with pi_userland.locked(cache, folder.name):
        if (folder / "done").is_file():
            return folder
        pi_userland.host_python_check()
        environment = pi_packages.guest_environment(image.record["python"], image.arch.machine_name)
        provided = {utils.canonicalize_name(name): utils.Version(image.record[name]) for name in ("numpy", "pillow")}

        def fetch(missing: list, destination: pathlib.Path) -> list:
            return pi_packages.download(missing, destination, image.record["python"], image.arch.machine_name,
                                        GLIBC_MINOR)

        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        with tempfile.TemporaryDirectory(prefix="board-wheels-") as scratch:
            wanted = pi_packages.applicable(requirements_text, environment)
            for wheel in pi_packages.resolve(wanted, provided, environment, fetch, pathlib.Path(scratch)):
                shutil.copy2(wheel, partial / wheel.name)
        (partial / "done").write_text("")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return folder
