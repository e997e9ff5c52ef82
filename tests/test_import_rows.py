"""File imports, row by row: readers, columns, the seed's rules, grouping, the report.

Every test writes its own file and imports it into a SQLite outbox of its own, then reads
back exactly what would be sent.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli.import_file import import_file
from gateway.core.event import Event
from gateway.ingest.leads import lead_memory
from gateway.ingest.sources.imports.options import ImportOptions
from gateway.ingest.sources.imports.readers import open_binary
from gateway.ingest.sources.imports.rules import import_event_id
from gateway.ingest.sources.imports.summary import Rejection, ReportWriter, Summary
from gateway.storage.backend import open_backend
from gateway.storage.leads import LeadContext
from gateway.storage.outbox.sqlite import SqliteOutbox
from tests.conftest import TOKEN, SettingsFactory

pytestmark = pytest.mark.anyio
OFFLINE = "7301234567890123456"
CRM = "7301234567890123457"
WEB = "CWEBPIXEL0001"
NOW = int(time.time())
ALICE = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
ALICE_PHONE = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
Imported = tuple[Summary, list[Event], str]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def run_import(make_settings: SettingsFactory, tmp_path: Path) -> Callable[..., Any]:
    """Write `content` to a file, import it, return (summary, stored events, report)."""
    counter = iter(range(1000))

    async def run(content: str | bytes, *, name: str = "rows.csv", **options: Any) -> Imported:
        number = next(counter)
        store = options.pop("outbox", number)
        settings = make_settings(
            pixels=[
                {"id": OFFLINE, "access_token": TOKEN, "event_source": "offline"},
                {"id": CRM, "access_token": TOKEN, "event_source": "crm"},
                {"id": WEB, "access_token": TOKEN},
            ],
            outbox={"url": f"sqlite:///{tmp_path}/outbox-{store}.sqlite3"},
            imports={"chunk_rows": options.setdefault("chunk_rows", 1000)},
            default_phone_region=options.pop("region", "US"),
            **options.pop("settings", {}),
        )
        path = tmp_path / f"{number}-{name}"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        options.setdefault("pixel", OFFLINE)
        report = io.StringIO(newline="")
        with open_binary(str(path)) as binary:
            summary = await import_file(
                settings, ImportOptions(**options), binary, report=ReportWriter(report)
            )
        outbox = SqliteOutbox(settings.outbox.url[len("sqlite:///") :], exclusive=False)
        await outbox.open()
        try:
            events = [c.decode() for c in await outbox.claim(1_000_000, time.time() + 1)]
            await outbox.release_leases()  # a later import into the same outbox sees them all
        finally:
            await outbox.close()
        return summary, events, report.getvalue()

    return run


def csv_of(*rows: str, header: str = "email,phone,event,timestamp") -> str:
    return "\n".join([header, *rows]) + "\n"


MOMENT = (NOW - 3 * 86400) // 3600 * 3600
ISO = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(MOMENT))
PARIS = time.strftime("%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(MOMENT + 3600))


@pytest.mark.parametrize(
    "stamp",
    [f"{ISO}Z", PARIS, ISO.replace("T", " "), str(MOMENT), str(MOMENT * 1000), f"{MOMENT}.9"],
)
async def test_each_timestamp_form_is_unix_seconds(run_import: Any, stamp: str) -> None:
    summary, events, _ = await run_import(csv_of(f"alice@example.com,,Purchase,{stamp}"))
    assert [e.event_time for e in events] == [MOMENT], summary.rejected


async def test_phones_become_e164_and_digests_pass_through(run_import: Any) -> None:
    content = csv_of(
        f" ALICE@example.com ,(213) 373-4253,Purchase,{NOW - 60}",
        f"{ALICE.upper()},{ALICE_PHONE},Purchase,{NOW - 60}",
        f"bob@example.com,+44 20 7946 0958,Purchase,{NOW - 60}",
    )
    _, events, _ = await run_import(content)
    users = [dict(e.user) for e in events]
    assert users[0] == {"email": [sha("alice@example.com")], "phone": [ALICE_PHONE]}
    assert users[1] == {"email": [ALICE], "phone": [ALICE_PHONE]}  # never hashed twice
    assert users[2]["phone"] == [sha("+442079460958")]
    assert users[0]["email"] == [ALICE.replace(ALICE, sha("alice@example.com"))]


async def test_the_default_region_reads_national_numbers(run_import: Any) -> None:
    content = csv_of(f",030 1234567,Purchase,{NOW - 60}")
    _, berlin, _ = await run_import(content, region="DE")
    assert berlin[0].user["phone"] == [sha("+49301234567")]
    _, elsewhere, _ = await run_import(content, region="US")
    assert elsewhere[0].user["phone"] != [sha("+49301234567")]


@pytest.mark.parametrize(
    ("age_days", "window", "kept"),
    [(27, 28, True), (29, 28, False), (9, 10, True), (11, 10, False)],
)
async def test_events_older_than_the_window_are_rejected_and_reported(
    run_import: Any, age_days: int, window: int, kept: bool
) -> None:
    content = csv_of(
        f"alice@example.com,,Purchase,{NOW - 60}",
        f"bob@example.com,,Purchase,{NOW - age_days * 86400}",
    )
    _, events, report = await run_import(content, max_age_days=window)
    assert len(events) == (2 if kept else 1)
    if not kept:
        assert f'3,timestamp,"is older than {window} days' in report
        assert "bob" not in report


async def test_the_event_id_is_a_stable_hash_of_email_phone_event_and_time(
    run_import: Any,
) -> None:
    content = csv_of(
        f"Alice@Example.com,(213) 373-4253,Purchase,{NOW - 60}",
        f"alice@example.com,+1 213 373 4253,Purchase,{NOW - 60}",
        f"alice@example.com,+1 213 373 4253,Lead,{NOW - 60}",
        f"bob@example.com,+1 213 373 4253,Purchase,{NOW - 60}",
    )
    _, first, _ = await run_import(content)
    _, second, _ = await run_import(content)
    ids = [e.event_id for e in first]
    assert ids == [e.event_id for e in second]  # a re-import: TikTok deduplicates
    assert ids[0] == ids[1]  # the same person, spelt differently
    assert len({ids[1], ids[2], ids[3]}) == 3
    user = {"email": [sha("alice@example.com")], "phone": [ALICE_PHONE]}
    assert ids[0] == import_event_id("Purchase", NOW - 60, user, {}, {})
    assert all(len(i) == 32 for i in ids)


async def test_an_event_id_column_is_kept(run_import: Any) -> None:
    content = csv_of(
        f"a@example.com,,Purchase,{NOW - 60},order-1", header="email,phone,event,timestamp,event_id"
    )
    _, events, _ = await run_import(content)
    assert events[0].event_id == "order-1"


async def test_order_lines_become_one_event_worth_the_sum_of_price_times_quantity(
    run_import: Any,
) -> None:
    header = "email,event,timestamp,order_id,content_id,price,quantity"
    content = csv_of(
        f"a@example.com,Purchase,{NOW - 60},o-1,SKU1,0.1,3",
        f"a@example.com,Purchase,{NOW - 60},o-1,SKU2,2.5,2",
        f"b@example.com,Purchase,{NOW - 60},o-2,SKU1,10,1",
        f"a@example.com,Purchase,{NOW - 60},o-1,SKU3,1,1",
        header=header,
    )
    _, events, _ = await run_import(content, group_by_order=True, currency="EUR")
    assert len(events) == 3  # o-1 twice: its lines are not consecutive
    first = events[0].properties
    assert first["value"] == 5.3 and first["currency"] == "EUR"
    assert [c["content_id"] for c in first["contents"]] == ["SKU1", "SKU2"]
    assert events[1].properties["value"] == 10
    _, ungrouped, _ = await run_import(content, currency="EUR")
    assert [e.properties["value"] for e in ungrouped] == [0.3, 5.0, 10, 1]


async def test_one_order_cannot_hold_a_chunk_open_forever(run_import: Any) -> None:
    """Issue 21.8: with --group-by, 1,001+ consecutive rows of one order grew one chunk
    without bound; past MAX_ORDER_ROWS the rest are refused, naming the order_id column."""
    from gateway.ingest.sources.imports.importer import MAX_ORDER_ROWS

    header = "email,event,timestamp,order_id,price,quantity"
    rows = [f"a@example.com,Purchase,{NOW - 60},o-1,1,1"] * (MAX_ORDER_ROWS + 5)
    summary, events, report = await run_import(
        csv_of(*rows, header=header), group_by_order=True, chunk_rows=100
    )
    assert len(events) == 1 and events[0].properties["value"] == MAX_ORDER_ROWS
    assert sum(summary.rejected.values()) == 5
    assert f"more than {MAX_ORDER_ROWS} consecutive rows of one order" in report


async def test_grouped_orders_are_never_split_between_chunks(run_import: Any) -> None:
    header = "email,event,timestamp,order_id,price,quantity"
    rows = [f"a@example.com,Purchase,{NOW - 60},o-{n // 3},1,1" for n in range(30)]
    summary, events, _ = await run_import(
        csv_of(*rows, header=header), group_by_order=True, chunk_rows=4
    )
    assert len(events) == 10 and all(e.properties["value"] == 3 for e in events)
    assert summary.chunks == 5  # 4 rows, then the rest of the order: 6 rows a chunk


@pytest.mark.parametrize(
    ("pixel", "header", "row", "kept"),
    [
        (OFFLINE, "email,phone,external_id", "a@example.com,,", True),
        (OFFLINE, "email,phone,external_id", ",+12133734253,", True),
        (OFFLINE, "email,phone,external_id", ",,user-1", False),
        (OFFLINE, "email,phone,external_id", ",not a phone,", False),
        (CRM, "email,phone,lead_id", ",,lead-7", True),
        (CRM, "email,phone,lead_id", ",,", False),
        (WEB, "email,external_id,page_url", ",user-1,https://shop.example/p", True),
        (WEB, "email,external_id,page_url", ",,https://shop.example/p", False),
        (WEB, "email,external_id,page_url", "a@example.com,,", False),
    ],
)
async def test_identity_keys_required_per_event_source(
    run_import: Any, pixel: str, header: str, row: str, kept: bool
) -> None:
    content = csv_of(f"{row},{NOW - 60}", header=f"{header},timestamp")
    summary, events, report = await run_import(content, pixel=pixel, event="Purchase")
    assert len(events) == (1 if kept else 0), summary.rejected
    if not kept:
        assert report.splitlines()[1].startswith("2,")


async def test_crm_rows_carry_their_lead_id(run_import: Any) -> None:
    content = csv_of(f"lead-7,{NOW - 60}", header="lead_id,timestamp")
    _, events, _ = await run_import(content, pixel=CRM, event="Lead")
    assert events[0].sections == {"lead": {"lead_id": "lead-7"}}
    assert events[0].destination.event_source == "crm"


async def test_limited_data_use_only_on_web_events(run_import: Any) -> None:
    web = csv_of(
        f"a@example.com,https://shop.example/p,{NOW - 60}", header="email,page_url,timestamp"
    )
    _, events, _ = await run_import(web, pixel=WEB, event="Purchase", limited_data_use=True)
    assert events[0].limited_data_use is True
    _, events, _ = await run_import(web, pixel=OFFLINE, event="Purchase", limited_data_use=True)
    assert events[0].limited_data_use is None


async def test_a_column_mapping_and_aliases(run_import: Any) -> None:
    header = "E-Mail Address,Mobile,Zeit,Agent,Cookie ID,TikTok Click ID,IP"
    row = f"a@example.com,+12133734253,{NOW - 60},Mozilla/5.0,ttp-1,E.C.P.abc,203.0.113.7"
    _, events, _ = await run_import(
        csv_of(row, header=header),
        event="Purchase",
        mapping={"e_mail_address": "email", "mobile": "phone", "zeit": "timestamp"},
    )
    user = events[0].user
    assert user["email"] == [sha("a@example.com")] and user["phone"] == [ALICE_PHONE]
    assert (user["user_agent"], user["ttp"], user["ttclid"]) == (
        "Mozilla/5.0",
        "ttp-1",
        "E.C.P.abc",
    )
    assert user["ip"] == "203.0.113.7"


async def test_trailing_empty_fields_are_not_a_malformed_line(run_import: Any) -> None:
    content = csv_of(f"a@example.com,,Purchase,{NOW - 60},,", "b@example.com,,Purchase,1,x")
    _, events, report = await run_import(content)
    assert len(events) == 1
    assert report.splitlines()[1] == '3,line,"has 5 fields, the header has 4"'


async def test_bom_and_semicolons(run_import: Any) -> None:
    content = "\ufeffemail;event;timestamp;value;currency\n"
    content += f'"a@example.com";Purchase;{NOW - 60};"19.99";EUR\n'
    _, events, _ = await run_import(content.encode("utf-8"))
    assert events[0].properties == {"value": 19.99, "currency": "EUR"}


async def test_tabs_gzip_and_json_lines(run_import: Any) -> None:
    tsv = f"email\tevent\ttimestamp\na@example.com\tPurchase\t{NOW - 60}\n"
    _, events, _ = await run_import(gzip.compress(tsv.encode()), name="rows.tsv.gz")
    assert len(events) == 1
    lines = [
        {"email": "a@example.com", "event": "Purchase", "timestamp": (NOW - 60) * 1000},
        {"email": "b@example.com", "event": "Lead", "timestamp": NOW - 60, "value": 3},
    ]
    jsonl = b"\n".join(orjson.dumps(line) for line in lines) + b"\n"
    _, events, _ = await run_import(gzip.compress(jsonl), name="rows.jsonl.gz")
    assert [e.event for e in events] == ["Purchase", "Lead"]
    assert events[1].properties == {"value": 3, "currency": "USD"}


async def test_a_malformed_line_in_the_middle_is_reported_and_the_rest_imported(
    run_import: Any,
) -> None:
    content = csv_of(
        f"a@example.com,,Purchase,{NOW - 60}",
        'b@example.com,"unclosed,Purchase',
        f"c@example.com,,Purchase,{NOW - 60}",
        "secret@example.com,,Purchase,yesterday",
        f"d@example.com,,Purchase,{NOW - 60}",
    )
    summary, events, report = await run_import(content)
    assert len(events) == 3 and summary.rows == 5
    lines = report.splitlines()
    assert lines[0] == "line,field,reason"
    assert lines[1].startswith("3,line,")
    assert lines[2].startswith("5,timestamp,")
    assert "secret" not in report and "example" not in report
    json_lines = (
        orjson.dumps({"email": "a@example.com", "event": "Purchase", "timestamp": NOW - 60})
        + b"\n{not json\n"
        + orjson.dumps({"email": "b@example.com", "event": "Purchase", "timestamp": NOW - 60})
    )
    summary, events, report = await run_import(json_lines, name="rows.jsonl")
    assert len(events) == 2 and report.splitlines()[1] == "2,line,not valid JSON"


async def test_a_file_without_event_or_timestamp_column_is_refused_at_once(
    run_import: Any,
) -> None:
    from gateway.core.errors import EventError

    with pytest.raises(EventError, match="--event"):
        await run_import(csv_of(f"a@example.com,{NOW}", header="email,timestamp"))
    with pytest.raises(EventError, match="timestamp"):
        await run_import(csv_of("a@example.com,Purchase", header="email,event"))


async def test_dry_run_stores_nothing_and_counts_coverage(run_import: Any) -> None:
    header = "email,phone,event,timestamp,ip,user_agent,notes"
    content = csv_of(
        f"a@example.com,,Purchase,{NOW - 60},203.0.113.7,Mozilla/5.0,x",
        f",+12133734253,Purchase,{NOW - 60},,,y",
        header=header,
    )
    summary, events, _ = await run_import(content, dry_run=True)
    assert events == [] and summary.events == 2
    coverage = summary.to_json()["match_key_coverage"]
    assert coverage == {
        "email": 0.5, "phone": 0.5, "external_id": 0.0, "ttclid": 0.0, "ip_user_agent": 0.5
    }  # fmt: skip
    assert summary.ignored_columns == ["notes"]


async def test_resume_skips_stored_chunks_and_redoes_those_that_changed(run_import: Any) -> None:
    rows = [f"c{n}@example.com,,Purchase,{NOW - 60}" for n in range(6)]
    first, events, _ = await run_import(csv_of(*rows), chunk_rows=2, outbox="shared")
    assert (first.chunks, len(events)) == (3, 6)
    again, events, _ = await run_import(csv_of(*rows), chunk_rows=2, outbox="shared", resume=True)
    assert (again.resumed_rows, again.events, len(events)) == (6, 0, 6)
    rows[3] = f"changed@example.com,,Purchase,{NOW - 60}"  # the second chunk differs now
    edited, events, _ = await run_import(csv_of(*rows), chunk_rows=2, outbox="shared", resume=True)
    assert (edited.resumed_rows, edited.events, len(events)) == (2, 4, 10)
    other, _, _ = await run_import(
        csv_of(*rows), chunk_rows=2, outbox="shared", resume=True, currency="EUR"
    )
    assert other.resumed_rows == 0  # other options make other events: nothing is skipped


SHARED = {"cookies": {"secrets": ["cookie-secret-0123456789abcdef"]}}


async def remembered(tmp_path: Path, make_settings: SettingsFactory, **leads: LeadContext) -> None:
    """What a gateway's browser path left in the outbox file `outbox-ctx`, by lead key."""
    settings = make_settings(outbox={"url": f"sqlite:///{tmp_path}/outbox-ctx.sqlite3"}, **SHARED)
    backend = open_backend(settings.outbox)
    await backend.outbox.open()
    memory = lead_memory(settings, backend)
    await memory.store.open()
    try:
        for name, context in leads.items():
            field, _, value = name.partition("__")
            raw = {"user": {"external_id": value}} if field == "external_id" else {}
            memory.store.remember(
                (key, context)
                for key in memory.keys_of(raw if raw else {"properties": {field: value}})
            )
        await memory.store.flush()
    finally:
        await memory.store.close()
        await backend.close()


async def test_rows_naming_a_lead_get_the_browser_context_it_left(
    run_import: Any, tmp_path: Path, make_settings: SettingsFactory
) -> None:
    """By external id or order id, in one read per chunk; a row the browser never showed,
    and what a row gives itself, stay as they are."""
    seen = time.time() - 3600
    await remembered(
        tmp_path,
        make_settings,
        external_id__crm_42=LeadContext(
            ttclid="E.C.P.click42", ttclid_at=seen, ttp="ttp-42", ip="203.0.113.42",
            user_agent="Mozilla/5.0 (X11; Linux x86_64)", url="https://shop.example/p/42",
        ),
        order_id__order_7=LeadContext(ttclid="E.C.P.click7", ttclid_at=seen, ip="198.51.100.7"),
    )  # fmt: skip
    header = "email,external_id,order_id,ttclid,event,timestamp"
    summary, events, _ = await run_import(
        csv_of(
            f"a@example.com,crm_42,,,Purchase,{MOMENT}",
            f"b@example.com,,order_7,,Purchase,{MOMENT}",
            f"c@example.com,crm_99,order_99,,Purchase,{MOMENT}",
            f"d@example.com,,order_7,E.C.P.own,Purchase,{MOMENT}",
            header=header,
        ),
        outbox="ctx",
        settings=SHARED,
    )
    users = [e.user for e in events]
    pages = [e.page for e in events]
    assert users[0]["ttclid"] == "E.C.P.click42" and users[0]["ttp"] == "ttp-42"
    assert users[0]["ip"] == "203.0.113.42" and users[0]["user_agent"].startswith("Mozilla")
    assert pages[0] == {"url": "https://shop.example/p/42"}
    assert users[1]["ttclid"] == "E.C.P.click7" and users[1]["ip"] == "198.51.100.7"
    assert "ttclid" not in users[2] and "ip" not in users[2]
    assert users[3]["ttclid"] == "E.C.P.own" and users[3]["ip"] == "198.51.100.7"
    assert summary.context_filled == 3 and summary.context_unread is None
    assert summary.coverage["ttclid"] == 3


async def test_without_a_shared_key_the_lead_context_is_not_read_and_the_summary_says_why(
    run_import: Any, tmp_path: Path, make_settings: SettingsFactory
) -> None:
    await remembered(tmp_path, make_settings, external_id__crm_42=LeadContext(ttclid="E.C.P.1"))
    summary, events, _ = await run_import(
        csv_of(
            f"a@example.com,crm_42,Purchase,{MOMENT}", header="email,external_id,event,timestamp"
        ),
        outbox="ctx",
    )
    assert "ttclid" not in events[0].user
    assert summary.context_filled == 0
    assert "context_secrets" in (summary.context_unread or "")
    assert "lead context not read" in summary.to_text()


def mixed_rows(count: int) -> str:
    """Order lines, refused rows (too old, no identity, not a phone, a broken line) and
    plain ones, in every chunk."""
    header = "email,phone,event,timestamp,order_id,price,quantity"
    rows = []
    for n in range(count):
        kind = n % 7
        email = f"buyer{n // 3}@example.com" if kind != 4 else ""
        phone = "not a phone" if kind == 4 else f"(312) 555-{n % 10000:04d}"
        stamp = NOW - 60 if kind != 5 else NOW - 40 * 86400
        if kind == 6:
            rows.append('broken,"quote')
            continue
        rows.append(f"{email},{phone},Purchase,{stamp},o-{n // 3},{n % 5 + 1},2")
    return csv_of(*rows, header=header)


async def test_worker_processes_store_exactly_what_one_process_stores(
    run_import: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--jobs 2: chunks parsed in worker processes come back in file order, with the same
    events, rejections, report and summary as when this process parses them all."""
    from gateway.ingest.sources.imports import importer

    pools: list[int] = []
    real_pool = importer.worker_pool

    def counted_pool(parser: Any, jobs: int) -> Any:
        pools.append(jobs)
        assert parser.pixel.access_token.reveal() == ""  # no token crosses to a worker
        return real_pool(parser, jobs)

    monkeypatch.setattr(importer, "worker_pool", counted_pool)
    content = mixed_rows(4_000)
    options = {"group_by_order": True, "chunk_rows": 300}
    one, events_one, report_one = await run_import(content, jobs=1, **options)
    two, events_two, report_two = await run_import(content, jobs=2, **options)
    assert pools == [2]  # workers started for the second import only
    # (the outbox orders by the time each chunk was serialised, which workers do in parallel)
    assert sorted(orjson.dumps(e.to_tiktok()) for e in events_two) == sorted(
        orjson.dumps(e.to_tiktok()) for e in events_one
    )
    assert len(events_one) > 900
    assert report_two == report_one and report_one.count("\n") > 900
    assert one.rejected and one.left_out and one.coverage["phone"]
    one.elapsed_seconds = two.elapsed_seconds = 0
    assert two.to_json() == one.to_json()


async def test_the_report_escapes_what_a_spreadsheet_would_run() -> None:
    """A column named like a formula reaches the report as text (OWASP: a leading `'`)."""
    stream = io.StringIO(newline="")
    ReportWriter(stream).write(
        [
            Rejection(2, "+cmd|' /C calc'!A0", "is not an email"),
            Rejection(3, "email", '=HYPERLINK("http://x")'),
            Rejection(4, "@SUM(A1)", "-1"),
            Rejection(5, "timestamp", "is older than 28 days"),
        ]
    )
    rows = list(csv.reader(io.StringIO(stream.getvalue())))
    assert rows[1:] == [
        ["2", "'+cmd|' /C calc'!A0", "is not an email"],
        ["3", "email", '\'=HYPERLINK("http://x")'],
        ["4", "'@SUM(A1)", "'-1"],
        ["5", "timestamp", "is older than 28 days"],
    ]
