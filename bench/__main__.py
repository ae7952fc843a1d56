"""Every benchmark in one run: router, gateway, its upstream client, and side by side with RouteLLM.

    python -m bench            (or: make bench)

Each writes its markdown table (and plots) under bench/results/, which is not
committed: the README quotes a dated snapshot with the machine it came from.
"""

from __future__ import annotations

import subprocess
import sys

SUITES = (
    "bench.router_bench", "bench.gateway_bench", "bench.agents_bench", "bench.agent_routing_bench", "bench.redis_bench",
    "bench.session_prefill_bench", "bench.upstream_client_bench",
    "bench.versus_routellm.run",
)


def main() -> int:
    failed = []
    for suite in SUITES:
        print(f"\n=== {suite} ===", flush=True)
        if subprocess.run([sys.executable, "-m", suite, *sys.argv[1:]]).returncode != 0:
            failed.append(suite)
    print(f"\nresults in bench/results/; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
