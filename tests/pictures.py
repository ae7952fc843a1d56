"""Where the README's pictures go when a test is asked to keep them (ROUTESTACK_SCREENSHOTS=DIR).

Into the folder given, made if missing; never over a file git tracks (docs/images/*.png are the README's) unless
ROUTESTACK_SCREENSHOTS_REPLACE=1 says to: a picture run must not rewrite the repository by surprise.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["keep_picture", "picture_folder"]


def picture_folder() -> Path | None:
    """The folder pictures are kept in, or None when none was asked for."""
    given = os.environ.get("ROUTESTACK_SCREENSHOTS")
    if not given:
        return None
    folder = Path(given)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tracked(path: Path) -> bool:
    found = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent, capture_output=True)
    return found.returncode == 0


def keep_picture(name: str, data: bytes) -> Path | None:
    """Write ``data`` as ``name`` in the folder asked for; refused (an error naming the way) over a tracked file."""
    folder = picture_folder()
    if folder is None:
        return None
    target = folder / name
    if target.exists() and _tracked(target) and os.environ.get("ROUTESTACK_SCREENSHOTS_REPLACE") != "1":
        raise FileExistsError(
            f"{target} is tracked by git (a README picture): give ROUTESTACK_SCREENSHOTS another folder, or set "
            "ROUTESTACK_SCREENSHOTS_REPLACE=1 to replace it"
        )
    target.write_bytes(data)
    return target
