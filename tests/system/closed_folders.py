"""Folders a test's child process really cannot write in, root or not.

The tests may run as root, whom a folder's mode does not stop (``chmod 555`` changes
nothing for it). As root, the folder is given to another user (uid 10001, the image's)
and the child starts without the two capabilities that let root ignore permissions
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, dropped from its bounding set before it
executes): it then meets the folder exactly as the image's user meets a host folder
mounted on ``/data`` that it does not own. As another user, ``chmod 555`` is enough.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
OTHER_UID = 10001


def without_permission_override() -> None:
    """In the child, before it executes: lose root's power over permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def closed_folder(folder: Path) -> Callable[[], None] | None:
    """Make ``folder`` (created if needed) one the next child cannot write in, and return
    the ``preexec_fn`` that child must start with (None when not root)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return None
    os.chown(folder, OTHER_UID, OTHER_UID)
    folder.chmod(0o755)
    return without_permission_override
