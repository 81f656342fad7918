"""Seed the demo (analemma.demo): only what is missing, so running it again adds nothing."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analemma.demo import demo_seed


class Command(BaseCommand):
    help = (
        "Make the demo environment, flags, rollout plan and executions, where missing (embedded mode only)."
    )

    def handle(self, *args: object, **options: object) -> None:
        if not getattr(settings, "ANALEMMA_EMBEDDED", False):
            raise CommandError("seed_demo only runs with the embedded (local) settings")
        try:
            made = demo_seed()
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        if made:
            self.stdout.write(f"Demo made: {', '.join(made)} (ANALEMMA_DEMO=false turns it off)")
        else:
            self.stdout.write("Demo already there (ANALEMMA_DEMO=false turns it off)")
