"""`edge-fashion deploy TARGET --service`: run `classify.py --serve --camera` on the board as a systemd
service that restarts on failure and starts at boot.

The unit is written here with two placeholders, @DIRECTORY@ (the bundle's folder, absolute) and
@WANTED_BY@, which the agent fills on the board: only it knows the absolute path and whether it
runs as root (a system unit in /etc/systemd/system) or as a user (a user unit in
~/.config/systemd/user, with lingering enabled so it starts at boot without a login).
"""

import typing

from edge_fashion.deploy import transport

UNIT_NAME = "edge-fashion.service"
DEFAULT_PORT = 8080
LISTEN_HOST = "0.0.0.0"  # A board has no screen: the page is for other machines, so a token guards it.
HEALTH_SECONDS = 60  # How long the first /healthz may take: the camera starts, the first frame comes.

# ExecStart runs classify.py from DIR/current/ when deploys keep releases there (DIR/releases/<sha>/),
# else from DIR/; the venv is the bundle's own, else DIR's, else python3. `$$` is a literal `$` for
# systemd. The token and the captures stay in DIR, so they survive a new release.
UNIT_TEMPLATE = """\
[Unit]
Description=edge-fashion: classify camera frames and serve the live page on port {port}
Documentation=file://@DIRECTORY@/README.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
WorkingDirectory=@DIRECTORY@
ExecStart=/bin/sh -c 'bundle=@DIRECTORY@; if [ -d "$$bundle/current" ]; then bundle="$$bundle/current"; fi; \
python=python3; for candidate in "$$bundle/.venv/bin/python" @DIRECTORY@/.venv/bin/python; do \
if [ -x "$$candidate" ]; then python="$$candidate"; break; fi; done; \
exec "$$python" "$$bundle/classify.py" --serve --camera --host {host} --port {port} \
--token-file @DIRECTORY@/serve-token --captures @DIRECTORY@/captures'
Restart=on-failure
RestartSec=5
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=@WANTED_BY@
"""


def unit_template(port: int = DEFAULT_PORT, host: str = LISTEN_HOST) -> str:
    """The unit, its folder and target still to be filled in by the agent on the board."""
    return UNIT_TEMPLATE.format(port=port, host=host)


def board_address(target: transport.Target) -> str:
    """The name to put in the URL: the ssh host without its user, or localhost for a folder."""
    if target.host is None:
        return "localhost"
    host = target.host.rsplit("@", 1)[-1]
    return f"[{host}]" if ":" in host else host


def check_target(target: transport.Target) -> None:
    """Raise DeployError, before anything is copied, unless the target can run the service: a board
    over ssh, running systemd, its folder a path a unit can hold."""
    if target.host is None:
        raise transport.DeployError(
            f"--service runs the service on a board over ssh, and {target} is a folder: deploy it without "
            "--service, or give the board as [user@]host:DIR")
    transport.call_agent(target, "service-check", [])


def install(target: transport.Target, port: int, progress: typing.Callable[[str], None]) -> str:
    """Install, enable and (re)start the unit on the target; return the page's URL, token included."""
    progress(f"installing {UNIT_NAME} on {target} (classify.py --serve --camera on port {port})")
    answer = transport.call_agent(target, "service", [], unit_template(port).encode())
    progress(f"{answer['scope']} unit {answer['unit']}: enabled at boot, restarted on failure, "
             f"{'running' if answer['active'] else 'NOT running: see ' + answer['journal']}")
    if answer.get("warning"):
        progress(f"warning: {answer['warning']}")
    url = f"http://{board_address(target)}:{port}/?token={answer['token']}"
    progress(f"live page: {url}")
    return url


def check_health(target: transport.Target, port: int, progress: typing.Callable[[str], None]) -> dict:
    """Ask the service's /healthz on the board itself; DeployError unless it answers 200 in time."""
    answer = transport.call_agent(target, "health", [str(port), str(HEALTH_SECONDS)])
    if not answer["healthy"]:
        raise transport.DeployError(f"{UNIT_NAME} on {target} is not healthy: {answer['reason']} "
                                    f"(see {answer['journal']})")
    health = answer["health"]
    progress(f"/healthz: {health['status']}, {health['frames']} frames, {health['errors']} errors, "
             f"{health['runtime']}")
    return health
