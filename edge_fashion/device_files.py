"""The board's files as the host sees them: where they are, which a bundle carries, and the board's
own package loaded for the host's use, so that host and board share one preprocessing, never a copy."""

import importlib
import importlib.util
import pathlib
import sys

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
# An installed wheel holds device/ as edge_fashion/device (pyproject.toml maps it); a checkout, and
# so an editable install, has it beside the package. The installed place is tried first: a
# site-packages/device/ may belong to someone else.
INSTALLED_DIR, CHECKOUT_DIR = PACKAGE_DIR / "device", PACKAGE_DIR.parent / "device"
DEVICE_DIR = INSTALLED_DIR if INSTALLED_DIR.is_dir() else CHECKOUT_DIR
BOARD_PACKAGE = "fashion_board"  # device/fashion_board/: the code classify.py runs.
TOP_FILES = ("classify.py", "requirements.txt", "README.md")  # Copied as they are from device/.
HOST_NAME = "edge_fashion._board"  # The name the board package gets inside this process.


def bundle_files() -> list[str]:
    """The device files a bundle carries, as paths relative to device/ ('fashion_board/preprocess.py')."""
    package = sorted(path.relative_to(DEVICE_DIR).as_posix()
                     for path in (DEVICE_DIR / BOARD_PACKAGE).glob("*.py"))
    names = [*TOP_FILES, *package]
    missing = [name for name in names if not (DEVICE_DIR / name).is_file()]
    if missing or not package:
        raise ValueError(f"{DEVICE_DIR} lacks {', '.join(missing) or BOARD_PACKAGE + '/'}: "
                         "the package's device files are incomplete")
    return names


def board_module(name: str):
    """A module of the board package ('preprocess', 'runtimes', ...), loaded from device/ itself."""
    if HOST_NAME not in sys.modules:
        init = DEVICE_DIR / BOARD_PACKAGE / "__init__.py"
        spec = importlib.util.spec_from_file_location(HOST_NAME, init, submodule_search_locations=[str(init.parent)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[HOST_NAME] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{HOST_NAME}.{name}")
