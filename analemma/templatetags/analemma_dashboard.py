"""``{% analemma_dashboard as board %}``: the admin home page's figures, for the viewer."""

from __future__ import annotations

from typing import Any

from django import template

from analemma.dashboard import Dashboard, dashboard_build

register = template.Library()


@register.simple_tag(takes_context=True)
def analemma_dashboard(context: dict[str, Any]) -> Dashboard:
    """Each section only for a viewer who may see its rows in the admin."""
    user = context["request"].user
    return dashboard_build(
        rollout=user.has_perm("rollout.view_flag") and user.has_perm("rollout.view_rolloutplan"),
        audit=user.has_perm("audit.view_auditentry"),
        statebag=user.has_perm("statebag.view_execution"),
    )
