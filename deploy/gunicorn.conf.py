"""gunicorn settings for the web process (Dockerfile and docker-compose.yml run `gunicorn -c` with this file).

PORT (default 8000), WEB_CONCURRENCY (worker processes, default 2) and WEB_THREADS (threads per worker, default
16) come from the environment.
"""

import os

from gunicorn.glogging import Logger

from portal.log_redaction import SecretRedactingFormatter, redact_secret_paths

wsgi_app = "portal.wsgi:application"
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Threaded workers (gthread): a claim spends most of its time waiting for SmartPages (~100 ms a create) with the
# GIL released, so one process per CPU with many threads serves a surge of holders; sync workers held one worker
# per claim for its whole upstream call (3 of them: 13 claims/s, 2 x 16 threads 36, bench/README.md "Claim surge"). Threads only
# wait on I/O here: more of them cost a little memory each, not CPU.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
# Room for the connections of a surge (a holder's phone keeps its own open): the default backlog of 2048 and
# 1000 connections per worker, with idle ones dropped after 5 s so they do not hold a slot.
keepalive = 5
# Nobody runs gunicornc in the container, and its default socket path needs a home directory the user lacks.
control_socket_disable = True
# Above the longest request's own budget: a claim calls SmartPages with
# SMARTPAGES_REQUEST_TIMEOUT (connect 3 s, read 10 s, one quick second try: at most about 16 s for the POST, and
# as much again when it reads an existing pass after a 409), then hands what is unfinished to the retry task.
# (A threaded worker reports alive from its main loop, so a thread waiting on SmartPages is never the cause of a
# timeout; the margin still matters to anyone running with `--worker-class sync`.)
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
# The proxy's X-Real-IP first: behind it, the peer address (%(h)s) is always the proxy's.
access_log_format = '%({x-real-ip}i)s %(h)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'


class SecretRedactingLogger(Logger):
    """Claim tokens and pass-page keys cut to a prefix in both of gunicorn's logs, whatever the worker class:
    the access log in every field (the request line, the path and the Referer, which a claim page's own
    requests name), and the error log in whole lines, tracebacks included ("Error handling request POST
    /p/<token>" when a worker times out mid-claim or a request fails)."""

    def setup(self, cfg):
        super().setup(cfg)  # also run again on a configuration reload (SIGHUP), which makes new handlers
        for handler in self.error_log.handlers:
            if not isinstance(handler.formatter, SecretRedactingFormatter):
                handler.setFormatter(SecretRedactingFormatter(handler.formatter))

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact_secret_paths(value) if isinstance(value, str) else value for key, value in atoms.items()}


logger_class = SecretRedactingLogger


def when_ready(server) -> None:
    """The master cleans the upload temporary folder every ten minutes (portal/uploads.py): files a worker killed
    mid-upload left there are gone within the hour and ten minutes."""
    import threading
    from pathlib import Path

    from portal.uploads import upload_temp_dir_clean

    folder = os.environ.get("FILE_UPLOAD_TEMP_DIR") or str(Path(__file__).resolve().parent.parent / "var" / "uploads")

    def clean_every_ten_minutes() -> None:
        while True:
            try:
                upload_temp_dir_clean(folder)
            except OSError as exc:
                server.log.warning("Could not clean the upload temporary folder %s: %s", folder, exc)
            threading.Event().wait(600)

    threading.Thread(target=clean_every_ten_minutes, daemon=True, name="upload-temp-cleaner").start()
