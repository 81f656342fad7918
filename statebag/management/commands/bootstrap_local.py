"""Prepare the embedded default: an admin account with a fresh password, printed once."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create or reset the local 'admin' superuser and print its new password (embedded mode only)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--address", default="127.0.0.1:8000", help="host:port the server will listen on")

    def handle(self, *args: object, **options: object) -> None:
        if not getattr(settings, "ANALEMMA_EMBEDDED", False):
            raise CommandError("bootstrap_local only runs with the embedded (local) settings")
        username = str(options["username"])
        password = secrets.token_urlsafe(12)
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} admin login for http://{options['address']}/admin/ -> user: {username}  password: {password}"
            )
        )
