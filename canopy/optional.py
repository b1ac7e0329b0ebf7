"""Optional parts (libvirt-python, …): imported only where they are used, with a one-line error naming
what to install when they are missing.

    libvirt = require("libvirt", install="pip install 'canopy[libvirt]' (libvirt-python; needs libvirt-dev)")
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(RuntimeError):
    """An optional part this command needs is not installed; the message says what to install."""


def require(module: str, *, install: str, needed_for: str = "") -> ModuleType:
    """Import `module`, or raise MissingDependency naming what to install (and what needed it)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module.split(".")[0]:
            raise  # the part is there but one of its own imports is broken: not ours to explain
        purpose = f" for {needed_for}" if needed_for else ""
        raise MissingDependency(f"the Python module {module!r} is missing{purpose}: {install}") from None


LIBVIRT_INSTALL = "install it with `.venv/bin/pip install -e '.[libvirt]'` (libvirt-python, built against libvirt-dev)"


def require_libvirt() -> ModuleType:
    """libvirt-python, for the libvirt driver (`canopy agent --driver libvirt`)."""
    return require("libvirt", install=LIBVIRT_INSTALL, needed_for="the libvirt driver")


SIM_INSTALL = "install them with `.venv/bin/pip install -e '.[sim]'` (psutil, matplotlib)"
