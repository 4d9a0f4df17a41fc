"""Writes to the member mirror, one module per concern: `issuing` (the one way a member comes to be, and its
retries), `passes` (actions on an issued pass: void, refresh), `autofill` (the "Auto fill External ID" setting,
its audit and backfill). The refusals they raise, and the audit helper they share, live here.

Network calls to SmartPages never run inside a database transaction: a member is first committed as
PENDING (the unique constraint on (template, external_id) decides races), then the pass is created
upstream, then the outcome is written in a second short transaction.
"""

from __future__ import annotations

from collections.abc import Mapping


class MemberError(Exception):
    """A refusal a person can act on; `str(error)` is a sentence fit for a page."""


class IssueRefused(MemberError):
    """The template cannot issue passes through the portal (voided, issuing disabled, sold, …)."""


class InvalidMemberValues(MemberError):
    def __init__(self, errors: Mapping[str, str]):
        super().__init__(" ".join(errors.values()))
        self.errors = dict(errors)


class UniqueValuesTaken(InvalidMemberValues):
    """Valid values of unique (`isUnique`) fields that another member of the template already holds."""


class AutofillSettingError(MemberError):
    pass


def acting_user(user):
    """The person behind an action for audit columns; None for the anonymous holder, a task or a command."""
    return user if getattr(user, "is_authenticated", False) else None
