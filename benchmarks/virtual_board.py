"""Boot times of the virtual board (emulation/virtual_board.py) on this machine, under qemu's TCG.

Usage (as root: the first run builds each image):
    sudo .venv/bin/python benchmarks/virtual_board.py                    # x86_64 and arm64, 3 boots each
    sudo .venv/bin/python benchmarks/virtual_board.py --arch arm64 --boots 1

For each architecture: how long its image took to build (image.json; built now if missing), then
--boots cold boots, each of a fresh overlay, timed to sshd's first answer and to `systemctl
is-system-running --wait`, and one `systemctl reboot` of the last, timed to sshd again. TCG shares
the CPUs with whatever else runs, so each line gives the machine's load average too.
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "emulation"))

import board_image  # noqa: E402
import board_qemu  # noqa: E402
import virtual_board  # noqa: E402


def load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def boot_once(arch: str, folder: pathlib.Path, reboot: bool) -> dict:
    with virtual_board.running(arch, folder) as board:
        ssh = board.boot_seconds
        board.ssh("systemctl is-system-running --wait", check=False, timeout=600)
        running = time.monotonic() - board.started
        figures = {"ssh": ssh, "running": running}
        if reboot:
            board.reboot()
            figures["reboot"] = board.boot_seconds
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=["all", *sorted(board_qemu.ARCHITECTURES)], default="all")
    parser.add_argument("--boots", type=int, default=3)
    arguments = parser.parse_args()
    arches = ["x86_64", "arm64"] if arguments.arch == "all" else [arguments.arch]
    for arch in arches:
        image = board_image.ensure_image(board_qemu.ARCHITECTURES[arch])
        print(f"{arch}: image built in {image.record['setup_seconds']:.0f} s (Debian {image.record['debian']}, "
              f"kernel {image.record['kernel']}, systemd {image.record['systemd']})", flush=True)
        results = []
        for number in range(arguments.boots):
            with tempfile.TemporaryDirectory(prefix="virtual-board-bench-") as folder:
                figures = boot_once(arch, pathlib.Path(folder), reboot=number == arguments.boots - 1)
            results.append(figures)
            reboot = f", reboot to sshd {figures['reboot']:.1f} s" if "reboot" in figures else ""
            print(f"{arch} boot {number + 1}: sshd {figures['ssh']:.1f} s, system running {figures['running']:.1f} s"
                  f"{reboot} (load {load()})", flush=True)
        print(f"{arch}: median sshd {statistics.median(r['ssh'] for r in results):.1f} s, median running "
              f"{statistics.median(r['running'] for r in results):.1f} s over {len(results)} boots", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
