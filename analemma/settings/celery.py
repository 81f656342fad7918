"""Celery: Redis when REDIS_URL (or CELERY_BROKER_URL) is set; otherwise tasks run in
process, which is all the embedded default needs. Periodic tasks live in django-celery-beat
(editable in admin); their defaults are created by a migration."""

from environs import Env

from statebag.queues import CeleryQueue, gc_queue_name

env = Env()

_redis_url = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=_redis_url or "memory://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=_redis_url or None)
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=not (_redis_url or env.str("CELERY_BROKER_URL", default=""))
)
# A task is acknowledged after it ran, and re-queued when its worker dies mid-task; tasks are
# idempotent, so a redelivery is harmless. An unacknowledged message is redelivered after
# the visibility timeout, so keep it above the longest task.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    # How often a worker looks for messages whose worker died (Redis): interval x throttle seconds.
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10),
    "unacked_restore_throttle": env.int("CELERY_UNACKED_RESTORE_THROTTLE", default=10),
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = CeleryQueue.DEFAULT.value
CELERY_TASK_ROUTES = {
    "statebag.reap_expired_transactions": {"queue": gc_queue_name(env.str("GC_DLQ_URL", default=""))},
    "statebag.gc_sweep": {"queue": gc_queue_name(env.str("GC_DLQ_URL", default=""))},
    "statebag.apply_retention": {"queue": gc_queue_name(env.str("GC_DLQ_URL", default=""))},
    "statebag.run_dehydration_job": {"queue": CeleryQueue.STATEBAG.value},
    "statebag.train_dictionaries": {"queue": CeleryQueue.STATEBAG.value},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
