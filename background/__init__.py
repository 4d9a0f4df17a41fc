"""Shared machinery for recorded background work: runs and their heartbeat, take-over and requeue (recovery),
sending a task after commit (enqueue), the shared rate limiter, and the recovery sweep's tasks.

It sits beneath every product app and imports none of them: apps name their sweeps in settings.RECOVERY_SWEEPS.
"""
