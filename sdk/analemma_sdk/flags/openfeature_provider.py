"""An OpenFeature provider over FlagClient (``pip install analemma-sdk[openfeature]``).

    from openfeature import api
    from analemma_sdk.flags.openfeature_provider import AnalemmaProvider

    api.set_provider(AnalemmaProvider(FlagClient(url, key)))
    api.get_client().get_boolean_value("use_batching", False, EvaluationContext("exec-42"))

The targeting key is the unit (the execution id); context attributes feed attribute rules
and ``bucket_by``. Reasons map to OpenFeature's: off -> DISABLED, targeted ->
TARGETING_MATCH, rollout -> SPLIT, default -> DEFAULT, stale -> STALE, error -> ERROR with
the error code. Like the client, it never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from .client import FlagClient
from .document import FlagDetails

REASONS = {
    "off": Reason.DISABLED,
    "targeted": Reason.TARGETING_MATCH,
    "rollout": Reason.SPLIT,
    "default": Reason.DEFAULT,
    "stale": Reason.STALE,
    "error": Reason.ERROR,
}
ERRORS = {
    "FLAG_NOT_FOUND": ErrorCode.FLAG_NOT_FOUND,
    "TYPE_MISMATCH": ErrorCode.TYPE_MISMATCH,
    "PROVIDER_NOT_READY": ErrorCode.PROVIDER_NOT_READY,
    "GENERAL": ErrorCode.GENERAL,
}


class AnalemmaProvider(AbstractProvider):
    def __init__(self, client: FlagClient) -> None:
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name="analemma")

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(self.client.bool_details, flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(self.client.string_details, flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        details = self._resolve(self.client.number_details, flag_key, default_value, evaluation_context)
        if details.error_code is None and not float(details.value).is_integer():
            return _mismatch(default_value, f"{flag_key} is {details.value}, not an integer")
        return _with_value(details, int(details.value))

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        details = self._resolve(self.client.number_details, flag_key, default_value, evaluation_context)
        return _with_value(details, float(details.value))

    def resolve_object_details(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[Any]:
        details = self._resolve(self.client.json_details, flag_key, default_value, evaluation_context)
        if details.error_code is None and not isinstance(details.value, dict | list):
            return _mismatch(default_value, f"{flag_key} is not an object or a list")
        return details

    def _resolve(
        self,
        evaluate: Callable[..., FlagDetails],
        flag_key: str,
        default_value: Any,
        context: EvaluationContext | None,
    ) -> FlagResolutionDetails[Any]:
        unit = context.targeting_key if context is not None else None
        attributes = dict(context.attributes) if context is not None and context.attributes else None
        details = evaluate(flag_key, unit=unit, default=default_value, attributes=attributes)
        return FlagResolutionDetails(
            value=details.value,
            reason=REASONS.get(details.reason, Reason.UNKNOWN),
            variant=details.variant,
            error_code=ERRORS.get(details.error) if details.error else None,
            error_message=_message(details) if details.error else None,
            flag_metadata={"revision": details.revision} if details.revision is not None else {},
        )


def _message(details: FlagDetails) -> str:
    return {
        "FLAG_NOT_FOUND": f"no flag {details.key!r} in the flag set",
        "TYPE_MISMATCH": f"flag {details.key!r} holds another type",
        "PROVIDER_NOT_READY": "no flag set yet (server unreachable and no cache or snapshot)",
    }.get(details.error or "", "evaluation failed")


def _with_value(details: FlagResolutionDetails[Any], value: Any) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=value,
        reason=details.reason,
        variant=details.variant,
        error_code=details.error_code,
        error_message=details.error_message,
        flag_metadata=details.flag_metadata,
    )


def _mismatch(default_value: Any, message: str) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=default_value, reason=Reason.ERROR, error_code=ErrorCode.TYPE_MISMATCH, error_message=message
    )
