"""How every section of a user's file is validated (grid and space files, dataset cards, the training settings beside
the runners that use them): unknown keys are errors, and so are NaN and the infinities (`epochs: .inf` would train
forever, `temperature: .inf` to NaN gradients) and true/false where a number goes (pydantic would read `limit: true`
as 1). Pydantic only, no torch."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

NUMBERS = (int, float)


class Schema(BaseModel):
    """A section of a user's file (see the module doc)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_truth_value_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        kinds = get_args(annotation) or (annotation,)
        if isinstance(value, bool) and bool not in kinds and any(kind in NUMBERS for kind in kinds):
            raise ValueError(f"{str(value).lower()} is not a number; give a number")
        return value
