"""Every write of the rollout app, by entity: environments, flags, revisions, documents and
plans. Keys are the keys app's, the audit log the audit app's."""

from analemma_sdk.flags.spec import InvalidDocumentError, InvalidFlagError

from .documents import conditional, document_cached, document_publish, document_publish_latest
from .environments import environment_create, environment_rename
from .flags import (
    FLAG_CHANGE_PERMISSION,
    flag_change_allowed,
    flag_create,
    flag_definition_check,
    flag_details_update,
    flag_kill,
    flag_state_check,
    flag_state_update,
)
from .plans import (
    GuardVerdict,
    InvalidPlanError,
    PlanPermissionDenied,
    PlanStateError,
    plan_abort,
    plan_check_steps,
    plan_check_value,
    plan_create,
    plan_delete,
    plan_pause,
    plan_resume,
    plan_start,
    plan_update,
    plans_advance,
)
from .revisions import (
    UnknownRevision,
    flag_rollback,
    revision_create,
    revision_rollback,
    rollback_preview,
)

__all__ = [
    "FLAG_CHANGE_PERMISSION",
    "GuardVerdict",
    "InvalidDocumentError",
    "InvalidFlagError",
    "InvalidPlanError",
    "PlanPermissionDenied",
    "PlanStateError",
    "UnknownRevision",
    "conditional",
    "document_cached",
    "document_publish",
    "document_publish_latest",
    "environment_create",
    "environment_rename",
    "flag_change_allowed",
    "flag_create",
    "flag_definition_check",
    "flag_details_update",
    "flag_kill",
    "flag_rollback",
    "flag_state_check",
    "flag_state_update",
    "plan_abort",
    "plan_check_steps",
    "plan_check_value",
    "plan_create",
    "plan_delete",
    "plan_pause",
    "plan_resume",
    "plan_start",
    "plan_update",
    "plans_advance",
    "revision_create",
    "revision_rollback",
    "rollback_preview",
]
