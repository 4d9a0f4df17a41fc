"""The outbox in real processes: Celery workers on their own redis-server send to the suite's SMTP server
(aiosmtpd in a process of its own) and to the local Twilio stand-in over HTTP. Every message arrives exactly
once; a worker killed with SIGKILL mid-send costs at most the message it was sending; two workers together
keep to EMAIL_RATE."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from background.rate_limit import most_in_one_second
from conftest import (
    SANDBOX_KEY_ID,
    SANDBOX_KEY_TOKEN,
    finish_with_beat,
    kill_worker_part_way,
    start_celery,
    stop_process,
    wait_for,
)
from delivery import services
from delivery.models import EMAIL, SMS, Message, Suppression
from delivery.services import MessageSpec

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SUBJECTS = {"is": "Passinn þinn, röð {n}", "en": "Your pass, row {n}"}


def _env(own_redis, session_sandbox, **extra) -> dict[str, str]:
    env = {
        "CELERY_BROKER_URL": own_redis.url(0),
        "CACHE_REDIS_URL": own_redis.url(1),
        "SMARTPAGES_API_URL": session_sandbox.url,
        "SMARTPAGES_KEY_ID": SANDBOX_KEY_ID,
        "SMARTPAGES_KEY_TOKEN": SANDBOX_KEY_TOKEN,
        "PUBLIC_BASE_URL": "https://passar.example.is",
        "DEFAULT_FROM_EMAIL": "passar@issuer.example",
        "DELIVERY_RETRY_SECONDS": "0.5",
        "TEMPLATE_SYNC_INTERVAL": "3600",
        "MEMBER_REFRESH_INTERVAL": "3600",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


@pytest.fixture
def own_broker(own_redis, monkeypatch):
    """This process sends its tasks where the test's workers listen (the test's own redis-server)."""
    from portal.celery import app

    connection = app.connection_for_write(own_redis.url(0))
    send_task = app.send_task
    monkeypatch.setattr(
        app, "send_task", lambda name, *args, **kwargs: send_task(name, *args, connection=connection, **kwargs)
    )
    yield
    connection.release()


def email(n: int, *, local: str = "holder") -> MessageSpec:
    language = "is" if n % 2 else "en"
    return MessageSpec(
        subject_key=f"batch:9:row:{n}",
        channel=EMAIL,
        to=f"{local}{n}@example.is",
        subject=SUBJECTS[language].format(n=n),
        text=f"https://passar.example.is/p/token-{n}",
        html=f'<p><a href="https://passar.example.is/p/token-{n}">{SUBJECTS[language].format(n=n)}</a></p>',
        language=language,
    )


def _sent(channel: str = EMAIL) -> int:
    return Message.objects.filter(channel=channel, status=Message.SENT).count()


def test_two_thousand_emails_arrive_exactly_once_each_multipart_in_their_language(
    own_redis, own_broker, session_sandbox, smtp_server
):
    env = _env(own_redis, session_sandbox, EMAIL_URL=smtp_server.url, EMAIL_RATE=100000, DELIVERY_SENDERS=2)
    worker = start_celery(env, log_name="delivery-2000-worker")
    try:
        result = services.queue_messages(email(n) for n in range(2000))
        assert result.queued == 2000
        wait_for(lambda: _sent() == 2000, timeout=240, interval=1, message="2,000 messages sent")
    finally:
        stop_process(worker)
    received = smtp_server.messages
    assert len(received) == 2000
    by_recipient = Counter(recipients[0] for recipients, _ in received)
    assert by_recipient == {f"holder{n}@example.is": 1 for n in range(2000)}
    for recipients, message in received:
        n = int(recipients[0].removeprefix("holder").split("@")[0])
        language = "is" if n % 2 else "en"
        assert message.get_content_type() == "multipart/alternative"
        assert message["Subject"] == SUBJECTS[language].format(n=n)
        assert message["Content-Language"] == language
        assert (
            message.get_body(preferencelist=("plain",)).get_content().strip()
            == f"https://passar.example.is/p/token-{n}"
        )
        assert f'token-{n}"' in message.get_body(preferencelist=("html",)).get_content()
    assert set(Message.objects.values_list("attempts", flat=True)) == {1}


def test_a_worker_killed_mid_send_costs_at_most_the_message_it_was_sending(
    own_redis, own_broker, session_sandbox, smtp_server
):
    env = _env(
        own_redis,
        session_sandbox,
        EMAIL_URL=smtp_server.url,
        EMAIL_RATE=100000,
        RUN_HEARTBEAT_SECONDS="0.5",
        RUN_STALE_SECONDS="3",
        SWEEP_INTERVAL="1",
    )
    total = 80
    kill_worker_part_way(
        env,
        log_name="delivery-killed-worker",
        start=lambda: services.queue_messages(email(n, local="lag-") for n in range(total)),
        part_way=lambda _result: _sent() >= 20,
        message="20 messages sent",
    )
    in_flight = set(Message.objects.filter(status=Message.SENDING).values_list("to", flat=True))
    # One per pool process (concurrency 2), each sending one message at a time; the relay takes 0.3 s a message,
    # so the kill all but always lands mid-send.
    assert 1 <= len(in_flight) <= 2
    assert _sent() < total
    finish_with_beat(
        env, log_name="delivery-after-kill-worker", finished=lambda: _sent() == total, message="all messages sent"
    )
    counts = Counter(recipients[0] for recipients, _ in smtp_server.messages)
    assert set(counts) == {f"lag-{n}@example.is" for n in range(total)}
    repeated = {address for address, count in counts.items() if count > 1}
    assert repeated <= in_flight and max(counts.values()) <= 2
    # The sweep put back exactly the rows in flight (their second attempt); every other row was sent once.
    assert set(Message.objects.filter(attempts=2).values_list("to", flat=True)) == in_flight
    assert Message.objects.filter(attempts__gt=2).count() == 0
    print(f"in flight at the kill: {len(in_flight)}; delivered twice: {len(repeated)}")


def test_two_workers_together_keep_to_email_rate(own_redis, own_broker, session_sandbox, smtp_server):
    env = _env(own_redis, session_sandbox, EMAIL_URL=smtp_server.url, EMAIL_RATE=20, DELIVERY_SENDERS=4)
    workers = [start_celery(env, log_name=f"delivery-rate-worker-{n}") for n in (1, 2)]
    try:
        services.queue_messages(email(n) for n in range(160))
        wait_for(lambda: _sent() == 160, timeout=60, interval=0.5, message="160 messages sent")
    finally:
        for worker in workers:
            stop_process(worker)
    arrivals = sorted(int(path.name.split("-")[0]) / 1e9 for path in smtp_server.folder.glob("*.eml"))
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    print(f"two workers: {rate:.2f} messages/s (EMAIL_RATE 20), most in one second {most_in_one_second(arrivals)}")
    assert 18 <= rate <= 22
    assert most_in_one_second(arrivals) <= 22
    logs = [(pytest.importorskip("conftest").ARTIFACTS / f"delivery-rate-worker-{n}.log").read_text() for n in (1, 2)]
    assert all("delivery.send_queued" in log and "succeeded" in log for log in logs)  # both workers sent


def test_cancel_stops_a_running_send_at_the_next_message(own_redis, own_broker, session_sandbox, smtp_server):
    env = _env(own_redis, session_sandbox, EMAIL_URL=smtp_server.url, EMAIL_RATE=10, DELIVERY_SENDERS=2)
    worker = start_celery(env, log_name="delivery-cancel-worker")
    try:
        services.queue_messages(email(n) for n in range(100))
        wait_for(lambda: _sent() >= 10, timeout=60, interval=0.1, message="10 messages sent")
        cancelled = services.cancel("batch:9:")
        at_cancel = 100 - cancelled
        time.sleep(2)  # twenty slots at EMAIL_RATE: nothing more may go
    finally:
        stop_process(worker)
    sent = _sent()
    assert at_cancel - 2 <= sent <= at_cancel  # the messages in hand at the cancel (one per sender) finished
    assert Message.objects.filter(status=Message.SKIPPED, reason=services.CANCELLED).count() == cancelled
    assert smtp_server.count() == sent


def test_sms_through_the_twilio_stand_in_with_429_5xx_and_stop(own_redis, own_broker, session_sandbox, twilio):
    total = 400
    env = _env(own_redis, session_sandbox, SMS_URL=twilio.sms_url(), SMS_RATE=100000)
    twilio.opt_out("+3546700007")  # replied STOP earlier: Twilio refuses it (21610)
    worker = start_celery(env, log_name="delivery-sms-worker")
    try:
        twilio.fail_next(3, 429, retry_after=1)
        services.queue_messages(
            MessageSpec(f"batch:3:row:{n}", SMS, f"+35467{n:05d}", f"Halló {n}: https://passar.example.is/s/c{n}")
            for n in range(total)
        )
        wait_for(lambda: twilio.requests >= 100, timeout=60, interval=0.2, message="100 requests")
        twilio.fail_next(4, 503)
        done = (Message.SENT, Message.FAILED)
        wait_for(
            lambda: Message.objects.filter(status__in=done).count() == total,
            timeout=180,
            interval=1,
            message="every SMS sent or failed",
        )
    finally:
        stop_process(worker)
    counts = Counter(message["to"] for message in twilio.messages)
    assert counts == {f"+35467{n:05d}": 1 for n in range(total) if n != 7}
    stopped = Message.objects.get(subject_key="batch:3:row:7")
    assert stopped.status == Message.FAILED and "opted out" in stopped.reason
    assert Suppression.objects.filter(channel=SMS, address="+3546700007").exists()
    assert Message.objects.filter(attempts__gt=1).count() >= 5  # the 429s and 5xx were tried again
    bodies = {message["to"]: message["body"] for message in twilio.messages}
    assert bodies["+3546700123"] == "Halló 123: https://passar.example.is/s/c123"
    assert time.monotonic() - twilio.arrivals[0] > 0
