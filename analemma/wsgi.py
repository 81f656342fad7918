import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "analemma.settings.production")
django_application = get_wsgi_application()

from rollout.fastpath import FlagsetFastPath  # noqa: E402 - needs Django set up first

# SDK polls of the flag set are answered from the cache before Django's request cycle.
application = FlagsetFastPath(django_application)
