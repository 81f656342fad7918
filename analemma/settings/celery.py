"""Celery: Redis when REDIS_URL (or CELERY_BROKER_URL) is set. Without one, the embedded default
(settings/local.py, `make run`) uses a broker in a folder (kombu's filesystem transport, under
ANALEMMA_VAR_DIR/broker), which needs no server and which `make run`'s worker and beat share
with the web process; the other settings run tasks in process. Periodic tasks live in
django-celery-beat (editable in admin); their defaults are created by migrations.

Why the filesystem transport for the embedded default rather than kombu's SQLAlchemy one: it
needs no new dependency, and it keeps the worker's polling off the SQLite file, whose single
writer the web process, the worker and beat already share. What both give up against Redis:
a message is removed from the folder when the worker takes it, and held in the worker's memory
until acknowledged; a worker that stops normally puts back what it had not finished, but one
killed outright (SIGKILL, power loss) loses the tasks it held. The periodic tasks run again at
their next tick; a lost dehydration job stays queued (submit it again)."""

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from environs import Env
from kombu import Queue

from statebag.queues import CeleryQueue, gc_queue_name, worker_queues

env = Env()

_redis_url = env.str("REDIS_URL", default="")
_var_dir = Path(env.str("ANALEMMA_VAR_DIR", default=str(Path(__file__).resolve().parents[2] / "var")))
# One folder for messages: producers write where the worker reads.
BROKER_FOLDER = Path(env.str("CELERY_BROKER_FOLDER", default=str(_var_dir / "broker")))
FOLDER_BROKER_URL = "filesystem://localhost/"
# Whether a broker was named; without one, tasks run in process (the embedded default names
# the folder broker instead).
BROKER_NAMED = bool(_redis_url or env.str("CELERY_BROKER_URL", default=""))
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=_redis_url or "memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=_redis_url or None)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not BROKER_NAMED)
# A task is acknowledged after it ran, and re-queued when its worker dies mid-task; tasks are
# idempotent, so a redelivery is harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# How long a task may run, from how long the longest one is expected to take (a dehydration
# job of a large state, a GC sweep, a dictionary training): TASK_EXPECTED_SECONDS. At that soft
# limit the task gets SoftTimeLimitExceeded (a job is then marked failed, with the reason); a
# grace later the hard limit kills it. A message whose whole worker died unacknowledged is
# redelivered by the broker (Redis, SQS) after the visibility timeout: a grace above the hard
# limit, so a task still running is never delivered twice, and a dead worker's job runs again
# minutes later rather than after Celery's default hour.
TASK_EXPECTED_SECONDS = env.int("CELERY_TASK_EXPECTED_SECONDS", default=300)
TASK_GRACE_SECONDS = env.int("CELERY_TASK_GRACE_SECONDS", default=30)
CELERY_TASK_SOFT_TIME_LIMIT = TASK_EXPECTED_SECONDS
CELERY_TASK_TIME_LIMIT = TASK_EXPECTED_SECONDS + TASK_GRACE_SECONDS
VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=CELERY_TASK_TIME_LIMIT + TASK_GRACE_SECONDS)
if TASK_EXPECTED_SECONDS <= 0 or TASK_GRACE_SECONDS <= 0:
    raise ImproperlyConfigured("CELERY_TASK_EXPECTED_SECONDS and CELERY_TASK_GRACE_SECONDS must be positive")
if VISIBILITY_TIMEOUT <= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        f"CELERY_VISIBILITY_TIMEOUT ({VISIBILITY_TIMEOUT} s) must be above the hard time limit "
        f"({CELERY_TASK_TIME_LIMIT} s = CELERY_TASK_EXPECTED_SECONDS + CELERY_TASK_GRACE_SECONDS): "
        "a task still running would be delivered to a second worker"
    )
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    # How often a worker looks for messages whose worker died (Redis): interval x throttle seconds.
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
FOLDER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "data_folder_in": str(BROKER_FOLDER / "queue"),
    "data_folder_out": str(BROKER_FOLDER / "queue"),
    "control_folder": str(BROKER_FOLDER / "control"),
    # How often the worker looks in the folder for a new message.
    "polling_interval": env.float("CELERY_BROKER_POLLING_SECONDS", default=0.5),
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(FOLDER_TRANSPORT_OPTIONS)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = CeleryQueue.DEFAULT.value
# Producers route by these names and a worker started without -Q consumes exactly these
# queues: both come from statebag.queues, so GC_DLQ_URL names one queue for both.
_gc_dlq_url = env.str("GC_DLQ_URL", default="")
CELERY_TASK_QUEUES = [Queue(name) for name in worker_queues(_gc_dlq_url)]
CELERY_TASK_ROUTES = {
    "statebag.reap_expired_transactions": {"queue": gc_queue_name(_gc_dlq_url)},
    "statebag.gc_sweep": {"queue": gc_queue_name(_gc_dlq_url)},
    "statebag.apply_retention": {"queue": gc_queue_name(_gc_dlq_url)},
    "statebag.run_dehydration_job": {"queue": CeleryQueue.STATEBAG.value},
    "statebag.train_dictionaries": {"queue": CeleryQueue.STATEBAG.value},
    "statebag.write_envelopes": {"queue": CeleryQueue.STATEBAG.value},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
