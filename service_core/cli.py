"""The command-line error wrapper: a wrong setting or a failed call is one line on stderr, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pydantic import ValidationError

from .errors import ConfigError, ServiceError

__all__ = ["run_cli"]


def run_cli(prog: str, command: Callable[[], int]) -> int:
    """Run a command-line action; exit 2 for a configuration error, 1 for a failed call."""
    try:
        return command()
    except (ConfigError, FileNotFoundError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"{prog}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
