"""The app in a browser: ``guidance-tui serve [TRACE | SCRIPT]`` through textual-serve.

textual-serve runs a command per browser tab (a new process each time) with
Textual's web driver, and relays its screen and keys over a websocket.  The
command is this same Python (``sys.executable``) running
``guidance_tui.export.served`` with the same arguments as the terminal
command: ``replay TRACE``, ``run SCRIPT`` or nothing (the run browser).

textual-serve has no authentication: whoever reaches the port gets the app
(and with a script, runs it).  So it binds to loopback unless told otherwise;
another address needs ``public=True``, and then a warning is printed.

This module never imports Textual (the served processes do).
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
PUBLIC_HOST = "0.0.0.0"


class ServeError(Exception):
    """A problem with what to serve or where; ``usage`` is true for a bad command line."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    h = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(h).is_unspecified
    except ValueError:
        return False


def check_host(host: str | None, public: bool) -> str:
    """The address to bind: loopback by default; any other needs ``public`` (``--public`` alone: all)."""
    if host is None:
        return PUBLIC_HOST if public else DEFAULT_HOST
    if not host.strip():
        raise ServeError("--host needs an address", usage=True)
    if not is_loopback(host) and not public:
        raise ServeError(f"--host {host} is not a loopback address, and textual-serve has no authentication "
                         f"(anyone who reaches it gets the app); add --public to serve it there anyway",
                         usage=True)
    return host


def public_warning(host: str, port: int) -> str:
    where = "every network interface" if is_wildcard(host) else host
    return (f"warning: serving on {where} (port {port}) with no authentication: anyone who can reach it "
            f"gets the app, and with a script runs it")


def free_port(host: str = DEFAULT_HOST) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    """A one-line error now, rather than a traceback from the server, when the port cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, family if ":" in host else socket.AF_UNSPEC,
                                   socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on {host}: {e.strerror or e}", usage=True) from None
    fam, _, _, _, addr = infos[0]
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


@dataclass
class Target:
    """What the served app opens: ``replay`` a trace, ``run`` a script, or the run browser (``runs``)."""

    command: str  # replay | run | runs
    path: Path | None = None

    @property
    def argv(self) -> list[str]:
        return [self.command] + ([str(self.path)] if self.path is not None else [])

    @property
    def title(self) -> str:
        return f"guidance-tui {self.command}" + (f" {self.path.name}" if self.path is not None else "")


def _is_trace(path: Path) -> bool:
    from tracing.fileformat import MAGIC

    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def resolve_target(target: str | None) -> Target:
    """A trace file is replayed, a Python script is run, nothing opens the run browser."""
    if target is None or target == "":
        return Target("runs")
    path = Path(target).expanduser()
    if not path.exists():
        raise ServeError(f"{target}: no such file", usage=True)
    if path.is_dir():
        raise ServeError(f"{target}: is a directory (serve a trace file or a script)", usage=True)
    path = path.resolve()
    if _is_trace(path):
        return Target("replay", path)
    if path.suffix == ".py":
        return Target("run", path)
    raise ServeError(f"{target}: neither a trace file nor a Python script", usage=True)


def app_command(target: Target, extra: list[str] = ()) -> str:
    """The shell command textual-serve runs for each browser tab."""
    argv = [sys.executable, "-m", "guidance_tui.export.served", *target.argv, *extra]
    return " ".join(shlex.quote(a) for a in argv)


def public_url_for(host: str, port: int) -> str:
    """The address the page tells the browser to open its websocket on."""
    if is_wildcard(host):
        name = socket.gethostname() or "localhost"
    else:
        name = host.strip("[]")
        if ":" in name:
            name = f"[{name}]"
    return f"http://{name}:{port}"


def serve(command: str, host: str, port: int, *, title: str, public_url: str | None = None) -> None:
    """Serve until interrupted (Ctrl+C or SIGTERM)."""
    try:
        from textual_serve.server import Server
    except ImportError:
        raise ServeError("serve needs the textual-serve package (pip install textual-serve)") from None
    Server(command, host=host.strip("[]"), port=port, title=title,
           public_url=public_url or public_url_for(host, port)).serve()

