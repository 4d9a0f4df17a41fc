"""gunicorn's settings, read from the working directory by every `gunicorn` command (Dockerfile, compose);
options on the command line (bind, workers) still win.

The timeout must stay above the longest request's own budget, or gunicorn kills a worker mid-claim: a claim
calls SmartPages with SMARTPAGES_REQUEST_TIMEOUT (connect 3 s, read 10 s, one quick second try: at most about
16 s for the POST, and as much again when it reads an existing pass after a 409), then hands what is still
unfinished to the retry task. 60 s leaves room for that and for the database.
"""

import os

timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
