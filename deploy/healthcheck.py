"""The web container's healthcheck (docker-compose.yml): GET /healthz from inside the container.

Plain HTTP to this container's gunicorn (PORT, default 8000), so it must send a Host that ALLOWED_HOSTS
accepts (the first entry) — Django answers 400 to any other — and /healthz is exempt from the HTTPS
redirect (SECURE_REDIRECT_EXEMPT). Healthy means 200 with {"status": "ok"}; standard library only.
"""

import json
import os
import sys
import urllib.request


def allowed_host() -> str:
    for entry in os.environ.get("ALLOWED_HOSTS", "").split(","):
        entry = entry.strip().lstrip(".")  # ".example.is" allows example.is itself too
        if entry and entry != "*":
            return entry
    return "localhost"


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz"
    request = urllib.request.Request(url, headers={"Host": allowed_host()})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
    except Exception as exc:  # noqa: BLE001 - refused, timed out, a 503 or a redirect: all unhealthy, and said why
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if body.get("status") != "ok":
        print(f"unhealthy: {body}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
