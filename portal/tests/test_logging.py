"""Logs as production writes them: claim tokens, short-link codes and pass-page keys cut to a prefix in gunicorn's access log
and Django's request log, and Celery writing Django's format at LOG_LEVEL."""

import re
import secrets
import urllib.request

import pytest

from conftest import production_env, start_celery, start_gunicorn, stop_process

pytestmark = pytest.mark.django_db(transaction=True)
DJANGO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ ")


def _get(url, **headers):
    # As the TLS proxy forwards it: otherwise production settings answer every page with a redirect to HTTPS.
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow  # starts processes
def test_claim_tokens_and_pass_keys_reach_the_logs_only_as_a_prefix():
    token = secrets.token_urlsafe(90)
    key = "4711:" + secrets.token_urlsafe(27)
    code = secrets.token_urlsafe(9)  # a short link's 12 characters
    web, url, log = start_gunicorn(production_env(), log_name="redaction-web")
    try:
        assert _get(f"{url}/p/{token}") == 404
        assert _get(f"{url}/p/{token}?utm_source=sms") == 404
        assert _get(f"{url}/pass/{key}") == 404
        assert _get(f"{url}/s/{code}") == 404
        # A claim page's own requests name it as their referrer.
        assert _get(f"{url}/static/portal/portal.css", Referer=f"https://portal.example.is/p/{token}") == 200
    finally:
        stop_process(web)
    text = log.read_text()
    assert token not in text and token[6:20] not in text
    assert key not in text and key[6:20] not in text
    # A short code keeps only its first 2 characters (its chunk's), none of its 10 random ones.
    assert code[2:] not in text and f"GET /s/{code[:2]}... HTTP/1.1" in text
    # What is left is enough to match a holder's report to a line: the first six characters.
    assert text.count(f"GET /p/{token[:6]}... HTTP/1.1") == 1 and f"/p/{token[:6]}...?utm_source=sms" in text
    assert f'"https://portal.example.is/p/{token[:6]}..."' in text  # the access log's Referer
    assert f"WARNING django.request Not Found: /p/{token[:6]}..." in text  # Django's own 404 line
    assert f"WARNING django.request Not Found: /pass/{key[:6]}..." in text
    assert f"WARNING django.request Not Found: /s/{code[:2]}..." in text


@pytest.mark.worker
def test_celery_writes_djangos_format_at_log_level_whatever_its_own_option_says():
    # start_celery passes --loglevel=INFO; LOG_LEVEL=DEBUG must win, and every line must be Django's format.
    worker = start_celery({"LOG_LEVEL": "DEBUG"}, log_name="logging-worker")
    stop_process(worker)
    from conftest import ARTIFACTS

    lines = [line for line in (ARTIFACTS / "logging-worker.log").read_text().splitlines() if line[:2] == "20"]
    assert any(" DEBUG celery." in line for line in lines)
    assert any(re.search(r" INFO celery\.\S+ .* ready\.$", line) for line in lines)
    assert lines and all(DJANGO_LINE.match(line) for line in lines), [
        line for line in lines if not DJANGO_LINE.match(line)
    ][:5]
    assert not any(re.match(r"^\[\d{4}-", line) for line in lines)  # Celery's own "[date: LEVEL/Process]"
