"""The postback log keeps the last `size` entries of each source, in order, whichever way
they arrive: many in one write (only the last `size` of a source are queued) or over
several writes (the table is trimmed after each)."""

from __future__ import annotations

import pytest

from tests.conftest import BackendFactory


@pytest.mark.anyio
async def test_the_log_keeps_the_last_entries_of_each_source(
    storage_url: str, make_backend: BackendFactory
) -> None:
    backend = make_backend(storage_url)
    await backend.outbox.open()
    journal = backend.postback_log(3)
    await journal.open()
    for number in range(7):  # one write: more than the log keeps of "crm"
        journal.record("crm", {"n": number})
    journal.record("lms", {"n": 100})
    await journal.flush()
    assert await journal.backend.last("crm", 10) == [{"n": 4}, {"n": 5}, {"n": 6}]
    for number in range(7, 9):  # a later write: the oldest stored entries make way
        journal.record("crm", {"n": number})
    await journal.close()
    assert await journal.backend.last("crm", 10) == [{"n": 6}, {"n": 7}, {"n": 8}]
    assert await journal.backend.last("crm", 2) == [{"n": 7}, {"n": 8}]
    assert await journal.backend.last("lms", 10) == [{"n": 100}]
