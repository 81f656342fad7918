"""gunicorn's settings for the web process: ``gunicorn -c analemma/gunicorn_conf.py analemma.wsgi``.

What it adds to the command line's options is the multiprocess bookkeeping of /metrics
(README, "Metrics"): with ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its counts to
its own file there and a scrape sums them. The master starts the folder afresh (the counts of
a previous run's workers would otherwise be summed in again, under pids that may be reused)
and tells the library when a worker exits. Options on the command line win over these."""

from __future__ import annotations

import glob
import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "3"))
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None  # empty: no access log


def _folder() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def on_starting(server: Any) -> None:
    folder = _folder()
    if folder:
        os.makedirs(folder, exist_ok=True)
        for path in glob.glob(os.path.join(folder, "*.db")):  # only the library's files
            os.remove(path)


def child_exit(server: Any, worker: Any) -> None:
    if _folder():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped library function
