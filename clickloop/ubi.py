"""The UBI 1.3 log contract (docs/contracts.md) as validation rules that compile to DuckDB SQL.

The official JSON Schemas (`../shared/ubi/1.3.0/`) were the source of the types and length
limits below; they are restated here so ingest never needs them at run time. One rule set
serves every input format: each record reaches the rules as JSON text, whatever file it
came from, and the first failed rule names the quarantine reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

QUERY_KIND = "query"
EVENT_KIND = "event"
# Actions that refer to one shown result, so they must name the query, the object and its position.
RESULT_ACTIONS = ("impression", "click", "love")

ID_MAX_LENGTH = 100  # every id, name and enum-like string in the UBI 1.3 schemas
OBJECT_ID_MAX_LENGTH = 256
MESSAGE_MAX_LENGTH = 1024
# Positions and ranks land in INTEGER columns of the ingested tables; a larger one is no real page anyway.
MAX_POSITION = 2**31 - 1
# An id made only of white space, control or format characters (e.g. zero-width space) names nothing.
BLANK_PATTERN = r"[\s\pZ\p{Cc}\p{Cf}]*"

STRING = ("VARCHAR",)
INTEGER = ("BIGINT", "UBIGINT")
STRING_OR_INTEGER = STRING + INTEGER
ARRAY = ("ARRAY",)
OBJECT = ("OBJECT",)

# Columns that Parquet writers commonly store as JSON text because they are free-form.
JSON_TEXT_COLUMNS = ("query_attributes", "event_attributes", "query_response_hit_ids")

# ISO 8601 date-time as the schemas' examples write it; a missing zone is read as UTC.
# (DuckDB's own cast also takes words such as 'infinity' and 'epoch', hence the pattern.)
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)?$"

Requirement = Literal["always", "result_actions", "optional"]


@dataclass(frozen=True)
class FieldRule:
    """One field of a UBI record: where it lives, the JSON types allowed, its length cap."""

    column: str
    path: str
    json_types: tuple[str, ...]
    max_length: int | None = None
    required: Requirement = "optional"
    # Ids must name something: a blank one would silently merge unrelated records.
    non_blank: bool = False

    def value_sql(self, text_expr: str, type_expr: str) -> str:
        """SQL for the field's value from its text and JSON type: an integer, a string, or JSON for
        arrays and objects (NULL when an array or object field holds a scalar)."""
        if self.json_types == INTEGER:
            return f"try_cast({text_expr} AS BIGINT)"
        if set(self.json_types) <= set(STRING_OR_INTEGER):
            return text_expr
        allowed = ", ".join(f"'{t}'" for t in self.json_types)
        return f"CASE WHEN {type_expr} IN ({allowed}) THEN CAST({text_expr} AS JSON) END"


@dataclass(frozen=True)
class TimeWindow:
    """The instants a plausible log timestamp lies between, both included (timezone-aware)."""

    earliest: dt.datetime
    latest: dt.datetime

    def outside_sql(self, column: str) -> str:
        """SQL: a timestamp (known to be well-formed) outside the window."""
        return (
            f"try_cast({column} AS TIMESTAMPTZ) NOT BETWEEN TIMESTAMPTZ '{self.earliest.isoformat()}'"
            f" AND TIMESTAMPTZ '{self.latest.isoformat()}'"
        )


@dataclass(frozen=True)
class RecordRules:
    """The fields of one record kind and the checks that span several fields."""

    kind: str
    fields: tuple[FieldRule, ...]
    # (reason, SQL condition over the field columns that is true when the record is bad)
    checks: tuple[tuple[str, str], ...]
    # Columns whose values, with the timestamp instant, identify a record's content.
    content_columns: tuple[str, ...]

    def field_checks(self, action_column: str | None) -> list[tuple[str, str]]:
        """(reason, condition) for every field's presence, type and length, in field order."""
        checks = []
        for rule in self.fields:
            type_sql = f"{rule.column}__type"
            if rule.required == "always":
                checks.append((f"missing:{rule.column}", f"{type_sql} = 'NULL'"))
            elif rule.required == "result_actions" and action_column is not None:
                actions = ", ".join(f"'{a}'" for a in RESULT_ACTIONS)
                checks.append((f"missing:{rule.column}", f"{type_sql} = 'NULL' AND {action_column} IN ({actions})"))
            allowed = ", ".join(f"'{t}'" for t in ("NULL", *rule.json_types))
            checks.append((f"wrong_type:{rule.column}", f"{type_sql} NOT IN ({allowed})"))
            if rule.max_length is not None:
                checks.append((f"too_long:{rule.column}", f"length({rule.column}) > {rule.max_length}"))
            if rule.non_blank:
                checks.append((f"blank:{rule.column}", f"regexp_full_match({rule.column}, '{BLANK_PATTERN}')"))
        return checks


def _string(column: str, path: str | None = None, max_length: int | None = ID_MAX_LENGTH,
            required: Requirement = "optional") -> FieldRule:
    return FieldRule(column, path or f"$.{column}", STRING, max_length, required)


def _id(column: str, path: str | None = None, required: Requirement = "optional") -> FieldRule:
    return FieldRule(column, path or f"$.{column}", STRING, ID_MAX_LENGTH, required, non_blank=True)


def _json_items_all(json_expr: str, condition: str) -> str:
    """SQL: every item `x` of a JSON array satisfies `condition` (true for an empty array)."""
    return f"coalesce(list_bool_and(list_transform(json_extract({json_expr}, '$[*]'), lambda x: {condition})), true)"


def _bad_timestamp(column: str) -> str:
    return f"NOT regexp_full_match({column}, '{TIMESTAMP_PATTERN}') OR try_cast({column} AS TIMESTAMPTZ) IS NULL"


def _bad_per_hit_list(column: str, item_condition: str) -> str:
    """SQL: a per-shown-hit list that does not match the hit list in length or item values."""
    return (
        f"{column} IS NOT NULL AND (json_array_length({column})"
        " <> coalesce(json_array_length(query_response_hit_ids), 0)"
        f" OR NOT {_json_items_all(column, item_condition)})"
    )


# Conditions on one item `x` of a JSON array.
_IS_STRING = "json_type(x) = 'VARCHAR'"
_IS_OBJECT_ID = f"length(x ->> '$') <= {OBJECT_ID_MAX_LENGTH}"
_IS_RANK = f"json_type(x) IN ('BIGINT', 'UBIGINT') AND try_cast(x AS BIGINT) BETWEEN 1 AND {MAX_POSITION}"
_AS_DOUBLE = "try_cast(x AS DOUBLE)"
_IS_PROBABILITY = f"json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') AND {_AS_DOUBLE} > 0 AND {_AS_DOUBLE} <= 1"


def query_rules(max_query_chars: int, window: TimeWindow) -> RecordRules:
    """Rules for UBI query.request records, with `user_query` capped at `max_query_chars` and
    timestamps inside `window`."""
    attributes = "$.query_attributes"
    return RecordRules(
        kind=QUERY_KIND,
        fields=(
            _id("query_id", required="always"),
            _id("client_id", required="always"),
            _string("user_query", max_length=max_query_chars, required="always"),
            _string("timestamp", max_length=None, required="always"),
            _string("application"),
            _string("object_id_field"),
            _string("query_response_id", max_length=None),
            FieldRule("query_response_hit_ids", "$.query_response_hit_ids", ARRAY),
            FieldRule("query_attributes", attributes, OBJECT),
            _id("session_id", f"{attributes}.session_id"),
            _id("user_id", f"{attributes}.user_id"),
            _string("device", f"{attributes}.device"),
            _string("ranker", f"{attributes}.ranker"),
            FieldRule("exploration", f"{attributes}.exploration", OBJECT),
            _string("exploration_scheme", f"{attributes}.exploration.scheme"),
            FieldRule("logging_ranks", f"{attributes}.logging_ranks", ARRAY),
            FieldRule("display_propensities", f"{attributes}.display_propensities", ARRAY),
        ),
        checks=(
            ("bad_timestamp", _bad_timestamp("timestamp")),
            ("timestamp_out_of_range", window.outside_sql("timestamp")),
            ("wrong_type:query_response_hit_ids", f"NOT {_json_items_all('query_response_hit_ids', _IS_STRING)}"),
            ("too_long:query_response_hit_ids", f"NOT {_json_items_all('query_response_hit_ids', _IS_OBJECT_ID)}"),
            ("bad_logging_ranks", _bad_per_hit_list("logging_ranks", _IS_RANK)),
            ("bad_display_propensities", _bad_per_hit_list("display_propensities", _IS_PROBABILITY)),
        ),
        content_columns=(
            "query_id", "client_id", "user_query", "application", "object_id_field", "query_response_id",
            "query_response_hit_ids", "query_attributes",
        ),
    )


def event_rules(window: TimeWindow) -> RecordRules:
    """Rules for UBI event records, with timestamps inside `window`."""
    return RecordRules(
        kind=EVENT_KIND,
        fields=(
            _id("action_name", required="always"),
            _id("query_id", required="result_actions"),
            _id("session_id"),
            _id("client_id"),
            _id("user_id"),
            _string("timestamp", max_length=None, required="always"),
            _string("application"),
            _string("message_type"),
            _string("message", max_length=MESSAGE_MAX_LENGTH),
            FieldRule("event_attributes", "$.event_attributes", OBJECT),
            FieldRule("object_id", "$.event_attributes.object.object_id", STRING_OR_INTEGER, OBJECT_ID_MAX_LENGTH,
                      required="result_actions"),
            FieldRule("ordinal", "$.event_attributes.position.ordinal", INTEGER, required="result_actions"),
        ),
        checks=(
            ("missing:session_id_or_client_id", "session_id IS NULL AND client_id IS NULL"),
            ("bad_timestamp", _bad_timestamp("timestamp")),
            ("timestamp_out_of_range", window.outside_sql("timestamp")),
            # An integer beyond BIGINT casts to NULL, so it is caught here too.
            ("bad_ordinal", f"ordinal__type <> 'NULL' AND coalesce(ordinal NOT BETWEEN 1 AND {MAX_POSITION}, true)"),
        ),
        content_columns=(
            "action_name", "query_id", "session_id", "client_id", "user_id", "application", "message_type", "message",
            "object_id", "ordinal",
        ),
    )


def parse_sql(rules: RecordRules, raw_column: str = "raw") -> str:
    """SELECT-list SQL parsing `raw_column`: `record_type` (NULL unless valid JSON), and for an
    object the lists `field_types` and `field_texts` (JSON type and text of every rule's field).

    Two list-valued extractions parse each record twice in all; extracting field by field
    costs about twice as much.
    """
    paths = ", ".join(f"'{rule.path}'" for rule in rules.fields)
    record_type = f"CASE WHEN json_valid({raw_column}) THEN json_type({raw_column}) END"
    return (
        f"{record_type} AS record_type,\n"
        f"  CASE WHEN {record_type} = 'OBJECT' THEN json_type({raw_column}, [{paths}]) END AS field_types,\n"
        f"  CASE WHEN {record_type} = 'OBJECT' THEN json_extract_string({raw_column}, [{paths}]) END AS field_texts"
    )


def extract_sql(rules: RecordRules) -> str:
    """SELECT-list SQL over `parse_sql`'s lists: `<column>` and `<column>__type` for every field."""
    columns = []
    for i, rule in enumerate(rules.fields, start=1):
        columns.append(f"coalesce(field_types[{i}], 'NULL') AS {rule.column}__type")
        columns.append(f"{rule.value_sql(f'field_texts[{i}]', f'field_types[{i}]')} AS {rule.column}")
    return ",\n  ".join(columns)


def reason_sql(rules: RecordRules, raw_column: str = "raw", load_error_column: str = "load_error") -> str:
    """SQL CASE that names the first rule a record breaks (NULL for a record that passes).

    Runs over the columns of `parse_sql` and `extract_sql`; a value is only compared once its
    type is known to be right, because the checks are tried in order.
    """
    action_column = "action_name" if rules.kind == EVENT_KIND else None
    checks: Sequence[tuple[str, str]] = [
        ("empty_record", f"trim({raw_column}) = ''"),
        ("malformed_json", "record_type IS NULL"),
        ("not_an_object", "record_type <> 'OBJECT'"),
        *rules.field_checks(action_column),
        *rules.checks,
    ]
    whens = "\n    ".join(f"WHEN {condition} THEN '{reason}'" for reason, condition in checks)
    return f"CASE\n    WHEN {load_error_column} IS NOT NULL THEN {load_error_column}\n    {whens}\n  END"


def content_key_sql(rules: RecordRules) -> str:
    """SQL hash of a valid record's content: re-deliveries of one record hash alike.

    The timestamp enters as an instant, so '+00:00' and 'Z' spellings of one time agree.
    """
    parts = ", ".join(f"{c}::VARCHAR" for c in rules.content_columns)
    return f"md5_number(to_json([{parts}, try_cast(timestamp AS TIMESTAMPTZ)::VARCHAR]))"
