"""What a child process of a test may not do, root or not: write in a folder or a file,
open a privileged port.

The tests may run as root, whom a folder's mode does not stop (``chmod 555`` changes
nothing for it) and who may listen on any port. As root, the child starts without the
capabilities that give root those powers, dropped from its bounding set before it
executes: ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH`` (it then meets a folder of
another user exactly as the image's user meets a host folder mounted on ``/data`` that
it does not own), ``CAP_NET_BIND_SERVICE`` (ports below 1024). As another user, the
folder's mode is enough, and low ports are closed already.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_NET_BIND_SERVICE = 10
OTHER_UID = 10001


def without(*capabilities: int) -> Callable[[], None] | None:
    """The ``preexec_fn`` that starts a child of root without ``capabilities`` (None
    when not root: it has none of them)."""
    if os.geteuid() != 0:
        return None

    def drop() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in capabilities:
            if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def closed_folder(folder: Path) -> Callable[[], None] | None:
    """Make ``folder`` (created if needed) one the next child cannot write in, and return
    the ``preexec_fn`` that child must start with."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return None
    os.chown(folder, OTHER_UID, OTHER_UID)
    folder.chmod(0o755)
    return without(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)


def closed_file(file: Path) -> Callable[[], None] | None:
    """Make the existing ``file`` one the next child can read but not write, and return
    the ``preexec_fn`` that child must start with."""
    if os.geteuid() != 0:
        file.chmod(0o444)
        return None
    os.chown(file, OTHER_UID, OTHER_UID)
    file.chmod(0o644)
    return without(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)
