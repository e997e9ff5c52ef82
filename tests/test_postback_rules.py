"""Tracking rules, table by table: triggers, filters, price operators, placeholders, results."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from gateway.core.currencies import CURRENCIES
from gateway.core.errors import ConfigError
from gateway.settings import Settings, parse_settings
from gateway.settings.tracking.conditions import NotANumber
from gateway.settings.tracking.rules import TRIGGERS, RuleSet
from gateway.settings.tracking.templates import Template, TemplateError

PIXEL = "CTESTPIXEL0001"
SECRET = "lms-secret-0123456789"


def settings_of(rules_toml: str, *, sources: str = "") -> Settings:
    text = f"""
[[pixels]]
id = "{PIXEL}"
access_token = "token"

[postbacks.sources.lms]
secret = "{SECRET}"
{sources}

{rules_toml}
"""
    return parse_settings(tomllib.loads(text), {})


def rules_of(rules_toml: str, **kwargs: Any) -> RuleSet:
    return settings_of(rules_toml, **kwargs).postbacks.rules


def one_rule(**keys: str) -> RuleSet:
    lines = ["[[postbacks.rules]]", 'name = "r"', 'event = "Purchase"']
    lines += [f"{k} = {v}" for k, v in keys.items()]
    return rules_of("\n".join(lines))


def fired(rules: RuleSet, **fields: str) -> list[str]:
    return [f.rule for f in rules.evaluate("lms", fields).fired]


def reasons(rules: RuleSet, **fields: str) -> list[str]:
    return [u.reason for u in rules.evaluate("lms", fields).unmatched]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_trigger_name_fires_its_rule_and_no_other(trigger: str) -> None:
    rules = one_rule(trigger=f'"{trigger}"')
    assert fired(rules, trigger=trigger) == ["r"]
    other = next(t for t in TRIGGERS if t != trigger)
    assert fired(rules, trigger=other) == []
    assert reasons(rules, trigger=other) == [f"trigger: {other!r} is not {trigger}"]


def test_a_rule_may_have_several_triggers_and_any_name() -> None:
    rules = one_rule(trigger='["lead_sold", "my_own_stage"]')
    assert fired(rules, trigger="my_own_stage") == ["r"]
    assert fired(rules, trigger="lead_sold") == ["r"]
    assert reasons(rules) == ["trigger: 'absent' is not lead_sold or my_own_stage"]


@pytest.mark.parametrize(
    ("condition", "value", "passes"),
    [
        ('"p1"', "p1", True),
        ('"p1"', "p2", False),
        ('"p1"', "", False),
        ('{ equals = "p1" }', "p1", True),
        ('{ equals = "p1" }', "P1", False),
        ('["p1", "p2"]', "p2", True),
        ('["p1", "p2"]', "p3", False),
        ('{ one_of = ["p1", "p2"] }', "p1", True),
        ('{ one_of = ["p1", "p2"] }', "", False),
        ('{ none_of = ["p9"] }', "p1", True),
        ('{ none_of = ["p9"] }', "", True),
        ('{ none_of = ["p9"] }', "p9", False),
        ("7", "7", True),
    ],
)
@pytest.mark.parametrize(
    "field", ["publisher", "channel", "source", "buyer", "campaign", "pingtree", "sub_id"]
)
def test_every_filter_kind_on_any_field(
    field: str, condition: str, value: str, passes: bool
) -> None:
    rules = one_rule(trigger='"lead_sold"', filters=f"{{ {field} = {condition} }}")
    fields = {"trigger": "lead_sold", field: value} if value else {"trigger": "lead_sold"}
    assert fired(rules, **fields) == (["r"] if passes else [])
    if not passes:
        assert reasons(rules, **fields)[0].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("price", "value", "passes"),
    [
        ("{ gt = 0 }", "0.01", True),
        ("{ gt = 0 }", "0", False),
        ("{ gt = 0 }", "-1", False),
        ("{ gt = 10 }", "10", False),
        ("{ gt = 10 }", "10.001", True),
        ("{ gte = 10 }", "10", True),
        ("{ gte = 10 }", "9.99", False),
        ("{ lt = 10 }", "9.99", True),
        ("{ lt = 10 }", "10", False),
        ("{ lte = 10 }", "10", True),
        ("{ lte = 10 }", "10.01", False),
        ("{ between = [10, 20] }", "9.99", False),
        ("{ between = [10, 20] }", "10", True),
        ("{ between = [10, 20] }", "15", True),
        ("{ between = [10, 20] }", "20", True),
        ("{ between = [10, 20] }", "20.01", False),
        ("{ between = [10.5, 10.5] }", "10.5", True),
    ],
)
def test_every_price_operator_and_the_bounds_of_the_range(
    price: str, value: str, passes: bool
) -> None:
    rules = one_rule(trigger='"lead_sold"', price=price)
    assert fired(rules, trigger="lead_sold", price=value) == (["r"] if passes else [])
    if not passes:
        assert reasons(rules, trigger="lead_sold", price=value)[0].startswith("price: ")


def test_an_absent_price_fails_the_restriction_with_a_reason() -> None:
    rules = one_rule(trigger='"lead_sold"', price="{ gt = 0 }")
    assert reasons(rules, trigger="lead_sold") == ["price: absent (the rule needs price > 0)"]


@pytest.mark.parametrize("price", ["abc", "$5", "5,00", "NaN", "inf", "{payout}"])
def test_a_price_that_is_no_number_is_the_senders_fault(price: str) -> None:
    rules = one_rule(trigger='"lead_sold"', price="{ gt = 0 }")
    with pytest.raises(NotANumber) as caught:
        rules.evaluate("lms", {"trigger": "lead_sold", "price": price})
    assert caught.value.field == "price"


@pytest.mark.parametrize(
    ("template", "fields", "expected"),
    [
        ("{lead_id}-{trigger}", {"lead_id": "L1", "trigger": "lead_sold"}, "L1-lead_sold"),
        ("constant", {}, "constant"),
        ("{lead_id}", {}, None),
        ("{lead_id}", {"lead_id": ""}, None),
        ("a-{lead_id}", {"lead_id": "x{trigger}y"}, "a-x{trigger}y"),
        ("{{literal}}-{lead_id}", {"lead_id": "7"}, "{literal}-7"),
        ("{ lead_id }", {"lead_id": "7"}, "7"),
    ],
)
def test_placeholders_present_absent_and_values_holding_braces(
    template: str, fields: dict[str, str], expected: str | None
) -> None:
    assert Template.parse(template).render(fields) == expected


@pytest.mark.parametrize("template", ["{", "}", "{lead id}", "{}", "a{b{c}}"])
def test_templates_that_cannot_be_parsed(template: str) -> None:
    with pytest.raises(TemplateError):
        Template.parse(template)


def test_templates_print_as_written() -> None:
    for text in ("{lead_id}-{trigger}", "{{x}}{a}", "plain"):
        assert str(Template.parse(text)) == text


def test_an_unknown_placeholder_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        one_rule(trigger='"lead_sold"', fields='{ event_id = "{leadid}-{trigger}" }')
    assert any("{leadid} names no known or configured field" in p for p in caught.value.problems)


def test_a_renamed_or_declared_field_may_be_a_placeholder() -> None:
    rules = rules_of(
        '[[postbacks.rules]]\nname = "r"\nevent = "Purchase"\ntrigger = "lead_sold"\n'
        'fields = { event_id = "{txn}-{aff_sub9}" }',
        sources='rename = { transaction = "txn" }\nfields = ["aff_sub9"]',
    )
    built = rules.evaluate("lms", {"trigger": "lead_sold", "txn": "T", "aff_sub9": "9"})
    assert built.fired[0].events[0].raw["event_id"] == "T-9"


def test_an_absent_placeholder_leaves_the_field_out() -> None:
    rules = one_rule(
        trigger='"lead_sold"',
        fields='{ event_id = "{lead_id}", value = "{price}", currency = "USD", email = "{email}" }',
    )
    raw = rules.evaluate("lms", {"trigger": "lead_sold", "lead_id": "L1"}).fired[0].events[0].raw
    assert raw == {"event": "Purchase", "event_id": "L1", "properties": {"currency": "USD"}}


@pytest.mark.parametrize(
    ("fields_toml", "postback", "reason"),
    [
        ('{ event_id = "{lead_id}" }', {}, "event_id: {lead_id} is absent from the postback"),
        (
            '{ value = "{price}-{buyer}", currency = "USD" }',
            {"price": "1", "buyer": "b"},
            "value: is not a number",
        ),
        (
            '{ value = "{price}", currency = "{currency}" }',
            {"price": "5", "currency": "XYZ"},
            "currency: is not an ISO 4217 code TikTok accepts",
        ),
        ('{ value = "{price}" }', {"price": "5"}, "currency: required with a value"),
        ('{ value = "-{price}", currency = "USD" }', {"price": "5"}, "value: is negative"),
    ],
)
def test_a_matching_rule_that_cannot_build_a_valid_event_is_skipped_with_a_reason(
    fields_toml: str, postback: dict[str, str], reason: str
) -> None:
    rules = one_rule(trigger='"lead_sold"', fields=fields_toml)
    result = rules.evaluate("lms", {"trigger": "lead_sold", **postback})
    assert result.fired == []
    assert result.unmatched[0].reason.startswith(reason)


def test_a_value_from_one_placeholder_that_is_no_number_names_the_field() -> None:
    rules = one_rule(trigger='"lead_sold"', fields='{ value = "{revenue}", currency = "USD" }')
    with pytest.raises(NotANumber) as caught:
        rules.evaluate("lms", {"trigger": "lead_sold", "revenue": "12,50"})
    assert caught.value.field == "revenue"


def test_several_rules_fire_on_one_postback_and_the_others_say_why_not() -> None:
    rules = rules_of(
        """
[[postbacks.rules]]
name = "registration"
trigger = "lead_sold"
event = "CompleteRegistration"
fields = { event_id = "{lead_id}-reg" }

[[postbacks.rules]]
name = "purchase"
trigger = ["lead_sold", "campaign_sold"]
price = { gt = 0 }
event = ["Purchase", "my_custom_sale"]
fields = { event_id = "{lead_id}-{trigger}", value = "{price}", currency = "EUR" }

[[postbacks.rules]]
name = "big buyers only"
trigger = "lead_sold"
filters = { buyer = ["b1"] }
event = "Purchase"

[[postbacks.rules]]
name = "returns"
trigger = "lead_return"
event = "Return"
"""
    )
    result = rules.evaluate(
        "lms", {"trigger": "lead_sold", "lead_id": "L7", "price": "40", "buyer": "b2"}
    )
    assert [f.rule for f in result.fired] == ["registration", "purchase"]
    events = [b.raw for f in result.fired for b in f.events]
    assert [(e["event"], e["event_id"]) for e in events] == [
        ("CompleteRegistration", "L7-reg"),
        ("Purchase", "L7-lead_sold"),
        ("my_custom_sale", "L7-lead_sold"),
    ]
    assert events[1]["properties"] == {"value": "40", "currency": "EUR"}
    assert [(u.rule, u.reason) for u in result.unmatched] == [
        ("big buyers only", "buyer: 'b2' is not one of ['b1']"),
        ("returns", "trigger: 'lead_sold' is not lead_return"),
    ]


def test_none_fire_and_each_says_its_first_failed_condition() -> None:
    rules = one_rule(trigger='"lead_sold"', filters='{ publisher = "p1" }', price="{ gt = 100 }")
    assert reasons(rules, trigger="lead_sold", publisher="p2", price="500") == [
        "publisher: 'p2' is not 'p1'"
    ]
    assert reasons(rules, trigger="lead_sold", publisher="p1", price="5") == [
        "price: '5' does not satisfy price > 100"
    ]


def test_identifiers_are_never_quoted_in_reasons() -> None:
    rules = one_rule(trigger='"lead_sold"', filters='{ email = "a@b.example" }')
    assert reasons(rules, trigger="lead_sold", email="alice@example.com") == [
        "email: (hidden) is not 'a@b.example'"
    ]


def test_the_same_postback_gives_the_same_event_ids_and_another_gives_others() -> None:
    rules = one_rule(trigger='"lead_sold"')  # no event_id template: derived from the postback
    postback = {"trigger": "lead_sold", "lead_id": "L1", "price": "3"}
    first = rules.evaluate("lms", postback).fired[0].events[0].raw["event_id"]
    again = rules.evaluate("lms", dict(reversed(postback.items()))).fired[0].events[0].raw
    other = rules.evaluate("lms", {**postback, "lead_id": "L2"}).fired[0].events[0].raw
    assert first == again["event_id"] != other["event_id"]


def test_rules_see_only_their_sources() -> None:
    rules = rules_of(
        '[[postbacks.rules]]\nname = "r"\nevent = "Lead"\ntrigger = "form_submit"\n'
        'sources = ["lms"]',
        sources='[postbacks.sources.tree]\nsecret = "tree-secret-0123456789"',
    )
    assert [f.rule for f in rules.evaluate("lms", {"trigger": "form_submit"}).fired] == ["r"]
    assert rules.evaluate("tree", {"trigger": "form_submit"}).fired == []


def test_all_62_currencies_of_the_lms_seed_are_accepted() -> None:
    assert len(CURRENCIES) == 62
    for code in sorted(CURRENCIES):
        rules = one_rule(trigger='"s"', fields=f'{{ value = "1", currency = "{code.lower()}" }}')
        raw = rules.evaluate("lms", {"trigger": "s"}).fired[0].events[0].raw
        assert raw["properties"]["currency"] == code


@pytest.mark.parametrize(
    ("rule_toml", "problem"),
    [
        ('trigger = "s"\nfields = { currency = "XYZ" }', "'XYZ' is not an ISO 4217 code"),
        ('trigger = "s"\nprice = { above = 3 }', "price: must be one of"),
        ('trigger = "s"\nprice = { between = [20, 10] }', "the lower first"),
        (
            'trigger = "s"\nfilters = { buyer = { some_of = ["x"] } }',
            "use equals, one_of or none_of",
        ),
        ('trigger = "s"\nfields = { colour = "red" }', "not a field an action sets"),
        ('trigger = "s"\nfields = { event_id = "{lead_id" }', "unbalanced"),
        ('trigger = "s"\nsources = ["nope"]', "'nope' is not a configured source"),
        ('trigger = "s"\npixel = "CUNKNOWN0001"', "is not a configured pixel"),
        ("", "trigger: required"),
        ('trigger = "s"\nprice = { gt = 1 }\nextra = 1', "extra: unknown key"),
    ],
)
def test_configuration_faults_are_named(rule_toml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rules_of(f'[[postbacks.rules]]\nname = "r"\nevent = "Purchase"\n{rule_toml}')
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_a_source_needs_a_long_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(
            {
                "pixels": [{"id": PIXEL, "access_token": "t"}],
                "postbacks": {"sources": {"lms": {"secret": "short"}}},
            },
            {},
        )
    assert caught.value.problems == [
        "postbacks.sources.lms.secret: required, at least 16 characters"
    ]


def test_rules_print_as_they_read_back() -> None:
    settings = rules_source = settings_of(
        """
[[postbacks.rules]]
name = "sold"
trigger = ["lead_sold", "campaign_sold"]
sources = ["lms"]
filters = { publisher = "p1", channel = ["a", "b"], buyer = { none_of = ["x"] } }
price = { between = [10, 20.5] }
event = ["Purchase"]
[postbacks.rules.fields]
event_id = "{{x}}-{lead_id}"
value = "{price}"
currency = "USD"
contents = { content_id = "{offer_id}" }
"""
    )
    shown = settings.redacted()["postbacks"]
    shown["sources"]["lms"]["secret"] = SECRET
    pixels = [{"id": PIXEL, "access_token": "token"}]
    again = parse_settings({"pixels": pixels, "postbacks": shown}, {})
    assert again.postbacks == rules_source.postbacks


def test_check_config_names_an_unknown_placeholder(tmp_path: Any) -> None:
    from tests.conftest import run_cli

    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[[pixels]]\nid = "{PIXEL}"\naccess_token = "t"\n'
        '[[postbacks.rules]]\nname = "r"\ntrigger = "lead_sold"\nevent = "Purchase"\n'
        'fields = { event_id = "{lead}-{trigger}" }\n'
    )
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert "postbacks.rules[0].fields: {lead} names no known or configured field" in result.stderr
