"""The template mirror against the sandbox over real HTTP, on the test database.

One module of ~760 lines, as templates_sync/sync/ is one service: its sections follow a run's life — a full
sync and what it writes, hostile upstream data, heartbeat and take-over."""

import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from conftest import wait_for
from sandbox import Faults
from templates_sync import sync
from templates_sync.models import InputField, PassTemplate, SyncRun, input_fields_of
from templates_sync.sync import rows, writing

pytestmark = pytest.mark.django_db


def test_a_multi_page_sync_mirrors_every_field_exactly(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 10
    run = sync.templates_sync_all()

    assert (run.status, run.created_count, run.pages, run.total_items) == ("succeeded", 25, 3, 25)
    assert PassTemplate.objects.count() == 25
    for template_id in sandbox.template_ids():
        upstream = sandbox.get_template(template_id)
        mirrored = PassTemplate.objects.get(pk=template_id)
        assert mirrored.raw == upstream
        assert mirrored.name == (upstream.get("name") or "")
        assert mirrored.type == upstream["type"]
        assert mirrored.status == upstream["status"]
        assert mirrored.disable_issue == upstream["disableIssue"]
        assert mirrored.pos_distribution_only == upstream["posDistributionOnly"]
        assert mirrored.kennitala_age_verification == upstream.get("kennitalaAgeVerification")
        expected_price = upstream.get("passPrice")
        assert mirrored.pass_price == (Decimal(str(expected_price)) if expected_price is not None else None)
        assert mirrored.delivery_page_url == upstream["deliveryPageUrl"]
        fields = [(f.identifier, f.label, f.format, f.type, f.is_mandatory, f.is_unique) for f in mirrored.input_fields]
        assert fields == [
            (f["identifier"], f["label"], f["format"], f["type"], f["isMandatory"], f["isUnique"])
            for f in upstream["inputFields"]
        ]


def test_the_server_page_size_wins_over_the_one_asked_for(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 1000  # the sandbox caps pages at 100, as the real API may
    sandbox.reset_counts()
    run = sync.templates_sync_all()
    assert (run.status, run.pages, run.created_count) == ("succeeded", 1, 25)


def test_an_unchanged_resync_writes_no_template_row(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 10
    sync.templates_sync_all()
    changed_before = dict(PassTemplate.objects.values_list("id", "changed_at"))

    with CaptureQueriesContext(connection) as queries:
        run = sync.templates_sync_all()

    assert (run.status, run.created_count, run.updated_count, run.unchanged, run.removed) == ("succeeded", 0, 0, 25, 0)
    mirror_writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")
        and "templates_sync_passtemplate" in q["sql"]
    ]
    assert mirror_writes == []
    assert dict(PassTemplate.objects.values_list("id", "changed_at")) == changed_before


def test_changed_added_and_removed_templates_are_mirrored(sandbox):
    sync.templates_sync_all()
    first, second = sandbox.template_ids()[:2]
    sandbox.update_template(
        first,
        name="Nýtt nafn",
        inputFields=[
            {
                "label": "Netfang",
                "identifier": "netfang",
                "description": None,
                "isMandatory": True,
                "isUnique": False,
                "format": "EMAIL",
                "type": "MEMBER",
            },
        ],
    )
    added = sandbox.add_template()
    sandbox.remove_template(second)

    run = sync.templates_sync_all()

    assert (run.status, run.created_count, run.updated_count, run.removed) == ("succeeded", 1, 1, 1)
    renamed = PassTemplate.objects.get(pk=first)
    assert renamed.name == "Nýtt nafn"
    assert [f.identifier for f in renamed.input_fields] == ["netfang"]
    assert PassTemplate.objects.filter(pk=added["id"]).exists()
    gone = PassTemplate.objects.get(pk=second)  # kept, never hard-deleted
    assert gone.removed_at is not None and gone.is_removed


def test_a_template_that_comes_back_is_no_longer_marked_removed(sandbox):
    sync.templates_sync_all()
    template_id = sandbox.template_ids()[3]
    kept = sandbox.get_template(template_id)
    sandbox.remove_template(template_id)
    sync.templates_sync_all()
    sandbox.add_template(kept)

    run = sync.templates_sync_all()

    assert run.updated_count == 1
    assert PassTemplate.objects.get(pk=template_id).removed_at is None


def test_a_twenty_percent_fault_rate_still_converges_with_bounded_requests(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 5  # 5 pages
    sandbox.faults = Faults(error_rate=0.2, reset_rate=0.05, seed=7)
    sandbox.reset_counts()

    run = sync.templates_sync_all()

    assert run.status == "succeeded", run.error
    assert PassTemplate.objects.filter(removed_at__isnull=True).count() == 25
    requests_made = sandbox.request_count(path_prefix="/api/v1/pass-template")
    assert 5 <= requests_made <= 5 * 3, requests_made  # retried, but not unboundedly


def test_broken_json_on_the_last_page_fails_the_run_and_removes_nothing(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 10
    sync.templates_sync_all()
    sandbox.remove_template(sandbox.template_ids()[0])
    sandbox.faults = Faults(broken_json_page=2)

    run = sync.templates_sync_all()

    assert run.status == "failed"
    assert "not valid JSON" in run.error
    assert run.removed == 0
    assert PassTemplate.objects.filter(removed_at__isnull=False).count() == 0
    assert PassTemplate.objects.count() == 25


def test_a_run_that_fails_while_confirming_removals_removes_nothing(sandbox, settings):
    """Two templates gone upstream: the first is confirmed by its 404, then SmartPages fails for good. The run
    fails, and the confirmed one stays in the mirror until a run that ends well (docs/architecture.md: a failed run removes
    nothing)."""
    from templates_sync.client import SmartPagesClient, request_retry

    sync.templates_sync_all()
    for template_id in sandbox.template_ids()[:2]:
        sandbox.remove_template(template_id)

    class FailingAfterTheFirstCheck(SmartPagesClient):
        def get_template(self, template_id):
            try:
                return super().get_template(template_id)
            finally:
                sandbox.faults = Faults(error_rate=1.0)  # every request from now on is a 503

    client = FailingAfterTheFirstCheck(
        base_url=settings.SMARTPAGES_API_URL,
        key_id=settings.SMARTPAGES_KEY_ID,
        key_token=settings.SMARTPAGES_KEY_TOKEN,
        retry=request_retry(),
    )
    run = sync.templates_sync_all(client=client)

    assert (run.status, run.removed) == ("failed", 0), run.error
    assert "503" in run.error
    assert not PassTemplate.objects.filter(removed_at__isnull=False).exists()
    sandbox.faults = Faults()
    again = sync.templates_sync_all()
    assert (again.status, again.removed) == ("succeeded", 2)


@pytest.mark.slow  # takes seconds
@pytest.mark.django_db(transaction=True)
def test_a_live_run_waiting_on_slow_removal_checks_is_not_taken_over(sandbox, settings):
    """Each GET of a template that left the list takes longer than a run may stay silent: the run beats while
    it waits, so a sweep running meanwhile leaves it alone and it removes the template itself."""
    settings.RUN_HEARTBEAT_SECONDS = 0.1
    settings.RUN_STALE_SECONDS = 0.5
    sync.templates_sync_all()
    sandbox.remove_template(sandbox.template_ids()[0])
    sandbox.faults = Faults(slow_seconds=1.0)  # the one list page and the one check: a second each

    taken_over, stop = [], threading.Event()

    def sweep_meanwhile():
        try:
            while not stop.wait(0.05):
                if requeued := sync.sync_runs_requeue_stale():
                    taken_over.append(requeued)
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep_meanwhile)
    sweeper.start()
    try:
        run = sync.templates_sync_all()
    finally:
        stop.set()
        sweeper.join()

    assert (run.status, run.removed, taken_over) == ("succeeded", 1, []), run.error
    assert SyncRun.objects.get(pk=run.pk).status == "succeeded"


def test_wrong_credentials_give_a_message_a_person_can_act_on(sandbox, settings):
    settings.SMARTPAGES_KEY_TOKEN = "not-the-token"
    run = sync.templates_sync_all()
    assert run.status == "failed"
    assert run.error == (
        "SmartPages refused the API credentials (401): check SMARTPAGES_KEY_ID and SMARTPAGES_KEY_TOKEN."
    )
    assert "not-the-token" not in run.error


def test_items_moving_between_pages_mark_nothing_removed(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 10
    sync.templates_sync_all()
    sandbox.faults = Faults(mutate_after_page=0)

    run = sync.templates_sync_all()

    assert run.status == "succeeded"
    assert run.removed == 0
    assert "no template was marked removed" in run.warning
    assert PassTemplate.objects.filter(removed_at__isnull=False).count() == 0


def test_refreshing_one_template_updates_it_and_a_404_marks_it_removed(sandbox):
    sync.templates_sync_all()
    first, second = sandbox.template_ids()[:2]
    sandbox.update_template(first, description="Uppfærð lýsing")
    sandbox.remove_template(second)

    refreshed = sync.template_refresh(template_id=first)
    missing = sync.template_refresh(template_id=second)

    assert (refreshed.status, refreshed.updated_count) == ("succeeded", 1)
    assert PassTemplate.objects.get(pk=first).description == "Uppfærð lýsing"
    assert (missing.status, missing.removed) == ("succeeded", 1)
    assert PassTemplate.objects.get(pk=second).is_removed


def test_the_sync_command_prints_json_and_fails_with_a_non_zero_exit(sandbox, settings, capsys):
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    call_command("sync_templates", "--json")
    outcome = json.loads(capsys.readouterr().out)
    assert {k: outcome[k] for k in ("status", "created", "updated", "unchanged", "removed", "pages")} == {
        "status": "succeeded",
        "created": 25,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "pages": 1,
    }

    settings.SMARTPAGES_KEY_ID = "nobody"
    with pytest.raises(CommandError, match="check SMARTPAGES_KEY_ID"):
        call_command("sync_templates", "--json")
    assert json.loads(capsys.readouterr().out)["status"] == "failed"


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_syncs_run_one_and_record_the_other_as_skipped(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 5
    sandbox.faults = Faults(slow_seconds=0.15)  # keeps the first run busy while the second arrives
    barrier = threading.Barrier(2)
    outcomes = []

    def trigger():
        try:
            barrier.wait()
            outcomes.append(sync.templates_sync_all().status)
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["skipped", "succeeded"]
    assert SyncRun.objects.get(status="skipped").warning == "Skipped: another full sync was already running."
    assert PassTemplate.objects.count() == 25


@pytest.mark.django_db(transaction=True)
def test_an_abandoned_run_does_not_block_the_next_one_forever(sandbox, settings, own_queue):
    from datetime import timedelta

    from django.utils import timezone

    SyncRun.objects.create(trigger="beat", status="running", started_at=timezone.now() - timedelta(hours=2))
    run = sync.templates_sync_all()
    assert run.status == "succeeded"
    # The dead run was queued again (background.recovery.requeue_stale) before this one took the lock; its task
    # went to the test's own queue, where the session's worker cannot run it.
    assert SyncRun.objects.get(trigger="beat").status == "queued"


def test_input_fields_are_read_from_raw_in_upstream_order_once_per_identifier():
    raw = {
        "inputFields": [
            {"identifier": "email", "label": "Netfang", "format": "EMAIL", "type": "ISSUER", "isMandatory": True},
            "not a field",
            {"label": "no identifier"},
            {"identifier": "email", "label": "Again"},
            {"identifier": 7, "label": None, "description": "A number as identifier", "isUnique": 1},
            {"identifier": "y" * 250, "format": "SIGNATURE"},  # cut to what the portal's columns hold
        ]
    }
    assert input_fields_of(raw) == (
        InputField(position=0, identifier="email", label="Netfang", format="EMAIL", type="ISSUER", is_mandatory=True),
        InputField(position=4, identifier="7", description="A number as identifier", is_unique=True),
        InputField(position=5, identifier="y" * 200, format="SIGNATURE"),
    )
    assert [f.format_label for f in input_fields_of(raw)] == ["Email", "", "SIGNATURE"]
    assert input_fields_of({}) == input_fields_of({"inputFields": "oops"}) == input_fields_of([]) == ()
    assert str(input_fields_of(raw)[0]) == "Netfang" and str(input_fields_of(raw)[1]) == "7"


def test_the_postgresql_writer_stores_exactly_what_the_orm_writer_stores(sandbox):
    """SQLite (make run) writes through the ORM, PostgreSQL through COPY and json_to_recordset: same rows."""
    from django.utils import timezone

    now = timezone.now()
    tricky = "tab\there, line\nbreak\r\nand a back\\slash \\N \\t"  # what COPY's text format must escape
    sandbox.update_template(sandbox.template_ids()[3], name=tricky, description=tricky)
    items = [sandbox.get_template(template_id) for template_id in sandbox.template_ids()]
    items[3]["inputFields"][0].update(label=tricky, description=tricky, identifier="back\\slash\tand tab")
    templates = []
    for item in items:
        digest, dumped = rows._fingerprint(item)
        templates.append(rows._mirror_row(item, template_id=rows._canonical_id(item), digest=digest, dumped=dumped))

    def snapshot():
        return list(PassTemplate.objects.order_by("id").values())

    writing._write_with_orm(templates, now=now)
    through_orm = snapshot()
    PassTemplate.objects.all().delete()
    writing._write_with_postgresql(templates, changed=[], now=now)  # COPY
    assert snapshot() == through_orm
    writing._write_with_postgresql(templates, changed=[template[0] for template in templates], now=now)  # upsert
    assert snapshot() == through_orm
    assert len(through_orm) == 25
    mirrored = PassTemplate.objects.get(pk=sandbox.template_ids()[3])
    assert mirrored.name == tricky and mirrored.raw == items[3]
    tricky_field = mirrored.input_fields[0]
    assert (tricky_field.identifier, tricky_field.label, tricky_field.description) == (
        "back\\slash\tand tab",
        tricky,
        tricky,
    )


@pytest.mark.django_db(transaction=True)
def test_pages_that_queue_up_for_the_writer_thread_are_all_written_and_counted(sandbox):
    """Pages put faster than the writer thread writes them go into one transaction together: every
    template and count still arrives, new and changed templates alike."""
    from django.utils import timezone

    items = [sandbox.get_template(template_id) for template_id in sandbox.template_ids()]
    writing._store(items[:5], known=writing._mirror_state(), now=timezone.now())  # five known, to be changed
    for item in items[:5]:
        item["name"] = "Changed " + str(item["name"])
    known = writing._mirror_state()

    with sync.PageWriter() as writer:
        assert writer._thread is not None  # on its own connection, as in a worker
        for start in range(0, 25, 5):
            now = timezone.now()
            writer.put(writing._prepare(items[start : start + 5], known=known, now=now), now=now)

    assert (writer.created, writer.updated, writer.unchanged, writer.skipped) == (20, 5, 0, [])
    assert PassTemplate.objects.count() == 25
    assert PassTemplate.objects.filter(name__startswith="Changed ").count() == 5
    assert {str(t.pk): t.raw for t in PassTemplate.objects.all()} == {item["id"]: item for item in items}


def test_the_sync_command_refreshes_one_template_and_rejects_a_non_uuid(sandbox, capsys):
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    template_id = sandbox.template_ids()[0]
    call_command("sync_templates", "--template", template_id, "--json")
    assert json.loads(capsys.readouterr().out)["created"] == 1
    assert PassTemplate.objects.filter(pk=template_id).exists()
    with pytest.raises(CommandError, match="needs a template UUID"):
        call_command("sync_templates", "--template", "not-a-uuid")


def test_a_full_sync_and_a_refresh_writing_the_same_new_template_do_not_collide(sandbox):
    """A refresh can store a template a running full sync still takes for new (it read the mirror first)."""
    from django.utils import timezone

    template_id = sandbox.template_ids()[0]
    known_before = writing._mirror_state()  # the full run's view: the template is not there yet
    sync.template_refresh(template_id=template_id)  # meanwhile, a refresh stores it

    page = writing._store([sandbox.get_template(template_id)], known=known_before, now=timezone.now())

    assert (page.created, page.updated, page.unchanged) == (1, 0, 0)
    upstream_fields = [f["identifier"] for f in sandbox.get_template(template_id)["inputFields"]]
    assert [f.identifier for f in PassTemplate.objects.get(pk=template_id).input_fields] == upstream_fields


def test_a_repeated_input_field_identifier_is_kept_in_raw_but_read_once(sandbox):
    template_id = sandbox.template_ids()[0]
    fields = sandbox.get_template(template_id)["inputFields"]
    sandbox.update_template(template_id, inputFields=[*fields, dict(fields[0], label="Again")])

    run = sync.templates_sync_all()

    assert run.status == "succeeded"
    template = PassTemplate.objects.get(pk=template_id)
    assert len(template.raw["inputFields"]) == len(fields) + 1
    assert [f.identifier for f in template.input_fields] == [f["identifier"] for f in fields]
    assert template.input_fields[0].label == fields[0]["label"]  # the first of the two wins


def test_a_refresh_asked_for_by_a_refused_claim_is_recorded_as_such(sandbox):
    from templates_sync.tasks import refresh_template

    template_id = sandbox.template_ids()[0]
    assert refresh_template(template_id, trigger=SyncRun.Trigger.CLAIM) == "succeeded"
    run = SyncRun.objects.get()
    assert (run.kind, run.trigger, run.get_trigger_display()) == ("single", "claim", "Claim refused upstream")


# --- hostile upstream data ----------------------------------------------------------------------------------
def test_hostile_upstream_data_is_made_to_fit_or_skipped_and_the_run_finishes(sandbox, settings):
    from sandbox import HOSTILE_TEMPLATE_ID, HOSTILE_UNREADABLE_ID

    settings.SMARTPAGES_PAGE_SIZE = 10
    sandbox.faults = Faults(hostile_items=True)

    run = sync.templates_sync_all()

    assert run.status == "succeeded", run.error
    assert (run.created_count, run.pages, run.removed) == (26, 3, 0)  # 25 + the cleaned hostile template
    assert SyncRun.objects.get(pk=run.pk).total_items == 2**31 - 1  # 10**11 announced, held at the column's bound
    assert run.warning.startswith("3 template(s) SmartPages sent could not be stored and were skipped:")
    assert "'not-a-uuid'" in run.warning and "'42'" in run.warning and HOSTILE_UNREADABLE_ID in run.warning
    assert "no template was marked removed" in run.warning  # 10**11 announced, 29 read
    assert not PassTemplate.objects.filter(pk=HOSTILE_UNREADABLE_ID).exists()

    hostile = PassTemplate.objects.get(pk=HOSTILE_TEMPLATE_ID)
    assert hostile.name == ("Hostile " + "N" * 5000)[:500]
    assert hostile.description == "Line oneline two"
    assert (hostile.status, hostile.type) == ("S" * 16, ("MEMBER" * 7)[:32])
    assert (hostile.stamps, hostile.kennitala_age_verification) == (2**31 - 1, -(2**31))
    assert hostile.pass_price == Decimal("999999999999.99")
    assert hostile.issue_refusal_reason  # still a sold pass, however large its price
    assert hostile.when_last_update_sent is None
    assert hostile.raw["nested"] == {"key": ["value"]} and hostile.raw["stamps"] == 10**11
    fields = [(f.identifier, f.label, f.format) for f in hostile.input_fields]
    assert fields == [("x" * 200, "A", "TEXT" * 10)]  # both identifiers are the same once cut to 200; NUL gone

    again = sync.templates_sync_all()  # the lock was released; nothing changed, so nothing is written
    assert (again.status, again.created_count, again.updated_count, again.unchanged) == ("succeeded", 0, 0, 26)
    assert not SyncRun.objects.filter(status="running").exists()


def test_a_refresh_of_a_template_that_cannot_be_stored_fails_with_the_reason(sandbox):
    template_id = sandbox.template_ids()[1]
    sandbox.update_template(template_id, passPrice="a thousand krónur")

    run = sync.template_refresh(template_id=template_id)

    assert run.status == "failed"
    assert run.error == f"Template {template_id} has a passPrice the mirror cannot read ('a thousand krónur')."


def _sync_while(*, pages: int, action) -> SyncRun:
    """A full sync, while another thread does `action()` once the run has read `pages` pages."""

    def act_mid_way():
        try:
            wait_for(lambda: SyncRun.objects.filter(status="running", pages__gte=pages).exists(), message="pages")
            action()
        finally:
            connection.close()

    thread = threading.Thread(target=act_mid_way)
    thread.start()
    try:
        return sync.templates_sync_all()
    finally:
        thread.join()


@pytest.mark.slow  # takes seconds
@pytest.mark.django_db(transaction=True)
def test_a_database_connection_killed_mid_run_still_ends_the_run_and_releases_the_lock(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 5
    sandbox.faults = Faults(slow_seconds=0.3, scope="templates")
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid

    def kill_the_sync_connection():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    run = _sync_while(pages=2, action=kill_the_sync_connection)

    stored = SyncRun.objects.get(pk=run.pk)
    assert stored.status == "failed"
    assert stored.error.startswith("The connection to the database was lost during the run")
    assert stored.finished_at is not None
    assert sync.templates_sync_all().status == "succeeded"  # the lock was released


# --- heartbeat and take-over ----------------------------------------------------------------------------
def _running_run(*, beat_seconds_ago: float, **values) -> SyncRun:
    from datetime import timedelta

    from django.utils import timezone

    beat = timezone.now() - timedelta(seconds=beat_seconds_ago)
    return SyncRun.objects.create(trigger="beat", status="running", started_at=beat, heartbeat_at=beat, **values)


def test_a_stale_run_is_queued_again_and_a_new_run_starts_at_once(sandbox, settings):
    settings.RUN_STALE_SECONDS = 120
    dead = _running_run(beat_seconds_ago=121, attempt=1)

    run = sync.templates_sync_all()

    assert run.status == "succeeded"
    dead.refresh_from_db()
    assert (dead.status, dead.attempt, dead.error) == ("queued", 1, "")
    # Its task, sent again, finds the lock free by then and runs it under the next attempt.
    assert sync.templates_sync_all(run=dead).status == "succeeded"
    dead.refresh_from_db()
    assert (dead.status, dead.attempt, dead.unchanged) == ("succeeded", 2, 25)


def test_a_run_whose_worker_still_beats_holds_the_lock(sandbox, settings):
    settings.RUN_STALE_SECONDS = 120
    _running_run(beat_seconds_ago=60)
    assert sync.templates_sync_all().status == "skipped"


def test_a_task_delivered_again_while_its_worker_beats_leaves_the_run_alone(sandbox, settings):
    from templates_sync.tasks import sync_all_templates

    settings.RUN_STALE_SECONDS = 120
    run = _running_run(beat_seconds_ago=5, pages=7, total_pages=50)

    assert sync_all_templates(run_id=run.pk) == "running"
    run.refresh_from_db()
    assert (run.status, run.pages) == ("running", 7)


def test_a_run_queued_again_after_its_worker_died_starts_its_counts_afresh_under_the_next_attempt(sandbox, settings):
    from background.tasks import run_sweep
    from templates_sync.tasks import sync_all_templates

    settings.SMARTPAGES_PAGE_SIZE = 10
    settings.RUN_STALE_SECONDS = 120
    run = _running_run(beat_seconds_ago=300, pages=71, total_pages=50, created_count=700, unchanged=9, attempt=1)
    assert sync_all_templates(run_id=run.pk) == "running"  # still RUNNING: only the sweep hands it on

    assert run_sweep("sync-runs-stale") == 1
    assert sync_all_templates(run_id=run.pk) == "succeeded"
    run.refresh_from_db()
    assert (run.pages, run.total_pages, run.created_count, run.unchanged, run.attempt) == (3, 3, 25, 0, 2)


def test_the_sweep_queues_stale_runs_again_and_sends_their_tasks(sandbox, settings, django_capture_on_commit_callbacks):
    from background.tasks import run_sweep

    settings.RUN_STALE_SECONDS = 120
    full = _running_run(beat_seconds_ago=200)
    single = _running_run(beat_seconds_ago=200, kind="single", template_id=sandbox.template_ids()[0])
    alive = _running_run(beat_seconds_ago=1, kind="single", template_id=sandbox.template_ids()[1])

    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert run_sweep("sync-runs-stale") == 2

    assert len(sent) == 2  # each run's own task, sent again after commit
    statuses = dict(SyncRun.objects.values_list("pk", "status"))
    assert (statuses[full.pk], statuses[single.pk], statuses[alive.pk]) == ("queued", "queued", "running")
    assert SyncRun.objects.count() == 3  # no fresh run: the same rows go on
    assert run_sweep("sync-runs-stale") == 0  # each death is taken over once


def test_a_sync_that_killed_its_worker_max_attempts_times_fails_instead_of_running_again(sandbox, settings):
    """background.recovery's one attempts rule: a run taken more than MAX_ATTEMPTS times (each take after the
    first followed a worker that died in it) fails with the reason; the schedule's next run tries again."""
    from background.recovery import MAX_ATTEMPTS
    from background.tasks import run_sweep

    settings.RUN_STALE_SECONDS = 120
    last_chance = _running_run(beat_seconds_ago=200, attempt=MAX_ATTEMPTS - 1)
    assert run_sweep("sync-runs-stale") == 1
    assert sync.templates_sync_all(run=SyncRun.objects.get(pk=last_chance.pk)).status == "succeeded"

    doomed = _running_run(beat_seconds_ago=200, attempt=MAX_ATTEMPTS)
    assert run_sweep("sync-runs-stale") == 1
    run = sync.templates_sync_all(run=SyncRun.objects.get(pk=doomed.pk))

    assert (run.status, run.attempt) == ("failed", MAX_ATTEMPTS + 1)
    assert run.error == (
        f"Not done: a worker stopped {MAX_ATTEMPTS} times while running this sync; the schedule's next run tries again."
    )
    assert not SyncRun.objects.filter(status__in=["queued", "running"]).exists()  # the lock is free
    assert sync.templates_sync_all().status == "succeeded"


@pytest.mark.slow  # takes seconds
@pytest.mark.django_db(transaction=True)
def test_a_run_queued_again_and_taken_by_another_worker_stops_the_first_one(sandbox, settings):
    """A worker cut off (not dead) finds at its next beat that the run is another attempt's: it stops writing."""
    settings.SMARTPAGES_PAGE_SIZE = 5
    sandbox.faults = Faults(slow_seconds=0.3, scope="templates")

    def requeued_and_taken_elsewhere():
        SyncRun.objects.filter(status="running").update(status="queued")
        SyncRun.objects.filter(status="queued").update(status="running", attempt=F("attempt") + 1)

    run = _sync_while(pages=1, action=requeued_and_taken_elsewhere)

    stored = SyncRun.objects.get(pk=run.pk)
    assert (stored.status, stored.attempt) == ("running", 2)  # left to the attempt that holds it
    assert run.pages < 5


@pytest.mark.slow  # takes seconds
def test_a_run_beats_while_it_waits_for_a_slow_page(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 100
    settings.RUN_HEARTBEAT_SECONDS = 0.2
    sandbox.faults = Faults(slow_seconds=1.5, scope="templates")

    with CaptureQueriesContext(connection) as queries:
        run = sync.templates_sync_all()

    assert (run.status, run.pages) == ("succeeded", 1)
    beat_sql = 'UPDATE "templates_sync_syncrun" SET "heartbeat_at"'
    beats = [q for q in queries.captured_queries if q["sql"].startswith(beat_sql)]
    assert len(beats) >= 4  # one every 0.2 s of the 1.5 s wait, besides the progress saves


@pytest.mark.slow  # takes seconds
@pytest.mark.django_db(transaction=True)
def test_a_run_taken_over_while_it_works_stops_writing(sandbox, settings):
    settings.SMARTPAGES_PAGE_SIZE = 5
    sandbox.faults = Faults(slow_seconds=0.3, scope="templates")

    def take_over():
        SyncRun.objects.filter(status="running").update(status="failed", error="Taken over by the test.")

    run = _sync_while(pages=1, action=take_over)

    assert (run.status, run.error) == ("failed", "Taken over by the test.")
    assert run.pages < 5


def test_a_template_listed_twice_in_other_spellings_is_mirrored_once_and_the_run_succeeds(sandbox, settings):
    """SmartPages listing one template again with its id in upper case (on a later page, and twice on one
    page) is the same template: read once, as first listed, whichever pages the writer joins."""
    settings.SMARTPAGES_PAGE_SIZE = 10
    first, other = sandbox.template_ids()[:2]
    original = sandbox.get_template(first)
    sandbox.add_template({**original, "id": first.upper(), "name": "Shouted copy"})
    sandbox.add_template({**sandbox.get_template(other), "id": other.upper(), "name": "Shouted copy"})

    run = sync.templates_sync_all()

    assert run.status == "succeeded", run.error
    assert (run.created_count, run.updated_count, run.removed) == (25, 0, 0)
    assert PassTemplate.objects.count() == 25
    assert not PassTemplate.objects.filter(name="Shouted copy").exists()
    assert PassTemplate.objects.get(pk=first).name == original["name"]
    assert "Upstream changed" not in run.warning  # every listed item was read

    again = sync.templates_sync_all()
    assert (again.status, again.created_count, again.updated_count, again.unchanged) == ("succeeded", 0, 0, 25)


@pytest.mark.django_db(transaction=True)
def test_the_writer_puts_the_thread_switch_interval_back_even_when_the_run_is_taken_over_at_the_end():
    """The writer thread shortens the GIL's turns for the run; a heartbeat that finds the run taken over
    while the last pages are written must not leave the worker process with the short turns for good."""
    import sys
    import time

    from django.utils import timezone

    before = sys.getswitchinterval()

    def taken_over():
        raise sync.RunTakenOver("taken over while the last pages were written")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(writing, "_write", lambda page, *, now: time.sleep(0.5))
        with pytest.raises(sync.RunTakenOver), sync.PageWriter(idle=taken_over, idle_seconds=0.05) as writer:
            assert sys.getswitchinterval() < before
            writer.put(sync.PreparedPage(), now=timezone.now())
    assert sys.getswitchinterval() == before


def test_raw_reads_back_as_it_was_stored_whatever_json_it_holds():
    """raw is PostgreSQL json, which psycopg parses itself: a document that is a string stays a string."""
    import uuid

    from django.utils import timezone

    now = timezone.now()
    for document in ({"name": "Jón", "n": [1, 2.5, None]}, "123", '{"looks": "like json"}', ["a"], 7):
        template = PassTemplate.objects.create(
            id=uuid.uuid4(),
            type="MEMBER",
            status="ACTIVE",
            raw=document,
            content_hash="-",
            first_seen_at=now,
            changed_at=now,
        )
        assert PassTemplate.objects.get(pk=template.pk).raw == document


@pytest.mark.slow  # takes seconds
@pytest.mark.django_db(transaction=True)
def test_going_back_before_0008_rebuilds_the_input_field_rows_from_raw(sandbox):
    """Migration 0008 drops the input fields' table; going back must not leave it empty, as the old sync would
    take every template for unchanged and never fill it."""
    from django.db.migrations.executor import MigrationExecutor

    sync.templates_sync_all()
    expected = {
        (str(template.pk), field.position, field.identifier, field.label, field.format, field.is_mandatory)
        for template in PassTemplate.objects.all()
        for field in template.input_fields
    }
    try:
        MigrationExecutor(connection).migrate([("templates_sync", "0007_raw_kept_as_json_text")])
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT template_id::text, position, identifier, label, format, is_mandatory "
                "FROM templates_sync_templateinputfield"
            )
            assert set(cursor.fetchall()) == expected
        assert len(expected) > 25
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert "templates_sync_templateinputfield" not in connection.introspection.table_names()
