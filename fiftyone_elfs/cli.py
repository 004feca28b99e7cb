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
import os
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


def open_app(dataset_name: str, port: int | None, address: str | None) -> None:
    """Serves the App on a dataset with the plugin available, until interrupted."""
    import fiftyone as fo

    if not fo.dataset_exists(dataset_name):
        raise SystemExit(
            f"error: no FiftyOne dataset named '{dataset_name}'. Existing: {fo.list_datasets()}"
        )
    where = ensure_plugin()
    print(f"ELFS plugin: {where}")
    kwargs = {k: v for k, v in (("port", port), ("address", address)) if v is not None}
    session = fo.launch_app(fo.load_dataset(dataset_name), auto=False, **kwargs)
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
