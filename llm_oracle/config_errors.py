"""Turn pydantic validation errors into one line per problem, naming the key and what is allowed."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def format_errors(section: str, exc: Exception, model: type[BaseModel]) -> str:
    if not isinstance(exc, ValidationError):
        return f"invalid '{section}' config: {exc}"
    problems = [_describe(section, err, model) for err in exc.errors()]
    return f"invalid '{section}' config:\n" + "\n".join(f"  - {p}" for p in problems)


def _describe(section: str, err: Any, model: type[BaseModel]) -> str:
    loc = ".".join(str(p) for p in (section, *err["loc"]))
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        owner = _model_at(model, err["loc"][:-1])
        allowed = ", ".join(owner.model_fields) if owner else "see README"
        return f"{loc}: unknown key; allowed keys: {allowed}"
    if err["type"] == "enum":
        return f"{loc}: {value!r} is not allowed; allowed values: {err['ctx']['expected']}"
    if err["type"] == "model_type" and not err["loc"]:
        return f"{section}: must be an object, got {type(value).__name__}"
    if err["type"] in _RANGE_ERRORS and err["loc"]:
        owner = _model_at(model, err["loc"][:-1])
        field = owner.model_fields.get(str(err["loc"][-1])) if owner else None
        allowed = _bounds(field.metadata) if field else None
        if allowed:
            return f"{loc}: {value!r} is out of bounds; allowed: {allowed}"
    return f"{loc}: {err['msg']} (got {value!r})"


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
# annotated_types' bound objects: attribute, open bound, lower bound
_BOUND_ATTRS = (("ge", False, True), ("gt", True, True), ("le", False, False), ("lt", True, False))


def _bounds(metadata: list[Any]) -> str | None:
    """A field's range in interval notation, e.g. `[0, 720]` or `(0, 1]`."""
    low = high = None
    low_open = high_open = False
    for item in metadata:
        for name, is_open, is_low in _BOUND_ATTRS:
            bound = getattr(item, name, None)
            if bound is None:
                continue
            if is_low:
                low, low_open = bound, is_open
            else:
                high, high_open = bound, is_open
    if low is None and high is None:
        return None
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    return f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model owning the key at `path`, walking through nested models and dict values."""
    parts = list(path)
    while parts:
        field = model.model_fields.get(str(parts.pop(0)))
        annotation = field.annotation if field else None
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            if parts:
                parts.pop(0)  # the dict key (e.g. a model id) names no field
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
