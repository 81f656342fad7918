"""An execution's history for the admin: each version's hash check, any version's hydrated
state, and what changed between two versions, field by field.

A state is read the way the service reads it: ``manifest_state`` (which checks the manifest's
hash first) through the owner's own service hydrator. The admin holds a state in memory to show
or diff it, so a state larger than ``STATE_LIMIT_BYTES`` is refused before its blobs are read
(its size is known from its pointers); the SDK reads such a state in a Lambda instead.

Every object a state points at must lie under its owner's prefix in the store: the service
checks that when it records a version, and the admin checks it again before it reads one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.core.paginator import Page, Paginator

from analemma_sdk.statebag import StateBag
from analemma_sdk.statebag.canonical import value_json
from analemma_sdk.statebag.errors import StateBagError
from analemma_sdk.statebag.pointers import BlobRef, InlineRef, ListRef

from .models import Execution, Manifest, ManifestParent
from .services import manifest_state, manifest_verify
from .services.hydrators import service_hydrator

VERSIONS_PER_PAGE = 20
STATE_LIMIT_BYTES = 16 * 1024 * 1024
# A page shows this much of a state's JSON; the download has all of it.
STATE_PREVIEW_BYTES = 512 * 1024
MAX_CHANGES = 500
# The diff descends into objects and lists this deep at most; below, a subtree is one change.
MAX_DIFF_DEPTH = 64
PREVIEW_CHARS = 400
_MISSING: Any = object()
COMMITTED_VIA = {"2pc": "two-phase", "direct": "one step", "noupload": "one step, nothing uploaded"}


class StateUnavailable(Exception):
    """The version's state cannot be shown: too large, failing its hash check, or its blobs
    collected. The message says which, for the operator."""


@dataclass(frozen=True)
class VersionRow:
    manifest: Manifest
    parents: list[int]
    chain_ok: bool

    @property
    def committed_via(self) -> str:
        return COMMITTED_VIA.get(self.manifest.committed_via, self.manifest.committed_via)


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "added", "removed" or "changed"
    before: str
    after: str


@dataclass(frozen=True)
class StateDiff:
    changes: list[Change]
    truncated: bool
    fields_added: int
    fields_removed: int
    fields_changed: int
    fields_unchanged: int


def version_page(execution: Execution, page_number: Any) -> tuple[Page[Manifest], list[VersionRow]]:
    """One page of the execution's versions, newest first, each checked with ``manifest_verify``
    (the manifest API's own check: a few queries a version, so a page holds a bounded number)."""
    versions = Manifest.objects.filter(execution=execution).order_by("-version")
    page = Paginator(versions, VERSIONS_PER_PAGE).get_page(page_number)
    manifests = list(page.object_list)
    parents: dict[int, list[int]] = {manifest.pk: [] for manifest in manifests}
    links = ManifestParent.objects.filter(child__in=manifests).order_by("child_id", "position")
    for child_id, parent_version in links.values_list("child_id", "parent__version"):
        parents[child_id].append(parent_version)
    rows = []
    for manifest in manifests:
        manifest.execution = execution  # the check reads it; it is this execution
        rows.append(VersionRow(manifest, parents[manifest.pk], manifest_verify(manifest)))
    return page, rows


def manifest_of(execution: Execution, version: int) -> Manifest | None:
    manifest = Manifest.objects.filter(execution=execution, version=version).first()
    if manifest is not None:
        manifest.execution = execution
    return manifest


def stored_size(bag: StateBag) -> int:
    """The state's JSON size, from its stored forms alone (nothing is read from the store)."""
    size = 2
    for name in bag:
        pointer = bag.pointer(name)
        size += len(value_json(name)) + 2
        if isinstance(pointer, BlobRef | InlineRef):
            size += pointer.raw_size
        elif isinstance(pointer, ListRef):
            size += sum(chunk.blob.raw_size for chunk in pointer.chunks) + len(value_json(list(pointer.tail)))
        else:
            size += len(value_json(bag.stored_form(name)))
    return size


def foreign_keys(bag: StateBag, owner_id: str) -> list[str]:
    """The store keys the state points at outside ``owner_id``'s prefix (none, unless a row was
    written behind the service's back)."""
    prefix = f"o/{owner_id}/"
    keys: list[str] = []
    for name in bag:
        pointer = bag.pointer(name)
        if isinstance(pointer, BlobRef):
            keys.append(pointer.key)
        elif isinstance(pointer, ListRef):
            keys.extend(chunk.blob.key for chunk in pointer.chunks)
    return [key for key in keys if not key.startswith(prefix)]


def state_bag(manifest: Manifest) -> StateBag:
    """The version's state, lazily, checked against its hash, its owner's prefix and bounded in
    size."""
    execution = manifest.execution
    try:
        bag = manifest_state(manifest, service_hydrator(execution.owner_id, execution.workflow_id))
    except StateBagError as exc:
        raise StateUnavailable(f"v{manifest.version} cannot be read: {exc}") from exc
    foreign = foreign_keys(bag, execution.owner_id)
    if foreign:
        raise StateUnavailable(
            f"v{manifest.version} cannot be read: it points at {len(foreign)} object(s) outside its "
            f"owner's prefix o/{execution.owner_id}/ (the first: {foreign[0]}); nothing was read"
        )
    size = stored_size(bag)
    if size > STATE_LIMIT_BYTES:
        raise StateUnavailable(
            f"v{manifest.version}'s state is {size:,} bytes, over the admin's limit of "
            f"{STATE_LIMIT_BYTES:,}: read it with the SDK (hydrate) instead"
        )
    return bag


def _loaded(bag: StateBag, manifest: Manifest, name: str) -> Any:
    try:
        return bag[name]
    except StateBagError as exc:
        reason = "released by retention and collected" if not manifest.retained else str(exc)
        raise StateUnavailable(f"v{manifest.version}'s field {name!r} cannot be read: {reason}") from exc


def state_json(manifest: Manifest) -> bytes:
    """The whole hydrated state as JSON, fields and keys in their order."""
    bag = state_bag(manifest)
    return value_json({name: _loaded(bag, manifest, name) for name in bag})


def preview(value: Any) -> str:
    if value is _MISSING:
        return ""
    try:
        text = value_json(value).decode("utf-8")
    except (StateBagError, RecursionError):
        return "(nested too deep to show here: download the version)"
    return text if len(text) <= PREVIEW_CHARS else f"{text[:PREVIEW_CHARS]}… ({len(text):,} characters)"


def _same(before: Any, after: Any) -> bool:
    """Equal as JSON values (keys in any order; 1, 1.0 and true told apart), compared level by
    level with a stack of its own: no recursion, however deep they nest."""
    pending = [(before, after)]
    while pending:
        left, right = pending.pop()
        if type(left) is not type(right):
            return False
        if isinstance(left, dict):
            if left.keys() != right.keys():
                return False
            pending.extend((left[key], right[key]) for key in left)
        elif isinstance(left, list):
            if len(left) != len(right):
                return False
            pending.extend(zip(left, right, strict=True))
        elif left != right:
            return False
    return True


def _walk(path: str, before: Any, after: Any, depth: int = 0) -> Iterator[Change]:
    """Changes from ``before`` to ``after``, down to the values that differ: into objects by
    key and into lists by position, ``MAX_DIFF_DEPTH`` levels at most; anything else, and what
    lies deeper, is changed as a whole."""
    if before is _MISSING or after is _MISSING:
        yield Change(path, "added" if before is _MISSING else "removed", preview(before), preview(after))
    elif depth >= MAX_DIFF_DEPTH:
        if not _same(before, after):
            yield Change(path, "changed", preview(before), preview(after))
    elif isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(key for key in after if key not in before)]:
            yield from _walk(f"{path}.{key}", before.get(key, _MISSING), after.get(key, _MISSING), depth + 1)
    elif isinstance(before, list) and isinstance(after, list):
        for index in range(max(len(before), len(after))):
            yield from _walk(
                f"{path}[{index}]",
                before[index] if index < len(before) else _MISSING,
                after[index] if index < len(after) else _MISSING,
                depth + 1,
            )
    elif type(before) is not type(after) or before != after:
        yield Change(path, "changed", preview(before), preview(after))


def state_diff(older: Manifest, newer: Manifest) -> StateDiff:
    """What changed from ``older`` to ``newer``. A field whose stored form is the same in both
    (the same blob, or the same inline value) is unchanged without being read."""
    before_bag, after_bag = state_bag(older), state_bag(newer)
    changes: list[Change] = []
    counts = {"added": 0, "removed": 0, "changed": 0, "unchanged": 0}
    truncated = False
    for name in [*before_bag, *(name for name in after_bag if name not in before_bag)]:
        in_before, in_after = name in before_bag, name in after_bag
        if in_before and in_after and before_bag.stored_form(name) == after_bag.stored_form(name):
            counts["unchanged"] += 1
            continue
        before = _loaded(before_bag, older, name) if in_before else _MISSING
        after = _loaded(after_bag, newer, name) if in_after else _MISSING
        field_changes = _walk(name, before, after)
        first = next(field_changes, None)
        if first is None:
            counts["unchanged"] += 1
            continue
        counts["added" if not in_before else "removed" if not in_after else "changed"] += 1
        for change in itertools.chain((first,), field_changes):
            if len(changes) == MAX_CHANGES:
                truncated = True
                break
            changes.append(change)
    return StateDiff(
        changes=changes,
        truncated=truncated,
        fields_added=counts["added"],
        fields_removed=counts["removed"],
        fields_changed=counts["changed"],
        fields_unchanged=counts["unchanged"],
    )
