"""Validation shared by the RL configs: pydantic models with unknown keys refused, errors naming the key.

Every RL config (reward schema, agents, online learner) is a frozen pydantic model built through
``validate_config``, so a typo or an out-of-range value fails the same way ``policy.yaml`` does:
``RLConfigError: meta_strategy config: epsilon_decay: Input should be less than or equal to 1 (got 1.5)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from clm.policy import validation_problems


class RLConfigError(ValueError):
    """An RL config (or the reward schema) is invalid; the message names the config and the key."""


class RLSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


M = TypeVar("M", bound=BaseModel)


def validate_config(model: type[M], data: Any, *, source: str) -> M:
    """``model`` from ``data`` (a mapping, an instance of ``model`` or None for the defaults).

    Problems are reported together, each with its key path, as ``RLConfigError``."""
    if isinstance(data, model):
        return data
    if data is None:
        data = {}
    if isinstance(data, BaseModel):
        data = data.model_dump()
    if not isinstance(data, Mapping):
        raise RLConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise RLConfigError(f"{source}: " + "; ".join(validation_problems(exc))) from None
