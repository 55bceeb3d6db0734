"""Strict option models: the base of every typed section of an experiment file.

Each component owns its options next to its code (a task's in its file in ``rnnlab.tasks``)
and ``rnnlab.config`` composes the experiment schema from them. Torch-free, like the config:
``rnnlab validate`` imports every option model.
"""

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError


class Options(BaseModel):
    """Strict, immutable config section: unknown keys, wrong types and non-finite numbers are
    errors; the docstring under each field is its documentation."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False
    )


def _number(value: Any) -> Any:
    """YAML reads true/false/on/off as booleans; a boolean is never a number here."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "expected a number, got a boolean")
    return value


Int = Annotated[int, BeforeValidator(_number)]
Real = Annotated[float, BeforeValidator(_number)]
