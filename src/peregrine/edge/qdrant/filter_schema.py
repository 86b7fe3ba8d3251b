"""The filter language, as documentation for the OpenAPI document.

Requests are validated by the engine's filter compiler (one source of truth);
these models only describe what it accepts, so that clients and the fuzzer in
the test suite see the real shape.
"""

from __future__ import annotations

from typing import Annotated, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

PointId = Annotated[int, Field(ge=0)] | str
Scalar = str | int | bool


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MatchValue(_Doc):
    value: Scalar


class MatchAny(_Doc):
    any: list[str] | list[int]


class MatchExcept(_Doc):
    except_: list[str] | list[int] = Field(alias="except")


class MatchText(_Doc):
    text: str


class Range(_Doc):
    lt: float | None = None
    gt: float | None = None
    gte: float | None = None
    lte: float | None = None


class FieldCondition(_Doc):
    key: str = Field(min_length=1, description="payload path; dots and [] reach into objects")
    match: MatchValue | MatchAny | MatchExcept | MatchText | None = None
    range: Range | None = None


class PayloadField(_Doc):
    key: str = Field(min_length=1)


class IsEmptyCondition(_Doc):
    is_empty: PayloadField


class IsNullCondition(_Doc):
    is_null: PayloadField


class HasIdCondition(_Doc):
    has_id: list[PointId]


class MinShould(_Doc):
    conditions: list[Condition]
    min_count: int = Field(ge=0)


class Filter(_Doc):
    must: list[Condition] | Condition | None = None
    should: list[Condition] | Condition | None = None
    must_not: list[Condition] | Condition | None = None
    min_should: MinShould | None = None


Condition: TypeAlias = (
    FieldCondition | IsEmptyCondition | IsNullCondition | HasIdCondition | Filter)
MinShould.model_rebuild()
Filter.model_rebuild()
