from django.apps import AppConfig


class StatebagConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "statebag"
    verbose_name = "State bag"
