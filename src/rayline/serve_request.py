"""The HTTP requests ``rayline serve`` answers: parsing and checking, no Ray, no MLflow.

A ``POST /predict`` body is JSON in one of three shapes, of raw input rows (the columns
the model reads, as the training data had them):

- ``{"records": [{"col": value, ...}, ...]}``
- ``{"columns": {"col": [value, ...], ...}}`` (every list the same length)
- ``[{"col": value, ...}, ...]`` (a bare list of records)

:func:`parse_rows` turns it into a DataFrame or raises :class:`BadRequest`, whose status
(400, 413) and JSON body name the problem: not JSON, a wrong shape, no rows, too many rows,
an unknown or missing column, a value of the wrong type. Nothing here raises anything
else for any body, so a bad request never becomes a 500.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: What a value of each declared column type may be in JSON (besides null).
TYPE_WORDS = {
    "float": "a number",
    "int": "a number",
    "bool": "true or false",
    "string": "a string",
}
SHAPES = (
    'send {"records": [{"column": value, ...}, ...]}, {"columns": {"column": [values], ...}} '
    "or a bare list of records"
)


class BadRequest(Exception):
    """A request the server refuses: an HTTP status and a JSON body naming the problem.

    Attributes:
        status: 400 (bad body), 401 (no or wrong token), 404, 405, 413 (too large).
        problem: a short code: ``not_json``, ``wrong_shape``, ``empty``, ``too_many_rows``,
            ``too_large``, ``unknown_column``, ``missing_column``, ``wrong_type``,
            ``unauthorized``, ``not_found``, ``method_not_allowed``.
        message: the sentence a person reads.
    """

    def __init__(self, status: int, problem: str, message: str):
        super().__init__(message)
        self.status = status
        self.problem = problem
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": self.problem, "message": self.message}


@dataclass(frozen=True)
class InputSpec:
    """The raw columns a model reads and each one's declared type (float/int/bool/string).

    A column whose type is unknown (``None``) takes any JSON scalar.
    """

    columns: tuple[str, ...]
    types: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_preprocessor(cls, prep: Any) -> InputSpec:
        """From a :class:`rayline.data.features.FittedPreprocessor`."""
        cols = tuple(prep.input_columns)
        return cls(cols, {c: (prep.input_types or {}).get(c) for c in cols})

    @classmethod
    def from_signature(cls, schema: Any) -> InputSpec:
        """From an MLflow input ``Schema`` (any model: strings typed, the rest unknown)."""
        cols, types = [], {}
        for spec in schema.inputs:
            cols.append(spec.name)
            types[spec.name] = "string" if getattr(spec.type, "name", None) == "string" else None
        return cls(tuple(cols), types)

    def describe(self) -> list[dict[str, Any]]:
        """``[{"name", "type"}]`` for ``GET /model``."""
        return [{"name": c, "type": self.types.get(c) or "any"} for c in self.columns]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def load_json(body: bytes | str) -> Any:
    """The parsed body; ``NaN``/``Infinity`` (not JSON) and bad UTF-8 are refused.

    Raises:
        BadRequest: 400 ``not_json`` or ``empty``.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(
                400, "not_json", f"the body is not UTF-8 text (byte {exc.start}); {SHAPES}"
            ) from None
    if not body.strip():
        raise BadRequest(400, "empty", f"the body is empty; {SHAPES}")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is a ValueError, so is _reject_constant's
        raise BadRequest(400, "not_json", f"the body is not JSON ({exc}); {SHAPES}") from None
    except RecursionError:
        raise BadRequest(400, "not_json", "the body is nested too deeply") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number out of range"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fits(value: Any, kind: str | None) -> bool:
    if value is None:
        return True
    if isinstance(value, list | dict):
        return False
    if kind in ("float", "int"):
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return not (isinstance(value, float) and not math.isfinite(value))


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_names(names: set[str], spec: InputSpec, where: str) -> None:
    expected = set(spec.columns)
    unknown = sorted(n for n in names if n not in expected)
    if unknown:
        raise BadRequest(
            400,
            "unknown_column",
            f"{where}unknown column(s) {', '.join(map(repr, unknown))}; the model reads "
            f"{', '.join(spec.columns)}",
        )
    missing = [c for c in spec.columns if c not in names]
    if missing:
        raise BadRequest(
            400,
            "missing_column",
            f"{where}missing column(s) {', '.join(map(repr, missing))}; the model reads "
            f"{', '.join(spec.columns)}",
        )


def _check_values(column: str, values: list[Any], spec: InputSpec, row_word: str) -> None:
    kind = spec.types.get(column)
    for i, value in enumerate(values):
        if not _fits(value, kind):
            want = TYPE_WORDS.get(kind or "", "a number, a string, true/false")
            typed = f" ({kind})" if kind else ""
            raise BadRequest(
                400,
                "wrong_type",
                f"column '{column}'{typed} must be {want} or null; {row_word} {i} has "
                f"{_show(value)} ({_kind(value)})",
            )


def _count_check(n: int, max_rows: int) -> None:
    if n == 0:
        raise BadRequest(400, "empty", f"no rows to predict; {SHAPES}")
    if n > max_rows:
        raise BadRequest(
            413,
            "too_many_rows",
            f"{n} rows in one request; at most {max_rows} (serve.max_rows_per_request): send "
            "them in several requests",
        )


def parse_rows(body: bytes | str | Any, spec: InputSpec, max_rows: int) -> pd.DataFrame:
    """A ``POST /predict`` body -> a DataFrame of the model's columns, in its order.

    ``body`` is the raw bytes (or text), or JSON already parsed.

    Raises:
        BadRequest: the body is not JSON, not one of the shapes, has no or too many rows,
            an unknown or missing column, or a value of the wrong type.
    """
    doc = load_json(body) if isinstance(body, bytes | str) else body
    if isinstance(doc, list):
        return _from_records(doc, spec, max_rows)
    if not isinstance(doc, dict):
        raise BadRequest(400, "wrong_shape", f"the body is {_kind(doc)}; {SHAPES}")
    keys = set(doc)
    if not keys:
        raise BadRequest(400, "wrong_shape", f"the body is an empty object; {SHAPES}")
    if keys == {"records"}:
        records = doc["records"]
        if not isinstance(records, list):
            raise BadRequest(
                400, "wrong_shape", f"'records' is {_kind(records)}, not a list of objects"
            )
        return _from_records(records, spec, max_rows)
    if keys == {"columns"}:
        return _from_columns(doc["columns"], spec, max_rows)
    if {"records", "columns"} <= keys:
        raise BadRequest(400, "wrong_shape", "give either 'records' or 'columns', not both")
    other = sorted(keys - {"records", "columns"})
    if other and not keys & {"records", "columns"}:
        raise BadRequest(
            400,
            "wrong_shape",
            f"the body's keys are {', '.join(map(repr, other)) or 'none'}; {SHAPES}",
        )
    raise BadRequest(
        400,
        "wrong_shape",
        f"unexpected key(s) {', '.join(map(repr, other))} beside the rows; {SHAPES}",
    )


def _from_records(records: list[Any], spec: InputSpec, max_rows: int) -> pd.DataFrame:
    _count_check(len(records), max_rows)
    expected = set(spec.columns)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise BadRequest(
                400, "wrong_shape", f"row {i} is {_kind(rec)}, not an object of column: value"
            )
        if rec.keys() != expected:
            _check_names(set(rec), spec, f"row {i}: ")
    columns = {c: [rec[c] for rec in records] for c in spec.columns}
    for c, values in columns.items():
        _check_values(c, values, spec, "row")
    return _frame(columns, spec)


def _from_columns(columns: Any, spec: InputSpec, max_rows: int) -> pd.DataFrame:
    if not isinstance(columns, dict):
        raise BadRequest(
            400, "wrong_shape", f"'columns' is {_kind(columns)}, not an object of column: [values]"
        )
    _check_names(set(columns), spec, "")
    lengths = {}
    for c in spec.columns:
        values = columns[c]
        if not isinstance(values, list):
            raise BadRequest(
                400, "wrong_shape", f"column '{c}' is {_kind(values)}, not a list of values"
            )
        lengths[c] = len(values)
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{c}: {n}" for c, n in lengths.items())
        raise BadRequest(400, "wrong_shape", f"the columns differ in length ({shown})")
    _count_check(next(iter(lengths.values()), 0), max_rows)
    for c in spec.columns:
        _check_values(c, columns[c], spec, "value")
    return _frame({c: columns[c] for c in spec.columns}, spec)


def _frame(columns: dict[str, list[Any]], spec: InputSpec) -> pd.DataFrame:
    """Checked values -> a DataFrame typed as the training data was (nulls as missing)."""
    data = {}
    for c, values in columns.items():
        kind = spec.types.get(c)
        if kind == "float":
            data[c] = pd.array(values, dtype="float64")
        elif kind == "int":
            if any(v is None for v in values) or any(isinstance(v, float) for v in values):
                data[c] = pd.array(values, dtype="float64")
            else:
                data[c] = pd.array(values, dtype="int64")
        elif kind == "bool":
            data[c] = pd.Series(values, dtype="bool" if None not in values else object)
        else:
            data[c] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def frame_output(frame: pd.DataFrame, classes: list[Any] | None = None) -> dict[str, Any]:
    """The model's output frame -> ``predictions`` (+ ``classes``, ``probabilities``).

    ``probabilities[i][j]`` is row ``i``'s probability of ``classes[j]``; ``classes``
    (the model's labels, their JSON types kept) default to the column names' suffixes.
    """
    from rayline.inference import PROBA_PREFIX

    out: dict[str, Any] = {"predictions": frame["prediction"].tolist()}
    proba_cols = [c for c in frame.columns if str(c).startswith(PROBA_PREFIX)]
    if proba_cols:
        names = [str(c)[len(PROBA_PREFIX) :] for c in proba_cols]
        if classes is None or [str(c) for c in classes] != names:
            classes = names
        out["classes"] = list(classes)
        out["probabilities"] = frame[proba_cols].to_numpy(dtype="float64").tolist()
    return out


# -- MLflow webhooks ------------------------------------------------------------------------
#: MLflow's webhook headers (``mlflow.webhooks.constants``) and how old a delivery may be.
SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"
WEBHOOK_MAX_AGE_S = 300


def verify_webhook(
    secret: str, headers: Any, body: bytes, now: float, max_age_s: float = WEBHOOK_MAX_AGE_S
) -> dict[str, Any]:
    """Check an MLflow webhook delivery's HMAC signature and age; return its JSON payload.

    MLflow (>= 3.3) signs ``f"{delivery_id}.{timestamp}.{body}"`` with HMAC-SHA256 under the
    webhook's secret and sends ``X-MLflow-Signature: v1,<base64>``, ``X-MLflow-Timestamp``
    (Unix seconds) and ``X-MLflow-Delivery-Id``. ``headers`` is any case-insensitive
    mapping (a Starlette ``Headers``) or a dict with lower-case keys.

    Raises:
        BadRequest: 401 ``unsigned`` (a header missing), ``bad_signature``, ``stale`` (the
            timestamp more than ``max_age_s`` away from ``now``); 400 ``not_json``.
    """
    import base64
    import hashlib
    import hmac

    signature = headers.get(SIGNATURE_HEADER)
    stamp = headers.get(TIMESTAMP_HEADER)
    delivery = headers.get(DELIVERY_HEADER)
    if not signature or not stamp or not delivery:
        raise BadRequest(
            401,
            "unsigned",
            "a webhook must carry X-MLflow-Signature, X-MLflow-Timestamp and "
            "X-MLflow-Delivery-Id (create it with a secret: MlflowClient().create_webhook(..., "
            "secret=...))",
        )
    try:
        age = abs(now - int(stamp))
    except ValueError:
        raise BadRequest(
            401, "stale", f"X-MLflow-Timestamp '{stamp[:40]}' is not Unix seconds"
        ) from None
    if age > max_age_s:
        raise BadRequest(
            401, "stale", f"the delivery is {age:.0f} s from now; at most {max_age_s:g} s"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "not_json", "the webhook's body is not UTF-8") from None
    digest = hmac.new(
        secret.encode("utf-8"), f"{delivery}.{stamp}.{text}".encode(), hashlib.sha256
    ).digest()
    expected = "v1," + base64.b64encode(digest).decode("ascii")
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise BadRequest(401, "bad_signature", "the webhook's signature does not match the secret")
    doc = load_json(text)
    if not isinstance(doc, dict):
        raise BadRequest(400, "wrong_shape", f"the webhook's body is {_kind(doc)}, not an object")
    return doc
