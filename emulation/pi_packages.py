"""The Python packages an emulated board gets from a bundle's requirements.txt, picked as pip on it would.

On the board, `python3 -m venv --system-site-packages venv && venv/bin/pip install -r requirements.txt`
keeps what Debian's python3-numpy and python3-pil already satisfy and installs the rest from PyPI,
with their dependencies. This module does the same from the host, without running pip under
emulation (slow, and pip evaluates markers for the machine it runs on): it evaluates each marker
for the guest's Python version and machine, reads Debian's versions from the userland's
dist-packages, and fetches each missing wheel for the guest's platform with `pip download --no-deps`,
following the wheels' own dependencies level by level. Errors are ValueError, with one line that
says which requirement could not be met.
"""

import email.parser
import functools
import importlib.metadata
import operator
import pathlib
import subprocess
import sys
import tempfile
import zipfile

try:
    from packaging import requirements, utils
except ImportError:  # The host's python3 may lack it; a venv's python (pip's dependency) has it.
    sys.exit("emulate-pi: error: the Python module 'packaging' is missing: apt-get install python3-packaging, "
             "or run this with a venv's python")

OLDEST_GLIBC_MINOR = 17  # manylinux2014 is manylinux_2_17: PyPI's oldest Arm wheels.
DEBIAN_SITE = "usr/lib/python3/dist-packages"  # Where Debian's python3-* packages put modules.


def guest_environment(python_version: str, machine: str) -> dict:
    """The marker variables of CPython python_version ('3.13.5') on Linux on machine ('aarch64')."""
    return {"python_version": ".".join(python_version.split(".")[:2]), "python_full_version": python_version,
            "implementation_version": python_version, "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "platform_machine": machine,
            "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix",
            "platform_release": "", "platform_version": "", "extra": ""}


def applicable(text: str, environment: dict) -> list:
    """The requirements of a requirements.txt whose markers hold in environment."""
    chosen = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = requirements.Requirement(line)
        except requirements.InvalidRequirement as error:
            raise ValueError(f"requirements.txt: cannot read {line!r} ({error})") from None
        if requirement.extras or requirement.url:
            raise ValueError(f"requirements.txt: {line!r}: extras and URLs are not followed here")
        if requirement.marker is None or requirement.marker.evaluate(environment):
            chosen.append(requirement)
    return chosen


def debian_versions(root: pathlib.Path) -> dict:
    """{canonical name: Version} of the Python distributions Debian installed in the userland."""
    found = importlib.metadata.distributions(path=[str(root / DEBIAN_SITE)])
    return {utils.canonicalize_name(each.metadata["Name"]): utils.Version(each.version) for each in found}


def platform_tags(machine: str, glibc_minor: int) -> list:
    """Every manylinux tag a pip on a board with glibc 2.glibc_minor accepts, newest first.

    pip download --platform takes a tag literally, so each older glibc's tag is named too.
    """
    return [f"manylinux_2_{minor}_{machine}" for minor in range(glibc_minor, OLDEST_GLIBC_MINOR - 1, -1)]


def download(wanted: list, folder: pathlib.Path, python_version: str, machine: str, glibc_minor: int) -> list:
    """Fetch one wheel per requirement (not its dependencies) for the guest; return the wheel paths."""
    platforms = [word for tag in platform_tags(machine, glibc_minor) for word in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", *platforms, "--implementation", "cp",
               "--python-version", guest_environment(python_version, machine)["python_version"],
               "--dest", str(folder), *map(str, wanted)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise ValueError(f"no wheel on PyPI for Python {python_version} on {machine} meets "
                         f"{', '.join(map(str, wanted))}: {' '.join(errors)[-400:]}")
    return sorted(folder.glob("*.whl"))


def dependencies(wheel: pathlib.Path, environment: dict) -> list:
    """The Requires-Dist entries of a wheel that apply in environment (no extras asked for)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))
    entries = [requirements.Requirement(line) for line in metadata.get_all("Requires-Dist") or []]
    return [entry for entry in entries if entry.marker is None or entry.marker.evaluate(environment)]


def merged(group: list):
    """One requirement holding every specifier that several requirements put on one project."""
    specifier = functools.reduce(operator.and_, (requirement.specifier for requirement in group))
    return requirements.Requirement(f"{group[0].name}{specifier}")


def unmet(pending: list, chosen: dict, provided: dict) -> list:
    """The pending requirements that neither a chosen wheel nor Debian meets, one per project."""
    groups = {}
    for requirement in pending:
        name = utils.canonicalize_name(requirement.name)
        have = chosen[name][0] if name in chosen else provided.get(name)
        if have is not None and requirement.specifier.contains(have, prereleases=True):
            continue
        if name in chosen:
            raise ValueError(f"{requirement} conflicts with {name} {have}, which another package needs")
        groups.setdefault(name, []).append(requirement)
    return [merged(group) for group in groups.values()]


def resolve(wanted: list, provided: dict, environment: dict, fetch, scratch: pathlib.Path) -> list:
    """The wheels to install so that every requirement, and every dependency of theirs, is met.

    provided: {canonical name: Version} already there (Debian's). fetch(requirements, folder) downloads
    one wheel per requirement into folder and returns their paths; each level gets a folder in scratch.
    """
    chosen, pending = {}, list(wanted)
    for level in range(20):
        missing = unmet(pending, chosen, provided)
        if not missing:
            return sorted(wheel for _, wheel in chosen.values())
        folder = scratch / f"level-{level}"
        folder.mkdir()
        pending = []
        for wheel in fetch(missing, folder):
            name, wheel_version, _, _ = utils.parse_wheel_filename(wheel.name)
            chosen[name] = (wheel_version, wheel)
            pending.extend(dependencies(wheel, environment))
    raise ValueError("dependencies still unmet after 20 levels: a dependency cycle?")


def install(text: str, root: pathlib.Path, target: pathlib.Path, python_version: str, machine: str,
            glibc_minor: int) -> dict:
    """Unpack into target the wheels requirements.txt (text) adds to the userland root; return a record."""
    environment = guest_environment(python_version, machine)
    wanted, provided = applicable(text, environment), debian_versions(root)

    def fetch(missing: list, folder: pathlib.Path) -> list:
        return download(missing, folder, python_version, machine, glibc_minor)

    with tempfile.TemporaryDirectory(prefix="pi-packages-") as scratch:
        wheels = resolve(wanted, provided, environment, fetch, pathlib.Path(scratch))
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target)
    fetched = {utils.parse_wheel_filename(wheel.name)[0] for wheel in wheels}
    names = sorted({utils.canonicalize_name(requirement.name) for requirement in wanted} - fetched)
    return {"requirements": [str(requirement) for requirement in wanted],
            "wheels": [wheel.name for wheel in wheels],
            "from_debian": [f"{name} {provided[name]}" for name in names if name in provided]}
