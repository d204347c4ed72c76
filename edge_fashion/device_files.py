"""The board's files as the host sees them: where they are and which a bundle carries.

The board's own package, `fashion_board` (device/fashion_board/), is installed beside edge_fashion
as a package of its own, so the host imports it by name (`from fashion_board import preprocess`)
and runs the board's very code, never a copy. classify.py, requirements.txt and the board's README
come with it as the package data `edge_fashion/device/`.
"""

import pathlib

import fashion_board

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
# An installed wheel holds device/'s top files as edge_fashion/device (pyproject.toml maps it); a
# checkout, and so an editable install, has them beside the package. The installed place is tried
# first: a site-packages/device/ may belong to someone else.
INSTALLED_DIR, CHECKOUT_DIR = PACKAGE_DIR / "device", PACKAGE_DIR.parent / "device"
DEVICE_DIR = INSTALLED_DIR if INSTALLED_DIR.is_dir() else CHECKOUT_DIR
BOARD_DIR = pathlib.Path(fashion_board.__file__).resolve().parent  # The board package's own folder.
TOP_FILES = ("classify.py", "requirements.txt", "README.md")  # Copied as they are from DEVICE_DIR.


def bundle_files() -> dict[str, pathlib.Path]:
    """{name in the bundle: where it is here} for the files a bundle carries, names relative to the
    bundle ('classify.py', 'fashion_board/preprocess.py')."""
    files = {name: DEVICE_DIR / name for name in TOP_FILES}
    files.update({f"{BOARD_DIR.name}/{path.name}": path for path in sorted(BOARD_DIR.glob("*.py"))})
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ValueError(f"the package's device files are incomplete: {', '.join(missing)} not found")
    return files
