"""Error reports (the DEBUG page of ``make run``, mailed or logged reports) without secrets."""

from __future__ import annotations

from typing import Any

from django.views.debug import SafeExceptionReporterFilter


class SecretsHiddenFilter(SafeExceptionReporterFilter):
    """Hides the variables that ``sensitive_variables`` marks (a key being checked or just
    created) with DEBUG on too. Django's own filter shows them whenever DEBUG is on, so the
    embedded server's error page would print a write key among a frame's local variables."""

    def is_active(self, request: Any) -> bool:
        return True
