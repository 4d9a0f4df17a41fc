"""The SmartPages client against the sandbox over HTTP: what each kind of answer becomes, and how long one call
may take when SmartPages keeps asking it to wait."""

import threading
import time
import uuid

import pytest

from conftest import SANDBOX_KEY_ID, SANDBOX_KEY_TOKEN
from sandbox import DEMO_TEMPLATE_ID, Faults, SmartPagesSandbox
from templates_sync.client import (
    NotFound,
    PermanentError,
    SmartPagesClient,
    TransientError,
    client_from_settings,
    default_retry,
    smartpages_client,
)


def test_a_retry_after_longer_than_the_cap_is_waited_out_only_for_the_cap(sandbox, settings):
    """Every answer is 429 with Retry-After: one hour. The call gives up after its tries, each wait cut to
    SMARTPAGES_RETRY_AFTER_MAX, instead of sleeping an hour before each."""
    settings.SMARTPAGES_RETRY_AFTER_MAX = 0.25
    sandbox.faults = Faults(rate_limit_rate=1.0, retry_after=3600, scope="passes")
    sandbox.reset_counts()
    outcome = {}

    def call():
        started = time.monotonic()
        with client_from_settings() as client:
            try:
                client.get_pass(str(uuid.uuid4()))
            except TransientError as exc:
                outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    # In a thread of its own, so that an uncapped wait fails this test instead of holding it for hours.
    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "the call still waits out the hour-long Retry-After"
    assert outcome["error"].status == 429
    assert sandbox.request_count("GET") == 7  # the first try and six retries, each after a capped wait
    assert 6 * 0.25 <= outcome["seconds"] < 30


# --- the client on urllib3: what each kind of answer becomes -----------------------------------------------
def _quick_client(sandbox, *, key_token=SANDBOX_KEY_TOKEN) -> SmartPagesClient:
    """A client as the workers have, but retrying without backoff, so that a test of six retries is quick."""
    return SmartPagesClient(
        base_url=sandbox.url,
        key_id=SANDBOX_KEY_ID,
        key_token=key_token,
        timeout=(5.0, 10.0),
        retry=default_retry().new(backoff_factor=0),
    )


def test_a_template_page_and_a_new_pass_go_and_come_back_whole(sandbox):
    with _quick_client(sandbox) as client:
        page = client.list_templates(page=1, page_size=10)
        fields = [{"identifier": "name", "value": "Jón Þór"}, {"identifier": "email", "value": "jon@example.is"}]
        created = client.create_pass({"passTemplateId": DEMO_TEMPLATE_ID, "inputFields": fields})
        read = client.get_pass(created["id"])

    assert (page.page, page.page_size, page.total_pages, page.total_items) == (1, 10, 3, 25)
    assert [item["id"] for item in page.data] == sandbox.template_ids()[10:20]
    assert read["passTemplateId"] == DEMO_TEMPLATE_ID
    assert {"identifier": "name", "value": "Jón Þór"} in read["inputFields"]


def test_an_answer_that_stays_503_is_retried_then_said_as_such(sandbox):
    sandbox.faults = Faults(error_rate=1.0, scope="templates")
    sandbox.reset_counts()
    with _quick_client(sandbox) as client, pytest.raises(TransientError) as raised:
        client.list_templates(page=0, page_size=10)

    assert str(raised.value) == "SmartPages answered 503 to GET /api/v1/pass-template after retrying."
    assert raised.value.status == 503
    assert sandbox.request_count("GET", "/api/v1/pass-template") == 7  # the first try and six retries


def test_a_connection_that_keeps_breaking_is_transient_and_the_message_names_no_secret(sandbox):
    sandbox.faults = Faults(reset_rate=1.0, scope="templates")
    with _quick_client(sandbox) as client, pytest.raises(TransientError) as raised:
        client.get_template(sandbox.template_ids()[0])

    message = str(raised.value)
    assert message.startswith(
        f"SmartPages could not be reached for GET /api/v1/pass-template/{sandbox.template_ids()[0]}"
    )
    assert SANDBOX_KEY_TOKEN not in message and raised.value.status is None


def test_a_post_whose_answer_was_lost_is_not_sent_again(sandbox):
    """The connection breaks after the request went out: the pass may exist, so the POST is not repeated."""
    sandbox.faults = Faults(reset_rate=1.0, scope="passes")
    sandbox.reset_counts()
    with _quick_client(sandbox) as client, pytest.raises(TransientError):
        client.create_pass({"passTemplateId": DEMO_TEMPLATE_ID, "inputFields": []})

    assert sandbox.request_count("POST", "/api/v1/pass") == 1


def test_refusals_are_permanent_and_say_what_to_do(sandbox):
    with _quick_client(sandbox) as client, pytest.raises(NotFound):
        client.get_template(str(uuid.uuid4()))
    with _quick_client(sandbox, key_token="wrong") as client, pytest.raises(PermanentError) as raised:
        client.list_templates(page=0, page_size=10)
    assert raised.value.status == 401
    assert "check SMARTPAGES_KEY_ID and SMARTPAGES_KEY_TOKEN" in str(raised.value)
    assert sandbox.request_count("GET", "/api/v1/pass-template") == 2  # neither was retried


def test_answers_are_asked_for_compressed_and_read_back_whole():
    """A full sync reads ~19 MB of JSON: the client asks for gzip (as requests did) and urllib3 unpacks it."""
    import gzip
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked = []

    class Gzipping(BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.headers.get("Accept-Encoding", ""))
            body = gzip.compress(b'{"id": "x", "name": "J\\u00f3n"}')
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gzipping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = SmartPagesClient(base_url=f"http://127.0.0.1:{server.server_port}", key_id="k", key_token="t")
        with client:
            assert client.get_template("x") == {"id": "x", "name": "Jón"}
    finally:
        server.shutdown()
    assert "gzip" in asked[0]


def test_calls_a_person_waits_on_share_one_kept_alive_connection_per_thread(sandbox, settings):
    """A claim's create reuses the process's open connection to SmartPages instead of opening its own; calls
    from many threads at once each get a connection of the shared pool. A worker's client is its own."""
    sandbox.reset_counts()
    for _ in range(3):
        with smartpages_client(in_request=True) as client:
            assert client.get_template(DEMO_TEMPLATE_ID)["id"] == DEMO_TEMPLATE_ID
    assert (sandbox.request_count("GET"), sandbox.connections_accepted) == (3, 1)

    answers, threads = [], 8
    barrier = threading.Barrier(threads)
    sandbox.faults = Faults(slow_seconds=0.3, scope="templates")  # so that the 8 calls are in flight together

    def claim_like_call():
        barrier.wait()
        with smartpages_client(in_request=True) as shared:
            answers.append(shared.get_template(DEMO_TEMPLATE_ID)["id"])

    callers = [threading.Thread(target=claim_like_call) for _ in range(threads)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=30)
    assert answers == [DEMO_TEMPLATE_ID] * threads
    assert sandbox.connections_accepted == threads  # the kept one and 7 more, each call one of its own at once
    sandbox.faults = Faults()
    opened = sandbox.connections_accepted
    with smartpages_client(in_request=True) as client:
        client.get_template(DEMO_TEMPLATE_ID)
    with smartpages_client() as worker:
        worker.get_template(DEMO_TEMPLATE_ID)
    assert sandbox.connections_accepted == opened + 1  # only the worker's client connected

    other = SmartPagesSandbox(templates=1, key_id=SANDBOX_KEY_ID, key_token=SANDBOX_KEY_TOKEN).start()
    try:
        settings.SMARTPAGES_API_URL = other.url  # another SmartPages: another client, not the first's pool
        with smartpages_client(in_request=True) as client:
            assert client.list_templates(page=1, page_size=10).total_items == 1
        assert other.connections_accepted == 1
    finally:
        other.stop()


def test_a_connection_idle_too_long_is_opened_again_rather_than_reused(sandbox, monkeypatch):
    """A NAT or load balancer may forget an idle connection without a word; a POST sent on it would be lost."""
    from templates_sync import client as client_module

    sandbox.reset_counts()
    with smartpages_client(in_request=True) as client:
        client.get_template(DEMO_TEMPLATE_ID)
        client.get_template(DEMO_TEMPLATE_ID)
        assert sandbox.connections_accepted == 1
        monkeypatch.setattr(client_module, "KEEPALIVE_IDLE_SECONDS", 0.0)
        time.sleep(0.01)
        client.get_template(DEMO_TEMPLATE_ID)
    assert (sandbox.request_count("GET"), sandbox.connections_accepted) == (3, 2)
