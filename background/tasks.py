"""The recovery sweep's Celery entry points: thin, they call background.recovery."""

from celery import shared_task

from . import recovery


@shared_task(name="background.sweep_recorded_work", ignore_result=True)
def sweep_recorded_work() -> int:
    """Beat, every SWEEP_INTERVAL: one task per recovery sweep, each sending again the work its app lost."""
    return recovery.sweeps_send_all()


@shared_task(name=recovery.SWEEP_TASK, ignore_result=True)
def run_sweep(name: str):
    return recovery.sweep_run(name)


# The names these tasks had while they lived in templates_sync, so that messages queued (and a beat schedule
# still running) before a deploy are run, not dropped as unregistered. Remove after one release.
shared_task(name="templates_sync.sweep_recorded_work", ignore_result=True)(sweep_recorded_work.run)
shared_task(name="templates_sync.run_sweep", ignore_result=True)(run_sweep.run)
