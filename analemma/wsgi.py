import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "analemma.settings.production")
django_application = get_wsgi_application()

# Import the URL configuration (and with it the API's routes and schemas) now, as each worker
# boots, not in the first request it serves: about 0.3 s of CPU that would otherwise be added
# to one client's request after every deploy or worker restart.
get_resolver().url_patterns  # noqa: B018 - the property's side effect is the point

from rollout.fastpath import FlagsetFastPath  # noqa: E402 - needs Django set up first

# SDK polls of the flag set are answered from the cache before Django's request cycle.
application = FlagsetFastPath(django_application)
