"""``python -m routellm_compat``: the same as ``routestack-routellm``."""

import sys

from .server import main

sys.exit(main())
