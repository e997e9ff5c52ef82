"""Import options are checked once (`ImportOptions.from_params`), for the command and the
upload alike: the same values give the same options, a bad one is refused by both, each
in its own format (a usage error naming the option, a 400 naming the parameter)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.cli.import_file import options_of
from gateway.cli.main import parser as _parser
from gateway.core.errors import EventError
from gateway.ingest.sources.imports.options import ImportOptions
from gateway.settings import Settings, parse_settings
from tests.conftest import TOKEN, GatewayServer, run_cli

OFFLINE = "7301234567890123456"
API_KEY = "import-options-key-0123456789"


@pytest.fixture
def settings() -> Settings:
    pixel = {"id": OFFLINE, "access_token": TOKEN, "event_source": "offline"}
    imports = {"default_currency": "eur", "max_event_age_days": 14, "chunk_rows": 50}
    return parse_settings({"pixels": [pixel], "imports": imports}, {})


def test_the_upload_and_the_command_read_the_same_options(settings: Settings) -> None:
    query = {
        "pixel": OFFLINE, "event": "Purchase", "map": ["E-Mail=email", "Tel=phone"],
        "currency": "usd", "limited_data_use": "yes", "test_event_code": "T1",
        "group_by": "order_id", "format": "csv", "max_age_days": "7", "dry_run": "1",
        "resume": "false",
    }  # fmt: skip
    argv = [
        "import", "rows.csv", "--pixel", OFFLINE, "--event", "Purchase", "--map",
        "E-Mail=email", "--map", "Tel=phone", "--currency", "usd", "--limited-data-use",
        "--test-event-code", "T1", "--group-by", "order_id", "--format", "csv",
        "--max-age-days", "7", "--dry-run", "--jobs", "3",
    ]  # fmt: skip
    uploaded = ImportOptions.from_params(query, settings, jobs=3)
    commanded = options_of(_parser().parse_args(argv), settings)
    assert uploaded == commanded
    assert (uploaded.currency, uploaded.max_age_days, uploaded.chunk_rows) == ("USD", 7, 50)
    assert uploaded.mapping == {"e_mail": "email", "tel": "phone"}
    assert uploaded.group_by_order and uploaded.dry_run and not uploaded.resume


def test_options_left_out_take_the_imports_settings(settings: Settings) -> None:
    options = ImportOptions.from_params({"currency": " ", "max_age_days": ""}, settings)
    assert (options.currency, options.max_age_days, options.pixel) == ("EUR", 14, None)
    commanded = options_of(_parser().parse_args(["import", "rows.csv"]), settings)
    assert commanded == dataclasses.replace(options, jobs=commanded.jobs)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"currency": "XYZ"}, "currency", "must be an ISO 4217 code TikTok accepts"),
        ({"currency": "EURO"}, "currency", "must be an ISO 4217 code TikTok accepts"),
        ({"max_age_days": "29"}, "max_age_days", "must be a whole number from 1 to 28"),
        ({"max_age_days": 0}, "max_age_days", "must be a whole number from 1 to 28"),
        ({"max_age_days": "-3"}, "max_age_days", "must be a whole number from 1 to 28"),
        ({"map": "E-Mail"}, "map", "'E-Mail': expected COLUMN=FIELD"),
        ({"group_by": "email"}, "group_by", "must be order_id"),
        ({"format": "xlsx"}, "format", "must be one of"),
        ({"dry_run": "perhaps"}, "dry_run", "must be true or false"),
        ({"jobs": "4"}, "jobs", "unknown option"),
    ],
)
def test_a_bad_option_names_itself(
    settings: Settings, params: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(EventError) as refused:
        ImportOptions.from_params(params, settings)
    assert refused.value.field == field
    assert refused.value.message.startswith(message), refused.value.message


def test_the_command_refuses_them_as_usage_errors(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[outbox]\nurl = "sqlite:///{tmp_path}/outbox.sqlite3"\n'
        f'[[pixels]]\nid = "{OFFLINE}"\nevent_source = "offline"\naccess_token = "{TOKEN}"\n'
    )
    rows = tmp_path / "rows.csv"
    rows.write_text("email,event,timestamp\n")
    for option, value, said in [
        ("--currency", "XYZ", "--currency must be an ISO 4217 code TikTok accepts"),
        ("--max-age-days", "0", "--max-age-days must be a whole number from 1 to 28"),
    ]:
        refused = run_cli("import", str(rows), "--config", str(config), option, value)
        assert refused.returncode == 2, refused.stderr
        assert f"tiktok-gateway import: {said}" in refused.stderr


def test_the_upload_refuses_them_as_400_naming_the_parameter(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    gateway = serve_gateway(
        pixels=[{"id": OFFLINE, "access_token": TOKEN, "event_source": "offline"}],
        server_api={"api_keys": [API_KEY]},
    )
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for field, value in [("currency", "XYZ"), ("max_age_days", "0")]:
        params = {field: value}
        answer = httpx.post(
            f"{gateway.url}/v1/imports", params=params, content=b"email\n", headers=auth
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["field"] == field
