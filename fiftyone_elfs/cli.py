"""The ``fiftyone-elfs`` command: make the plugin available to FiftyOne, open the App.

    fiftyone-elfs install-plugin [--plugins-dir DIR]
        links the installed plugin folder into FiftyOne's plugins directory
    fiftyone-elfs app DATASET [--port N] [--address HOST]
        installs the plugin if FiftyOne does not find it, then serves the App on DATASET

The plugin folder is the package's own ``fiftyone_elfs/plugin`` (``fiftyone.yml`` and the
``register`` entry point in ``__init__.py``), wherever pip put it: installing links it as
``<plugins dir>/fiftyone-elfs``, so upgrading the package upgrades the plugin and nothing is
copied. The plugins directory is ``--plugins-dir``, else FiftyOne's ``plugins_dir`` setting
(``FIFTYONE_PLUGINS_DIR``, default ``~/fiftyone/__plugins__``). Also ``python -m
fiftyone_elfs.cli``.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

PLUGIN_NAME = "@fiftyone-elfs/elfs"
LINK_NAME = "fiftyone-elfs"


def plugin_folder() -> str:
    """The installed plugin folder: the directory of ``fiftyone_elfs/plugin/fiftyone.yml``."""
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "plugin")


def default_plugins_dir() -> str:
    """FiftyOne's plugins directory (its setting, or the environment variable, or the default)."""
    if os.environ.get("FIFTYONE_PLUGINS_DIR"):
        return os.environ["FIFTYONE_PLUGINS_DIR"]
    import fiftyone as fo

    return fo.config.plugins_dir or os.path.join(os.path.expanduser("~"), "fiftyone", "__plugins__")


def install_plugin(plugins_dir: str | None = None) -> tuple[str, str]:
    """Links the plugin folder into `plugins_dir`; returns (link path, what was done).

    Idempotent. A link of the same name pointing elsewhere (an older checkout) is replaced; a
    real file or folder of that name is left alone and refused, naming it.
    """
    plugins_dir = os.path.abspath(os.path.expanduser(plugins_dir or default_plugins_dir()))
    source = plugin_folder()
    if not os.path.isfile(os.path.join(source, "fiftyone.yml")):
        raise SystemExit(f"error: {source} has no fiftyone.yml: reinstall fiftyone-elfs")
    link = os.path.join(plugins_dir, LINK_NAME)
    try:
        os.makedirs(plugins_dir, exist_ok=True)
    except OSError as e:
        raise SystemExit(_plugins_dir_error(plugins_dir, e)) from None
    if os.path.islink(link):
        if os.path.realpath(link) == source:
            return link, "already installed"
        action = f"replaced the link to {os.readlink(link)}"
        os.remove(link)
    elif os.path.exists(link):
        raise SystemExit(
            f"error: {link} exists and is not a link. Fix: remove it, then run "
            "`fiftyone-elfs install-plugin` again."
        )
    else:
        action = "installed"
    try:
        os.symlink(source, link, target_is_directory=True)
    except OSError as e:
        raise SystemExit(_plugins_dir_error(plugins_dir, e)) from None
    return link, action


def _plugins_dir_error(plugins_dir: str, error: OSError) -> str:
    """The one-line message for a plugins directory that cannot be made or written."""
    why = error.strerror or str(error)
    path = plugins_dir
    while path != os.path.dirname(path):  # the part of the path that is a file, if any
        if os.path.exists(path) and not os.path.isdir(path):
            why = "it is a file" if path == plugins_dir else f"{path} is a file"
            break
        path = os.path.dirname(path)
    return (
        f"error: cannot use {plugins_dir} as the plugins directory: {why}. Fix: pass "
        "--plugins-dir a folder you can write (it is created if missing), or set "
        "FIFTYONE_PLUGINS_DIR to one."
    )


def port_number(text: str) -> int:
    """An ``--port`` value: a TCP port, 1-65535 (checked before the App starts)."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number in 1-65535; got {text!r}. Fix: pass e.g. --port 5151, or "
            "leave it out for FiftyOne's default."
        )
    return port


def find_plugin() -> str | None:
    """The folder FiftyOne loads the ELFS plugin from, or None when it does not find it."""
    import fiftyone.plugins as fop

    for plugin in fop.list_plugins(enabled="all"):
        if plugin.name == PLUGIN_NAME:
            return plugin.directory
    return None


def ensure_plugin(plugins_dir: str | None = None) -> str:
    """Returns where FiftyOne finds the plugin, installing it first when it does not."""
    found = find_plugin()
    if found is not None:
        return found
    link, action = install_plugin(plugins_dir)
    print(f"ELFS plugin {action}: {link} -> {plugin_folder()}")
    return link


def app_address(address: str | None) -> str:
    """The address the App will be served on: `address`, else what ``fo.launch_app`` uses."""
    if address:
        return address
    import fiftyone as fo
    import fiftyone.core.context as focx
    import fiftyone.core.utils as fou

    if fou.is_container() or focx.is_databricks_context():
        return "0.0.0.0"
    return fo.config.default_app_address or "localhost"


def _bind_error(host: str, port: int) -> OSError | None:
    """Binds a TCP socket to (host, port) as the App's server does, then closes it; returns the
    error, or None when the server could bind there now.

    Like the server (hypercorn), SO_REUSEADDR is on where it only lets a port left in TIME_WAIT
    by a just-stopped App be reused (a listener still refuses); on Windows, where it would let
    a second listener in, the socket asks for the port exclusively instead.
    """
    host = host.replace("[", "").replace("]", "")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            if os.name == "nt":
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
            else:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as e:  # socket.gaierror (an unknown host name) included
        return e
    return None


def _serves_fiftyone(host: str, port: int) -> bool:
    """Whether a FiftyOne App server answers on (host, port), as ``fo.launch_app`` asks."""
    import json
    import urllib.request

    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host.strip("[]")
    host = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/fiftyone", timeout=2) as answer:
            return "version" in json.loads(answer.read())
    except Exception:  # not HTTP, not FiftyOne, not answering: not an App server
        return False


def check_app_port(port: int, address: str) -> None:
    """Refuses, in one line, a port the App's server could not bind on `address` (in use,
    privileged, or an address not of this machine), before anything is started: FiftyOne would
    otherwise print server tracebacks and retry for about a minute before failing."""
    error = _bind_error(address, port)
    if error is None:
        return
    in_use = error.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE))
    # FiftyOne pings an App at http://<address>:<port> unbracketed: not an IPv6 literal
    if in_use and ":" not in address.strip("[]") and _serves_fiftyone(address, port):
        print(
            f"A FiftyOne App already serves port {port}: connecting to it (it shows the ELFS "
            "panel if its plugins directory holds the plugin; else pass --port <another>)."
        )
        return  # FiftyOne's launch_app connects to a running App server of its own
    if in_use:
        spare = next(
            (p for p in range(port + 1, min(port + 50, 65536)) if not _bind_error(address, p)), None
        )
        example = f", e.g. --port {spare}" if spare is not None else ""
        raise SystemExit(
            f"error: port {port} is already in use on {address} (another FiftyOne App may be "
            f"running there). Fix: pass --port <another>{example}, or stop what uses port {port}."
        )
    if error.errno == errno.EACCES:
        raise SystemExit(
            f"error: not allowed to serve on port {port} of {address}: {error.strerror}. Fix: pass "
            "--port 1024 or above (e.g. leave it out for FiftyOne's default)."
        )
    why = error.strerror or str(error)
    raise SystemExit(
        f"error: cannot serve the App on {address}:{port}: {why}. Fix: pass --address localhost, "
        "or 0.0.0.0 to serve other machines."
    )


def open_app(dataset_name: str, port: int | None, address: str | None) -> None:
    """Serves the App on a dataset with the plugin available, until interrupted."""
    import fiftyone as fo

    if not fo.dataset_exists(dataset_name):
        raise SystemExit(
            f"error: no FiftyOne dataset named '{dataset_name}'. Existing: {fo.list_datasets()}"
        )
    # before the plugin is installed or the server started; the port stays free for the moment
    # until the server binds it (another program taking it in between is not guarded against)
    check_app_port(port or fo.config.default_app_port, app_address(address))
    where = ensure_plugin()
    print(f"ELFS plugin: {where}")
    kwargs = {k: v for k, v in (("port", port), ("address", address)) if v is not None}
    try:  # Ctrl+C while the server starts (it can take a while) is a stop too, not an error
        session = fo.launch_app(fo.load_dataset(dataset_name), auto=False, **kwargs)
    except KeyboardInterrupt:
        print("\nApp stopped.")
        return
    url = session.url.replace("//0.0.0.0:", "//localhost:")  # served on all interfaces
    print(f"Dataset '{dataset_name}' at {url}: the ELFS panel is under '+' beside Samples.")
    print("Press Ctrl+C to stop the App.")
    try:
        session.wait()
    except KeyboardInterrupt:  # the way to stop it, not an error: no traceback
        print("\nApp stopped.")


def build_parser() -> argparse.ArgumentParser:
    """The command line of `fiftyone-elfs` (its subcommands and their options)."""
    parser = argparse.ArgumentParser(
        prog="fiftyone-elfs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install = commands.add_parser("install-plugin", help="make the plugin available to FiftyOne")
    install.add_argument("--plugins-dir", help="default: FiftyOne's plugins_dir setting")
    app = commands.add_parser("app", help="open the App on a dataset, with the plugin")
    app.add_argument("dataset", help="the FiftyOne dataset's name")
    app.add_argument("--port", type=port_number, help="1-65535; default: FiftyOne's (5151)")
    app.add_argument("--address", help="default: localhost; 0.0.0.0 to serve other machines")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one `fiftyone-elfs` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "install-plugin":
        link, action = install_plugin(args.plugins_dir)
        print(f"ELFS plugin {action}: {link} -> {plugin_folder()}")
    else:
        open_app(args.dataset, args.port, args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
