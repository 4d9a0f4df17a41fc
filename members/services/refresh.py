"""The refresh job: the member mirror kept fresh with SmartPages, which never tells the portal when a pass is
voided, redeemed or edited there.

A run reads every member whose pass SmartPages holds (issued or redeemed), stalest first, in chunks of
MEMBER_REFRESH_CHUNK members, each chunk a Celery task, so several workers share the work. Every read waits
for the shared limiter (background.rate_limit): MEMBER_REFRESH_RATE requests per second across all workers
together. Changes land in each member's history (passes.member_apply_pass). The run row holds counts and the
first errors, like a template sync; the last chunk to finish closes it and reconciles the member counts. Each
chunk is a row (MemberRefreshChunk), so the recovery sweep sends again a chunk whose task was lost.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from background.enqueue import enqueue_after_commit
from background.rate_limit import SharedRateLimiter
from background.recovery import MAX_ATTEMPTS, requeue_stale, resend_waiting, take
from templates_sync.client import SmartPagesClient, SmartPagesError, smartpages_client

from ..models import Member, MemberRefreshChunk, MemberRefreshRun
from .counts import template_member_counts_reconcile
from .passes import member_apply_pass, members_changed_by_refresh

logger = logging.getLogger(__name__)

CHUNK_TASK = "members.member_refresh_chunk"
# Members whose pass may still change upstream. A voided pass is final on SmartPages' side.
REFRESHED_STATUSES = (Member.Status.ISSUED, Member.Status.REDEEMED)
ERROR_SAMPLES = 20


def smartpages_rate_limiter() -> SharedRateLimiter:
    """The limiter for reading and writing passes (refresh job, bulk actions): MEMBER_REFRESH_RATE across
    all workers, on the cache Redis (kept apart from the task queue, which a purge empties). Without Redis
    (the embedded mode: one worker) the whole rate applies to this process."""
    cache = settings.CACHES["default"]
    redis_url = cache["LOCATION"] if cache["BACKEND"].endswith("RedisCache") else None
    rate = settings.MEMBER_REFRESH_RATE
    fallback = settings.MEMBER_REFRESH_FALLBACK_RATE if redis_url else rate
    return SharedRateLimiter(name="smartpages-passes", rate=rate, fallback_rate=fallback, redis_url=redis_url)


def member_refresh_run_start(
    *,
    trigger: str,
    template_id: uuid.UUID | None = None,
    user=None,
    inline: bool = False,
    client: SmartPagesClient | None = None,
) -> MemberRefreshRun:
    """Record a run and its chunks, and hand the chunks to the workers (after commit), or run them here with
    `inline` (the command). While another run is running, this one is recorded as SKIPPED."""
    now = timezone.now()
    try:
        with transaction.atomic():
            run = MemberRefreshRun.objects.create(
                status=MemberRefreshRun.Status.RUNNING,
                trigger=trigger,
                template_id=template_id,
                triggered_by=user,
                started_at=now,
                heartbeat_at=now,
            )
    except IntegrityError:
        running = MemberRefreshRun.objects.filter(status=MemberRefreshRun.Status.RUNNING).first()
        return MemberRefreshRun.objects.create(
            status=MemberRefreshRun.Status.SKIPPED,
            trigger=trigger,
            template_id=template_id,
            triggered_by=user,
            started_at=now,
            finished_at=now,
            error=f"Refresh run #{running.pk if running else '?'} was still running; this one was skipped.",
        )
    members = Member.objects.filter(status__in=REFRESHED_STATUSES, pass_id__isnull=False)
    if template_id is not None:
        members = members.filter(template_id=template_id)
    ids = list(members.order_by(F("refreshed_at").asc(nulls_first=True), "id").values_list("id", flat=True))
    size = max(1, settings.MEMBER_REFRESH_CHUNK)
    with transaction.atomic():
        chunks = MemberRefreshChunk.objects.bulk_create(
            (MemberRefreshChunk(run=run, member_ids=ids[start : start + size]) for start in range(0, len(ids), size)),
            batch_size=1000,
        )
        MemberRefreshRun.objects.filter(pk=run.pk).update(total=len(ids), chunks_total=len(chunks))
        run.total, run.chunks_total = len(ids), len(chunks)
        if not chunks:
            _run_finish(run_id=run.pk)
        elif not inline:
            for chunk in chunks:
                _send_chunk(chunk)
    if inline:
        limiter = smartpages_rate_limiter()
        queued = MemberRefreshChunk.objects.filter(
            run=run, run__status=MemberRefreshRun.Status.RUNNING, status=MemberRefreshChunk.Status.QUEUED
        ).order_by("pk")
        with smartpages_client(client) as smartpages:
            while chunk := queued.first():  # with the chunks split off a chunk that ran out of time
                member_refresh_chunk(chunk_id=chunk.pk, client=smartpages, limiter=limiter)
    run.refresh_from_db()
    return run


def member_refresh_chunk(
    *,
    chunk_id: int,
    client: SmartPagesClient | None = None,
    limiter: SharedRateLimiter | None = None,
) -> None:
    """Read one chunk's passes, each after the shared limiter allows it, and add the outcome to the run once.

    A chunk runs again when its worker died (the recovery sweep queued it again): the members that worker
    already found changed (stamped since the run began) are not read again and count as checked and changed
    (their history says so); the others are read again, which SmartPages does not mind and which writes no
    history twice (a member's history holds only real differences). After RUN_SLICE_SECONDS the members not
    yet read become a chunk of their own, sent to a fresh task; this one is counted with what it read."""
    chunk = MemberRefreshChunk.objects.select_related("run").filter(pk=chunk_id).first()
    if chunk is None:
        return
    running = MemberRefreshRun.objects.filter(pk=chunk.run_id, status=MemberRefreshRun.Status.RUNNING)
    beat = take(chunk, among=MemberRefreshChunk.objects.filter(run__in=running), also=running)
    if beat is None:
        return  # taken by another worker already, done, or its run is over
    order = {member_id: n for n, member_id in enumerate(chunk.member_ids)}
    members = sorted(
        Member.objects.filter(pk__in=chunk.member_ids, status__in=REFRESHED_STATUSES)
        .exclude(refreshed_at__gte=chunk.run.started_at)
        .select_related("template"),
        key=lambda m: order[m.pk],
    )
    # Members gone from the refreshed statuses since the run listed them, or read since it began (by an attempt
    # whose worker died, say), are not read again: they count as checked, and as changed when their history
    # says a read found them changed during this run.
    not_read = set(chunk.member_ids) - {member.pk for member in members}
    checked, errors = len(not_read), 0
    changed = len(members_changed_by_refresh(member_ids=not_read, since=chunk.run.started_at)) if not_read else 0
    samples, unchanged = [], []
    if chunk.attempt > MAX_ATTEMPTS:
        # Workers died in this chunk every time: its members are not read, and the run goes on without them.
        message = f"Not read: a worker stopped {MAX_ATTEMPTS} times while reading this member's chunk."
        errors, samples = len(members), [{"member": m.pk, "error": message} for m in members[:ERROR_SAMPLES]]
        members = []
    limiter = limiter or smartpages_rate_limiter()
    # A bounded share per task (RUN_SLICE_SECONDS): the members left when it is spent become a chunk of their
    # own, sent to a fresh task, so a slow SmartPages never runs a task into the soft time limit.
    slice_ends, rest = time.monotonic() + settings.RUN_SLICE_SECONDS, []
    with beat.keep_beating(), smartpages_client(client) as smartpages:
        for n, member in enumerate(members):
            if not beat():
                return  # the sweep gave this chunk to another worker: that one counts it
            if n and time.monotonic() >= slice_ends:
                rest = [m.pk for m in members[n:]]
                break
            limiter.wait()
            try:
                reply = smartpages.get_pass(str(member.pass_id))
            except SmartPagesError as exc:
                errors += 1
                if len(samples) < ERROR_SAMPLES:
                    samples.append({"member": member.pk, "error": str(exc)})
                continue
            checked += 1
            if member_apply_pass(member=member, reply=reply):
                changed += 1
            else:
                unchanged.append(member.pk)
    # One statement for the chunk's unchanged members, not one per member.
    Member.objects.filter(pk__in=unchanged).update(refreshed_at=timezone.now())
    with transaction.atomic():
        if not beat.mine.update(status=MemberRefreshChunk.Status.DONE, heartbeat_at=timezone.now()):
            return  # taken over at the last moment: the attempt that holds it now counts it
        run = MemberRefreshRun.objects.select_for_update().get(pk=chunk.run_id)
        run.checked, run.changed, run.errors = run.checked + checked, run.changed + changed, run.errors + errors
        run.chunks_done += 1
        run.error_samples = (run.error_samples + samples)[:ERROR_SAMPLES]
        if rest:
            left = set(rest)
            chunk.member_ids = [member_id for member_id in chunk.member_ids if member_id not in left]
            MemberRefreshChunk.objects.filter(pk=chunk.pk).update(member_ids=chunk.member_ids)
            _send_chunk(MemberRefreshChunk.objects.create(run=run, member_ids=rest))
            run.chunks_total += 1
        run.save(update_fields=["checked", "changed", "errors", "chunks_total", "chunks_done", "error_samples"])
        if run.chunks_done >= run.chunks_total:
            _run_finish(run_id=run.pk)


def member_refresh_runs_sweep() -> int:
    """A sweep (background.recovery): chunks whose worker stopped beating are queued and sent again, and
    so are the chunks still waiting while their run shows no life for RUN_STALE_SECONDS (their messages were
    lost: the broker was away, or a dead worker held them; or the command running them inline was stopped).
    Returns how many chunks were sent."""
    stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_SECONDS)
    silent_runs = MemberRefreshRun.objects.filter(status=MemberRefreshRun.Status.RUNNING).filter(
        Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    )
    chunks = MemberRefreshChunk.objects.filter(run__status=MemberRefreshRun.Status.RUNNING)
    sent = resend_waiting(chunks.filter(run__in=silent_runs), _send_chunk, stale_seconds=settings.RUN_STALE_SECONDS)
    sent += requeue_stale(chunks, _send_chunk)
    # A silent run with no chunk left to do was recorded before its chunks were rows: nothing can finish it.
    silent_runs.exclude(
        chunks__status__in=[MemberRefreshChunk.Status.QUEUED, MemberRefreshChunk.Status.RUNNING]
    ).update(
        status=MemberRefreshRun.Status.FAILED,
        finished_at=timezone.now(),
        error="Abandoned: its chunks were lost and cannot be sent again.",
    )
    return sent


def _send_chunk(chunk: MemberRefreshChunk) -> None:
    enqueue_after_commit(CHUNK_TASK, chunk.pk)


def _run_finish(*, run_id: int) -> None:
    run = MemberRefreshRun.objects.select_for_update().get(pk=run_id)
    if run.status != MemberRefreshRun.Status.RUNNING:
        return
    all_failed = run.total > 0 and run.errors >= run.total
    run.status = MemberRefreshRun.Status.FAILED if all_failed else MemberRefreshRun.Status.SUCCEEDED
    if all_failed:
        run.error = "No pass could be read from SmartPages: " + (
            run.error_samples[0]["error"] if run.error_samples else ""
        )
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "error", "finished_at"])
    # The kept member counts, corrected after every run (after commit: it locks each template's count row).
    template_ids = [run.template_id] if run.template_id else None
    transaction.on_commit(lambda: template_member_counts_reconcile(template_ids=template_ids))
