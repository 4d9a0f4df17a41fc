"""Opens of claim pages: the first GET of each batch row's link by a person's browser, for the batch funnel.

Recorded by (batch, row) from the decoded link, never the token. Not counted: HEAD requests and the fetches
of known link-preview agents and mail scanners, which open links before (or without) a person doing so.
A short list of their User-Agent marks rather than a crawler-pattern library: those libraries list every
crawler (hundreds of regular expressions tried on every claim page), while what matters here is the
few agents that unfurl links sent in messages; a search crawler never sees a holder's link.
"""

from __future__ import annotations

import re

from django.db import connection
from django.utils import timezone

from ..models import LinkOpen
from ..tokens import LinkPayload

# Link unfurlers of chat apps and social sites (iMessage sends "facebookexternalhit … Twitterbot"), mail
# link scanners and previewers, and generic fetchers that are never a person's browser. In-app browsers of
# the same apps (Instagram, Snapchat, Pinterest …) are people and are not matched.
PREVIEW_AGENTS = re.compile(
    r"facebookexternalhit|facebot|twitterbot|slackbot|slack-imgproxy|linkedinbot|whatsapp|telegrambot|discordbot"
    r"|skypeuripreview|microsoft office|ms-office|outlook|bingpreview|googlebot|google-inspectiontool"
    r"|applebot|embedly|redditbot|vkshare|mattermost|rocket\.chat"
    r"|mimecast|proofpoint|barracuda|safelinks|symantec|forcepoint|trendmicro|bitdefender"
    r"|curl/|wget/|python-requests|python-urllib|go-http-client|okhttp|headlesschrome|preview|bot\b|crawler|spider",
    re.IGNORECASE,
)


def is_preview_agent(user_agent: str) -> bool:
    """Whether a request's User-Agent is a link previewer or scanner rather than a person's browser. An empty
    agent counts as one: every browser sends one."""
    return not user_agent or bool(PREVIEW_AGENTS.search(user_agent))


def link_open_record(*, payload: LinkPayload, method: str, user_agent: str) -> bool:
    """Record the first open of the payload's batch row; True when this was it. One INSERT that does nothing
    for a row already opened (a unique constraint decides races between two first opens)."""
    if method != "GET" or payload.batch_id is None or payload.row is None or is_preview_agent(user_agent):
        return False
    table = LinkOpen._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (batch_id, row, at) VALUES (%s, %s, %s) ON CONFLICT (batch_id, row) DO NOTHING",
            [payload.batch_id, payload.row, timezone.now()],
        )
        return cursor.rowcount == 1
