"""Short links: made with a chunk's rows, stored in one COPY per chunk, looked up by the public /s/ page.

A short link stands for the row's long token, stored beside its code (links.models.ShortLink): the code
opens exactly what the long link opens (claim page, one pass per row, autofill, expiry), because the claim
page is handed that very token.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from ..models import LinkChunk, ShortLink
from ..rows import Row, RowRules
from ..short_codes import is_code, new_code, stretch

SHORT_PATH = "/s/"


class ShortLinkMaker:
    """Makes a chunk's short links in place of its long ones, keeping (code, row, token) until `store`."""

    def __init__(self, chunk: LinkChunk, rules: RowRules) -> None:
        self.batch_id = chunk.batch_id
        self.long_link = rules.link
        self.prefix = len(rules.base_url)
        self.base = settings.PUBLIC_BASE_URL.rstrip("/") + SHORT_PATH
        self.made: list[str] = []  # COPY lines, made as the rows are
        self.lead = stretch(chunk.pk)  # the first characters of every code of this chunk (links.short_codes)

    @classmethod
    def for_chunk(cls, chunk: LinkChunk, rules: RowRules) -> ShortLinkMaker | None:
        return cls(chunk, rules) if chunk.batch.short_links else None

    def link(self, row: Row) -> str:
        token = self.long_link(row)[self.prefix :]
        code = new_code(self.lead)
        # Codes and tokens are letters, digits, "-" and "_": nothing in a line needs COPY's escaping.
        self.made.append(f"{code}\t{self.batch_id}\t{row.number}\t{token}\n")
        return self.base + code

    def store(self) -> None:
        """Write the chunk's short links (in the transaction that marks the chunk done, so a chunk made twice
        leaves only the codes of the output that was kept)."""
        if not self.made:
            return
        # In code order (the lines start with the code), all in the chunk's own stretch of the index, which no
        # recent chunk wrote to: the primary key's entries go in as one walk there instead of into one 62nd of
        # an index that grows with every campaign (the sort: 0.4 CPU-s per million; bench/README.md, short links).
        self.made.sort()
        table = ShortLink._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # The chunk's transaction need not wait for its WAL to reach the disk: a crash before it does
                # loses the whole transaction (these codes and the chunk's "done" together), and the sweep makes
                # the chunk again; nothing was handed out meanwhile.
                cursor.execute("SET LOCAL synchronous_commit = off")
                with (
                    connection.wrap_database_errors,
                    cursor.copy(f"COPY {table} (code, batch_id, row, token) FROM STDIN") as copy,
                ):
                    copy.write("".join(self.made))
            else:
                lines = (line.rstrip("\n").split("\t") for line in self.made)
                cursor.executemany(
                    f"INSERT INTO {table} (code, batch_id, row, token) VALUES (%s, %s, %s, %s)",
                    [(code, int(batch), int(row), token) for code, batch, row, token in lines],
                )
        self.made = []


def short_link_token(*, code: str) -> str | None:
    """The long token a short code stands for; None for a malformed or unknown code (one 404 for both)."""
    if not is_code(code):
        return None
    return ShortLink.objects.filter(code=code).values_list("token", flat=True).first()
