from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_defaults(sender: AppConfig, **kwargs: object) -> None:
    from .services import defaults_ensure

    defaults_ensure()


class RolloutConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "rollout"
    verbose_name = "Rollout"

    def ready(self) -> None:
        # After every migrate (and every test flush): environments and the state bag's flags exist.
        post_migrate.connect(_ensure_defaults, sender=self, dispatch_uid="rollout-defaults")
