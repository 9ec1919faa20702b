"""What a structured answer must look like: :class:`ResponseFormat` (JSON schema, regex or grammar).

This module is light on purpose (pydantic and json only): :class:`~deal_core.SearchConfig` holds a
``ResponseFormat`` and validates whatever the user passed into one. Compiling it into token masks
(``grammar.py``, with llguidance) happens when a search starts, against the model's tokenizer.

Accepted specs (:func:`as_response_format`):

* a :class:`ResponseFormat` (``ResponseFormat.json_schema(...)``, ``.regex(...)``, ``.grammar(...)``,
  ``.json_object()``);
* a pydantic model class, or a ``TypedDict`` class -> its JSON schema;
* a JSON schema as a dict (anything with ``"type"``/``"properties"``/``"$ref"``/``"anyOf"`` ...);
* OpenAI-style dicts: ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``,
  ``{"type": "json_object"}``; and ``{"type": "regex", "pattern": ...}``,
  ``{"type": "grammar", "grammar": <Lark source>}``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from ..errors import ConfigError

Kind = Literal["json_schema", "regex", "grammar"]

#: The schema of "any JSON object" (OpenAI's ``json_object`` mode).
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class ResponseFormat(BaseModel):
    """A hard structural constraint on the answer, applied to every candidate and rollout.

    ``kind`` is ``"json_schema"`` (``source`` is the schema as JSON text), ``"regex"`` (a regular
    expression the whole answer must match) or ``"grammar"`` (a context-free grammar in llguidance's
    Lark syntax, start rule ``start``; ``%json {...}`` embeds a JSON schema). ``name`` appears in
    error messages.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    source: str
    name: str = "response"

    # ---- constructors --------------------------------------------------------------------------
    @classmethod
    def json_schema(cls, schema: Any, name: str | None = None) -> ResponseFormat:
        """From a JSON schema (dict or JSON text), a pydantic model class or a TypedDict class."""
        schema_dict, default_name = _schema_of(schema)
        # Key order is kept (no sort_keys): properties are generated in the schema's order.
        return cls(kind="json_schema", source=json.dumps(schema_dict), name=name or default_name)

    @classmethod
    def json_object(cls) -> ResponseFormat:
        """Any JSON object."""
        return cls.json_schema(ANY_OBJECT, name="json_object")

    @classmethod
    def regex(cls, pattern: object, name: str | None = None) -> ResponseFormat:
        """The whole answer matches ``pattern`` (Rust regex syntax, as llguidance reads it).

        ``pattern`` is typed ``object``: it may come straight from a user's dict, so it is checked here."""
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"a regex response format needs a non-empty pattern string, got {pattern!r}")
        return cls(kind="regex", source=pattern, name=name or "regex")

    @classmethod
    def grammar(cls, lark: object, name: str | None = None) -> ResponseFormat:
        """The answer is derived from ``lark``'s ``start`` rule (llguidance's Lark dialect)."""
        if not isinstance(lark, str) or not lark.strip():
            raise ConfigError(f"a grammar response format needs Lark source text, got {lark!r}")
        return cls(kind="grammar", source=lark, name=name or "grammar")

    # ---- reading it back -----------------------------------------------------------------------
    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema (``json_schema`` kind), else None."""
        return json.loads(self.source) if self.kind == "json_schema" else None

    def __repr__(self) -> str:
        preview = self.source if len(self.source) <= 60 else self.source[:57] + "..."
        return f"ResponseFormat(kind={self.kind!r}, name={self.name!r}, source={preview!r})"


def as_response_format(spec: Any) -> ResponseFormat | None:
    """Normalise any accepted spec (see the module doc) into a :class:`ResponseFormat`; None stays None.

    Raises :class:`ConfigError` saying what was wrong and which forms are accepted.
    """
    if spec is None or isinstance(spec, ResponseFormat):
        return spec
    if isinstance(spec, dict):
        kind = spec.get("type")
        if set(spec) >= {"kind", "source"}:  # a ResponseFormat's own model_dump()
            return ResponseFormat(**spec)
        if kind == "json_schema" and "json_schema" in spec:
            inner = spec["json_schema"]
            if not isinstance(inner, dict) or "schema" not in inner:
                raise ConfigError("response_format {'type': 'json_schema', 'json_schema': ...} needs "
                                  "json_schema={'name': ..., 'schema': {...}}")
            return ResponseFormat.json_schema(inner["schema"], name=inner.get("name"))
        if kind == "json_object":
            return ResponseFormat.json_object()
        if kind == "regex":
            return ResponseFormat.regex(spec.get("pattern") or spec.get("regex"), name=spec.get("name"))
        if kind in ("grammar", "lark"):
            return ResponseFormat.grammar(spec.get("grammar") or spec.get("lark"), name=spec.get("name"))
        return ResponseFormat.json_schema(spec)
    if isinstance(spec, (type, str)):
        return ResponseFormat.json_schema(spec)
    raise ConfigError(
        f"response_format must be a ResponseFormat, a pydantic model class, a TypedDict class or a JSON "
        f"schema dict (or {{'type': 'json_schema' | 'json_object' | 'regex' | 'grammar', ...}}), got "
        f"{type(spec).__name__}")


def _schema_of(schema: Any) -> tuple[dict[str, Any], str]:
    """(JSON schema dict, a name for messages) of a dict / JSON text / pydantic model / TypedDict."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"the JSON schema text is not valid JSON ({exc}); pass a dict or a "
                              "pydantic model") from None
    if isinstance(schema, dict):
        if not schema:
            return dict(ANY_OBJECT), "json_object"
        return schema, str(schema.get("title") or "json_schema")
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        model: type[BaseModel] = schema
        return model.model_json_schema(), model.__name__
    if isinstance(schema, type) and _is_typeddict(schema):
        return _typeddict_schema(schema), schema.__name__
    raise ConfigError(f"cannot make a JSON schema from {schema!r}; pass a pydantic model class, a "
                      "TypedDict class or a JSON schema dict")


def _typeddict_schema(td: type) -> dict[str, Any]:
    try:
        return TypeAdapter(td).json_schema()
    except Exception:  # pydantic refuses typing.TypedDict before Python 3.12: rebuild it portably
        import typing_extensions

        # A TypedDict made at run time: mypy reads only the literal-name form, hence the ignore.
        twin = typing_extensions.TypedDict(td.__name__, dict(td.__annotations__),  # type: ignore[misc]
                                           total=td.__total__)
        twin.__required_keys__ = getattr(td, "__required_keys__", twin.__required_keys__)
        twin.__optional_keys__ = getattr(td, "__optional_keys__", twin.__optional_keys__)
        twin.__doc__ = td.__doc__
        return TypeAdapter(twin).json_schema()


def _is_typeddict(obj: type) -> bool:
    return isinstance(obj, type) and issubclass(obj, dict) and hasattr(obj, "__annotations__") \
        and hasattr(obj, "__total__")
