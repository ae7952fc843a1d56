"""Write prometheusrule.yaml (the Prometheus Operator's PrometheusRule) from alerts.yml, the one source of the rules.

    python deploy/monitoring/generate_rules.py          # write prometheusrule.yaml
    python deploy/monitoring/generate_rules.py --check  # exit 1 if it is stale (the suite runs this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
HEADER = (
    "# Generated from alerts.yml by `python deploy/monitoring/generate_rules.py`: edit alerts.yml, then run it.\n"
    "# The alerting rules as the Prometheus Operator's PrometheusRule (deploy/monitoring is a kustomize component).\n"
    "# Label `release` to match your Prometheus's ruleSelector (kube-prometheus-stack: release: <its release name>).\n"
)


def render() -> str:
    rules = yaml.safe_load((HERE / "alerts.yml").read_text())
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "routestack", "labels": {"app.kubernetes.io/part-of": "routestack"}},
        "spec": {"groups": rules["groups"]},
    }
    body: str = yaml.safe_dump(manifest, sort_keys=False, width=120)
    return HEADER + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if prometheusrule.yaml is stale")
    args = parser.parse_args()
    target = HERE / "prometheusrule.yaml"
    text = render()
    if args.check:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run python deploy/monitoring/generate_rules.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
