"""/metrics: who may read it, and where the processes' counts are (README, "Metrics"); and the
report `manage.py rollout metrics` prints."""

import os

from environs import Env

env = Env()

# A scraper sends "Authorization: Bearer <METRICS_TOKEN>"; empty: no token opens it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Client addresses allowed without the token (REMOTE_ADDR: behind a proxy on the same host every
# request comes from loopback, so there set this to nothing and use the token).
METRICS_ALLOWED_NETWORKS: list[str] = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
# The folders whose counts a scrape sums: this process kind's own (PROMETHEUS_MULTIPROC_DIR) by
# default; the web's plus the workers' and beat's when they share a volume (docker-compose.yml).
_own = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
METRICS_MULTIPROC_DIRS: list[str] = env.list("METRICS_MULTIPROC_DIRS", default=[_own] if _own else [])

# What `manage.py rollout metrics` prints with: the telemetry app's report, named here because
# rollout may not import telemetry (pyproject.toml's layers). Empty: the subcommand says why.
ROLLOUT_METRICS_COMMAND = env.str("ROLLOUT_METRICS_COMMAND", default="telemetry.cli.metrics")
