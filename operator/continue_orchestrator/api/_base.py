"""Shared pieces of every resource model: naming, Kubernetes metadata, conditions.

Fields are snake_case in Python and camelCase on the wire, the way Kubernetes spells
them. Attribute docstrings become the schema descriptions that ``kubectl explain``
shows, so every field carries one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, NamedTuple

import pydantic
import pydantic_core
from pydantic import alias_generators

GROUP = "orchestrator.continue.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class CrossFieldRule(NamedTuple):
    """A rule spanning several fields, enforced twice from one declaration.

    The API server evaluates ``cel`` (an ``x-kubernetes-validations`` entry); offline
    validation evaluates ``holds`` on the parsed model. A transition rule (one that
    reads ``oldSelf``) has no offline form: ``holds`` is None.
    """

    cel: str
    message: str
    holds: Callable[[Any], bool] | None


def exactly_one_of(first: str, second: str, *, prefix: str = "") -> CrossFieldRule:
    """The rule that exactly one of two optional fields (Python names) is set; the
    message names them on the wire, after ``prefix`` (``"agent."``)."""
    wire = alias_generators.to_camel(first), alias_generators.to_camel(second)
    return CrossFieldRule(
        cel=f"has(self.{wire[0]}) != has(self.{wire[1]})",
        message=f"set exactly one of {prefix}{wire[0]} or {prefix}{wire[1]}",
        holds=lambda model: (getattr(model, first) is None) != (getattr(model, second) is None),
    )


class Model(pydantic.BaseModel):
    """Base of all wire models: camelCase aliases, unknown fields rejected."""

    cross_field_rules: ClassVar[tuple[CrossFieldRule, ...]] = ()

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    @pydantic.model_validator(mode="after")
    def _check_cross_field_rules(self) -> Model:
        for rule in type(self).cross_field_rules:
            if rule.holds is not None and not rule.holds(self):
                raise pydantic_core.PydanticCustomError("cross_field", rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls,
        core_schema: pydantic_core.CoreSchema,
        handler: pydantic.GetJsonSchemaHandler,
    ) -> dict[str, Any]:
        schema = handler.resolve_ref_schema(handler(core_schema))
        rules = cls.__dict__.get("cross_field_rules", ())
        if rules:
            schema["x-kubernetes-validations"] = [
                {"rule": rule.cel, "message": rule.message} for rule in rules
            ]
        return schema

    def wire(self) -> dict[str, Any]:
        """The object as it goes on the wire: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ObjectMeta(pydantic.BaseModel):
    """The subset of Kubernetes ObjectMeta the project reads; the rest is kept as is."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel, populate_by_name=True, extra="allow"
    )

    name: str | None = pydantic.Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN)
    generate_name: str | None = None
    namespace: str | None = pydantic.Field(default=None, max_length=63, pattern=DNS_LABEL)
    labels: dict[str, str] = pydantic.Field(default_factory=dict)
    annotations: dict[str, str] = pydantic.Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class Condition(Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = pydantic.Field(max_length=316)
    """Type of condition in CamelCase, for example PolicyValid, SandboxReady or Completed."""
    status: Literal["True", "False", "Unknown"]
    """Status of the condition: True, False or Unknown."""
    observed_generation: int | None = pydantic.Field(default=None, ge=0)
    """The metadata.generation this condition was set from."""
    last_transition_time: str
    """When the condition last changed status (RFC 3339)."""
    reason: str = pydantic.Field(max_length=1024, pattern=CONDITION_REASON)
    """A CamelCase reason for the last transition, for machines."""
    message: str = pydantic.Field(default="", max_length=32768)
    """A human-readable message about the last transition."""
