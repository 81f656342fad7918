from django.apps import AppConfig


class AnalemmaConfig(AppConfig):
    """The project package as an app, for the commands that wire both apps together
    (``run_local``, ``seed_demo``); it has no models."""

    name = "analemma"
    verbose_name = "Analemma"
