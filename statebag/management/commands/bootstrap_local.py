"""Prepare the embedded default: an admin account, created once with a random password that is
printed that once. Later runs keep the password and say how to reset it."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = (
        "Create the local 'admin' superuser and print its password the first time (embedded mode "
        "only); afterwards keep it, or make a new one with --reset-password."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--address", default="127.0.0.1:8000", help="host:port the server will listen on")
        parser.add_argument(
            "--reset-password", action="store_true", help="give the admin a new random password and print it"
        )

    def handle(self, *args: object, **options: object) -> None:
        if not getattr(settings, "ANALEMMA_EMBEDDED", False):
            raise CommandError("bootstrap_local only runs with the embedded (local) settings")
        username = str(options["username"])
        url = f"http://{options['address']}/admin/"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is not None and not options["reset_password"]:
            self.stdout.write(
                f"Admin login for {url} -> user: {username} (password unchanged). Forgot it? "
                f"`manage.py bootstrap_local --reset-password` or `manage.py changepassword {username}`"
            )
            return
        password = secrets.token_urlsafe(12)
        if user is None:
            user_model.objects.create_superuser(username=username, email="", password=password)
            verb = "Created"
        else:
            user.is_active = user.is_staff = user.is_superuser = True
            user.set_password(password)
            user.save(update_fields=["password", "is_active", "is_staff", "is_superuser"])
            verb = "Reset"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} admin login for {url} -> user: {username}  password: {password}")
        )
        self.stdout.write("The password is shown only now; `make run` keeps it from here on.")
