"""A flag's tags: words operators find flags by in the admin. They describe the flag only, so
a change makes no revision (SDKs are not served tags), but it is audited."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.services import audit_record

from ..models import Flag

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,39}\Z")


def tags_normalise(text: str) -> str:
    """Tags as stored: lowercase words separated by one space, each once, in the order given.
    Commas separate as spaces do. ValidationError for a word that is not a tag."""
    words = []
    for word in re.split(r"[\s,]+", text.strip().lower()):
        if not word or word in words:
            continue
        if not TAG_PATTERN.match(word):
            raise ValidationError(
                f"{word!r} is not a tag: lowercase letters, digits, _ . : - (at most 40 characters)"
            )
        words.append(word)
    return " ".join(words)


def flag_tags_set(*, flag: Flag, tags: str, actor: str) -> Flag:
    """Replace a flag's tags (``tags`` as typed: words separated by spaces or commas)."""
    normalised = tags_normalise(tags)
    with transaction.atomic():
        locked = Flag.objects.select_for_update().get(pk=flag.pk)
        before = locked.tags
        if before == normalised:
            return locked
        locked.tags = normalised
        locked.full_clean()
        locked.save(update_fields=["tags"])
        audit_record(
            action="flag.tag",
            actor=actor,
            target=flag.key,
            before={"tags": before.split()},
            after={"tags": normalised.split()},
        )
    return locked
