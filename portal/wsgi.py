import os

from django.core.wsgi import get_wsgi_application

from .checks import refuse_to_start_misconfigured

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()
# gunicorn runs no system checks: without this a missing SECRET_KEY or link key would surface only as errors
# on the first requests. Raising here makes every worker fail to boot, and gunicorn exits saying why.
refuse_to_start_misconfigured()
