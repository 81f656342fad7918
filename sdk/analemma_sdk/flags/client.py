"""FlagClient: the flag set, fetched with ETags, cached in memory and in a file, evaluated locally.

Made for Lambda: no background thread (it would be frozen between invocations anyway), so the
document is refreshed on use once its TTL has passed, with jitter so a fleet does not poll in
step. Nothing here raises into the caller: on any failure the client serves the last known good
document (reason ``stale``), then the caller's defaults (reason ``error``), and each call waits
on the network for at most ``timeout`` seconds in all.

Telemetry (on when the client has a URL and a key, unless ``telemetry=False`` or
``ANALEMMA_TELEMETRY=false``): each evaluation is counted into its outcome's tally inside the
compiled flag (``tally``: one counter call, and the unit's bucketing hash into a sketch), and
the counts go to the service with the next document refresh that reaches it, within a small
budget of their own (``REFRESH_TELEMETRY_BUDGET``, never more than what the refresh left of its
``timeout``), or with ``flush(timeout=...)`` at the end of a handler. A send on the refresh path
that fails or runs out of time stops the refresh path sending for a back-off (5 minutes,
doubling up to 30): a slow telemetry endpoint never costs an evaluation more than the budget,
nor every refresh that.
Evaluations with no compiled outcome (an unknown flag, a type mismatch, a stale document) are
logged instead and counted in bulk. ``analemma_sdk.telemetry`` loads when a batch is first
taken (a send, or 256 logged evaluations), and never when telemetry is off.
"""

from __future__ import annotations

import _thread
import marshal
import os
import time
from collections.abc import Mapping

from .. import telemetry_enabled
from ..bucketing import sha1
from .document import (
    ERROR,
    FLAG_NOT_FOUND,
    GENERAL,
    PROVIDER_NOT_READY,
    STALE,
    TYPE_MISMATCH,
    FlagDetails,
    FlagSet,
    InvalidDocumentError,
)
from .spec import MAX_DOCUMENT_BYTES, sdk_key_environment

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    import builtins  # annotations after FlagClient.bool, which shadows the builtin in the class
    from collections.abc import Callable
    from typing import Any

    from ..telemetry.sender import Telemetry

DEFAULT_TTL = 30.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_MAX_BYTES = MAX_DOCUMENT_BYTES
JITTER = 0.2  # a refresh falls due between 80 % and 100 % of the TTL
MAX_BACKOFF = 60.0
_CACHE_MAGIC = b"AFS1"
_USE_DEFAULT_PATH = object()
DEFAULT_FLUSH_TIMEOUT = 0.5
MIN_TELEMETRY_BUDGET = 0.02  # a refresh that left less than this for telemetry sends none
REFRESH_TELEMETRY_BUDGET = 0.075  # what an evaluation that refreshed may spend sending counts
REFRESH_TELEMETRY_BACKOFF = 300.0  # after a refresh-path send failed; doubles each time
MAX_REFRESH_TELEMETRY_BACKOFF = 1800.0
TELEMETRY_FOLD_AT = 256  # logged evaluations counted at once (telemetry.recorder.FOLD_AT)
MAX_RETIRED = 8  # replaced flag sets kept for their tallies before they are counted

READY = "ready"
STALE_STATE = "stale"
NOT_READY = "not_ready"
UNAUTHORIZED = "unauthorized"


def _jitter() -> float:
    """A factor in [1 - JITTER, 1]; os.urandom keeps `random` (and its imports) out of cold start."""
    return 1.0 - JITTER * int.from_bytes(os.urandom(2), "big") / 0xFFFF


def _log(level: str, message: str, *args: Any) -> None:
    import logging  # only when there is something to say

    getattr(logging.getLogger("analemma_sdk.flags"), level)(message, *args)


def _is_bool(value: Any) -> bool:
    return value is True or value is False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_json(value: Any) -> bool:
    return True


def _copy(value: Any) -> Any:
    """JSON values handed out are copies: a caller editing one must not edit the document."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class ClientStatus:
    """Where the client stands: ``state`` is ready, stale, not_ready or unauthorized."""

    __slots__ = ("state", "revision", "http_status", "error", "fetched_at", "failures")
    state: str
    revision: int | None
    http_status: int | None
    error: str | None
    fetched_at: float | None
    failures: int | None

    def __init__(self, **fields: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.get(name))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"ClientStatus({inner})"


class FlagClient:
    """``FlagClient(base_url, sdk_key)``; then ``client.bool("flag", unit=execution_id)``.

    ``cache_path``: a file shared by the processes of one container (default: one per URL and
    key in the temp dir; ``None`` for none). ``bootstrap``: a document, or the path of a JSON
    snapshot bundled with the code, served until the first fetch succeeds. ``clock``: the
    monotonic seconds refreshes are scheduled by (``time.monotonic``; a test may step its own).
    ``telemetry``: on by default when ``base_url`` and ``sdk_key`` are set; False sends nothing
    and counts nothing (so does ``ANALEMMA_TELEMETRY=false``); ``telemetry_units``: False (or
    ``ANALEMMA_TELEMETRY_UNITS=false``) leaves the distinct-unit sketch out.
    """

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        ttl: float = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        cache_path: Any = _USE_DEFAULT_PATH,
        bootstrap: Any = None,
        environment: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] | None = None,
        telemetry: builtins.bool | None = None,
        telemetry_units: builtins.bool | None = None,
    ) -> None:
        if not ttl > 0 or not timeout > 0:
            raise ValueError("ttl and timeout must be positive")
        # A missing setting (os.environ.get -> None) must not stop the function from loading:
        # the client then serves defaults and reports why.
        base_url, sdk_key = str(base_url or ""), str(sdk_key or "")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/api/v1/flagset"
        self._key = sdk_key
        self.ttl = float(ttl)
        self.timeout = float(timeout)
        self.max_bytes = max_bytes
        self.environment = environment or sdk_key_environment(sdk_key)
        # Names and matches the file cache; sha1 is already loaded for bucketing.
        self._fingerprint = sha1(f"{self.url}\n{sdk_key}".encode()).hexdigest()[:24]
        if cache_path is _USE_DEFAULT_PATH:
            cache_path = os.path.join(_temp_dir(), f"analemma-flags-{self._fingerprint[:16]}.bin")
        self.cache_path = os.fspath(cache_path) if cache_path is not None else None
        self._lock = _thread.allocate_lock()
        self._flagset: FlagSet | None = None
        self._etag: str | None = None
        self._fetched_at = 0.0  # wall clock of the last confirmation by the server
        # Monotonic seconds: when to look for a newer document. A test can pass its own clock.
        self._clock = clock or time.monotonic
        self._next_check = 0.0
        self._stale = False
        self._failures = 0
        self._http_status: int | None = None
        self._error: str | None = None
        self._unauthorized = False
        # Telemetry: compiled flags count their outcomes ("counts", or "units" with the
        # distinct-unit sketch); the log holds evaluations with no compiled outcome (counted in
        # bulk by the recorder, loaded when a batch is first taken). None: telemetry is off.
        on = telemetry_enabled(telemetry, default=bool(self.base_url and sdk_key))
        self._telemetry_units = bool(telemetry_enabled(telemetry_units, "ANALEMMA_TELEMETRY_UNITS"))
        self._counting = ("units" if self._telemetry_units else "counts") if on else None
        self._log: list[tuple[Any, ...]] | None = [] if on else None
        self._retired: list[FlagSet] = []  # replaced flag sets whose tallies no batch took yet
        self._draining: list[FlagSet] = []  # replaced flag sets one batch took already
        self._telemetry: Telemetry | None = None
        self._telemetry_after = 0.0  # the client's clock: no refresh-path send before this
        self._telemetry_backoff = 0.0
        if bootstrap is not None:
            self._load_bootstrap(bootstrap)
        self._load_file_cache()
        _register(self)

    # Evaluation ------------------------------------------------------------------------
    def bool(
        self,
        key: str,
        unit: str | None = None,
        default: bool = False,
        attributes: Mapping[str, Any] | None = None,
    ) -> bool:
        return self._value(key, unit, default, attributes, _is_bool)  # type: ignore[no-any-return]  # checked by _is_bool

    def string(
        self,
        key: str,
        unit: str | None = None,
        default: str = "",
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        return self._value(key, unit, default, attributes, _is_string)  # type: ignore[no-any-return]  # checked by _is_string

    def number(
        self,
        key: str,
        unit: str | None = None,
        default: float = 0,
        attributes: Mapping[str, Any] | None = None,
    ) -> float:
        return self._value(key, unit, default, attributes, _is_number)  # type: ignore[no-any-return]  # checked by _is_number

    def json(
        self,
        key: str,
        unit: str | None = None,
        default: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any:
        return _copy(self._value(key, unit, default, attributes, _is_json))

    def bool_details(
        self,
        key: str,
        unit: str | None = None,
        default: builtins.bool = False,
        attributes: Mapping[str, Any] | None = None,
    ) -> FlagDetails:
        return self._details(key, unit, default, attributes, _is_bool)

    def string_details(
        self,
        key: str,
        unit: str | None = None,
        default: str = "",
        attributes: Mapping[str, Any] | None = None,
    ) -> FlagDetails:
        return self._details(key, unit, default, attributes, _is_string)

    def number_details(
        self,
        key: str,
        unit: str | None = None,
        default: float = 0,
        attributes: Mapping[str, Any] | None = None,
    ) -> FlagDetails:
        return self._details(key, unit, default, attributes, _is_number)

    def json_details(
        self,
        key: str,
        unit: str | None = None,
        default: Any = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> FlagDetails:
        details = self._details(key, unit, default, attributes, _is_json)
        details.value = _copy(details.value)
        return details

    def _value(self, key: str, unit: Any, default: Any, attributes: Any, accepts: Any) -> Any:
        # The hot path: no details object, one clock read when the document is fresh, and with
        # telemetry one list.append.
        try:
            if self._clock() >= self._next_check:
                self._refresh()
            flagset = self._flagset
            flag = flagset.flags.get(key) if flagset is not None else None
            if unit is not None and unit.__class__ is not str:
                unit = str(unit)
            if flag is None or not accepts(flag.default):  # a flag serves values of one kind
                outcome: tuple[Any, str | None, str] = (default, None, ERROR)
            elif self._stale:
                outcome = flag.evaluate(unit, attributes)  # (value, variant, reason), shared
                outcome = (outcome[0], outcome[1], STALE)
            elif self._counting is not None:
                return flag.counted(unit, attributes)[0]  # counted in the flag's tally
            else:
                return flag.evaluate(unit, attributes)[0]
        except Exception:  # evaluation must never raise into the caller
            return default
        log = self._log
        if log is not None:
            self._log_evaluation(key, outcome, flag, unit)
        return outcome[0]

    def _log_evaluation(self, key: str, outcome: tuple[Any, ...], flag: Any, unit: str | None) -> None:
        """Log an evaluation no compiled outcome counts (one C call, atomic, no lock); the
        recorder counts the log in bulk. The unit is kept as the flag's bucketing text, which
        the sketch hashes."""
        log = self._log
        if log is not None:
            text = None
            if unit is not None and self._telemetry_units:
                if flag is None:
                    text = f"{key}..{unit}"  # no flag: hashed as a flag with no salt would be
                elif flag.seed is not None:
                    text = f"{flag.seed}.{unit}"
                else:
                    text = f"{key}.{flag.salt}.{unit}"
            log.append((key, outcome, text))
            if len(log) >= TELEMETRY_FOLD_AT:
                self._fold_telemetry()

    def _details(self, key: str, unit: Any, default: Any, attributes: Any, accepts: Any) -> FlagDetails:
        try:
            unit = None if unit is None else str(unit)
        except Exception:  # evaluation must never raise into the caller
            return FlagDetails(key, default, ERROR, None, error=GENERAL)
        details, flag = self._counted_details(key, unit, default, attributes, accepts)
        if details.reason in (ERROR, STALE):  # no compiled outcome counted it
            self._log_evaluation(key, (details.value, details.variant, details.reason), flag, unit)
        return details

    def _counted_details(
        self, key: str, unit: str | None, default: Any, attributes: Any, accepts: Any
    ) -> tuple[FlagDetails, Any]:
        """The details, counted in the flag's tally when a compiled outcome served them; and
        the flag, if any."""
        revision = flag = None
        try:
            if self._clock() >= self._next_check:
                self._refresh()
            flagset = self._flagset
            if flagset is None:
                return FlagDetails(key, default, ERROR, None, error=PROVIDER_NOT_READY), None
            revision = flagset.revision
            flag = flagset.flags.get(key)
            if flag is None:
                return FlagDetails(key, default, ERROR, revision, error=FLAG_NOT_FOUND), None
            if not accepts(flag.default):
                return FlagDetails(key, default, ERROR, revision, error=TYPE_MISMATCH), flag
            if self._stale:
                value, variant, _ = flag.evaluate(unit, attributes)
                return FlagDetails(key, value, STALE, revision, variant), flag
            evaluate = flag.counted if self._counting is not None else flag.evaluate
            value, variant, reason = evaluate(unit, attributes)
            return FlagDetails(key, value, reason, revision, variant), flag
        except Exception:  # evaluation must never raise into the caller
            return FlagDetails(key, default, ERROR, revision, error=GENERAL), flag

    # State -----------------------------------------------------------------------------
    @property
    def revision(self) -> int | None:
        flagset = self._flagset
        return flagset.revision if flagset is not None else None

    @property
    def status(self) -> ClientStatus:
        if self._unauthorized:
            state = UNAUTHORIZED
        elif self._flagset is None:
            state = NOT_READY
        else:
            state = STALE_STATE if self._stale else READY
        return ClientStatus(
            state=state,
            revision=self.revision,
            http_status=self._http_status,
            error=self._error,
            fetched_at=self._fetched_at or None,
            failures=self._failures,
        )

    def refresh(self) -> builtins.bool:
        """Fetch now, whatever the TTL says; True when the document is confirmed current."""
        with self._lock:
            self._next_check = 0.0
            return self._fetch_guarded()

    def snapshot(self, path: str | os.PathLike[str]) -> builtins.bool:
        """Write the current document as a JSON snapshot to bundle with a deployment and pass
        as ``bootstrap``; False when there is no document to write."""
        import json

        flagset = self._flagset
        if flagset is None:
            return False
        record = {"document": flagset.raw, "etag": self._etag, "fetched_at": self._fetched_at}
        target = os.fspath(path)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(record, handle, sort_keys=True, indent=1)
        os.replace(temporary, target)
        return True

    # Telemetry -------------------------------------------------------------------------
    def flush(self, timeout: float = DEFAULT_FLUSH_TIMEOUT, *, force: builtins.bool = False) -> builtins.bool:
        """Send the telemetry recorded so far (for the end of a handler): returns within
        ``timeout`` seconds, never raises; True when it was delivered, there was nothing to
        send, or the last delivery is under ``ANALEMMA_TELEMETRY_INTERVAL`` (30 s) old, so a
        busy function sends one batch per interval (``force=True``, e.g. in a shutdown hook,
        sends anyway). What could not be sent waits for the next batch (``telemetry.sender``)."""
        if not self._recorded():
            return True  # off, or nothing counted yet
        try:
            sink = self.telemetry_sink()
        except Exception:  # never into the caller
            return False
        return sink.flush(timeout, force=force) if sink is not None else True

    def telemetry_sink(self) -> Telemetry | None:
        """Where this client's counts go (a hydrator configured with this client reports
        there too); None when telemetry is off. Loads the telemetry package."""
        if self._log is None:
            return None
        with _telemetry_lock:
            if self._telemetry is None:
                from ..telemetry.sender import Telemetry

                self._telemetry = Telemetry(
                    self.base_url,
                    self._key,
                    units=self._telemetry_units,
                    log=self._log,
                    tallies=self._tallies,
                )
        return self._telemetry

    def _recorded(self) -> builtins.bool:
        """Whether anything may be waiting to be sent, without loading the telemetry package:
        something logged, a sink already made, or a flag that has counted (its tallies exist)."""
        if self._log is None:
            return False
        if self._log or self._telemetry is not None:
            return True
        try:
            flagset = self._flagset
            sets = [*self._retired, *self._draining, *([flagset] if flagset is not None else [])]
            return any(flag.tallies for each in sets for flag in each.flags.values())
        except Exception:  # never into an evaluation: a batch taken finds out
            return True

    def _tallies(self) -> list[Any]:
        """The compiled flags whose tallies the next batch takes: the current flag set's, and
        those of the flag sets it replaced. A replaced set is taken by two batches: another
        thread may be finishing an evaluation on it as the first takes it."""
        retired, self._retired = self._retired, []
        draining, self._draining = self._draining, retired
        flagset = self._flagset
        sets = [*draining, *retired, *([flagset] if flagset is not None else [])]
        return [flag for each in sets for flag in each.flags.values()]

    def _fold_telemetry(self) -> None:
        """Count the log now (it is full), and the tallies of replaced flag sets, if too many
        are waiting."""
        try:
            sink = self._telemetry or self.telemetry_sink()
            if sink is not None:
                sink.recorder.fold(tallies=len(self._retired) > MAX_RETIRED)
        except Exception:  # telemetry must never fail an evaluation
            pass

    # Refresh ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        if not self._lock.acquire(False):
            return  # another thread is refreshing: serve what we have meanwhile
        started = time.monotonic()
        try:
            if self._clock() < self._next_check:
                return
            # From a sibling process's refresh (the file cache), or from the service.
            reached = self._load_file_cache() or self._fetch_guarded()
        finally:
            self._lock.release()
        if reached and self._recorded() and self._clock() >= self._telemetry_after:
            # The counts ride along, within a small budget of their own (and never more than
            # the refresh left of its time bound): this is an evaluation's time.
            budget = min(self.timeout - (time.monotonic() - started), REFRESH_TELEMETRY_BUDGET)
            if budget >= MIN_TELEMETRY_BUDGET:
                self._send_telemetry(budget)

    def _send_telemetry(self, timeout: float) -> None:
        """Send on the refresh path (the TTL paces it: no ``min_interval``); on a failure, back
        off this path (an explicit ``flush`` still sends)."""
        try:
            sink = self.telemetry_sink()
            if sink is None or sink.flush(timeout, force=True):
                self._telemetry_backoff = 0.0
                return
            backoff = self._telemetry_backoff * 2 or REFRESH_TELEMETRY_BACKOFF
            self._telemetry_backoff = min(backoff, MAX_REFRESH_TELEMETRY_BACKOFF)
            self._telemetry_after = self._clock() + self._telemetry_backoff
        except Exception:  # telemetry must never fail an evaluation
            pass

    def _fetch_guarded(self) -> builtins.bool:
        try:
            return self._fetch()
        except Exception as exc:  # never into the caller
            self._fail(None, f"unexpected {type(exc).__name__}: {exc}")
            return False

    def _fetch(self) -> builtins.bool:
        from .. import _http as http  # http.client loads only when the network is needed

        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        if self._etag and self._flagset is not None:
            headers["If-None-Match"] = self._etag
        try:
            response = http.get(self.url, headers, timeout=self.timeout, max_bytes=self.max_bytes)
        except http.FetchError as exc:
            self._fail(None, str(exc))
            return False
        status = response.status
        if status == 304:
            etag = response.headers.get("etag")
            if "If-None-Match" not in headers or (etag is not None and etag != self._etag):
                self._fail(status, "304 for a document this client does not hold")
                return False
            self._confirmed(status, time.time())
            self._write_file_cache()
            return True
        if status in (401, 403):
            self._fail(status, "the SDK key was refused (wrong, revoked or for another service)")
            return False
        if status != 200:
            self._fail(status, f"HTTP {status}")
            return False
        try:
            flagset, etag = self._parse(response.body, response.headers.get("etag"))
        except InvalidDocumentError as exc:
            self._fail(status, f"unusable document: {exc}")
            return False
        self._flagset, self._etag = flagset, etag
        self._confirmed(status, time.time())
        self._write_file_cache()
        return True

    def _parse(self, body: bytes, etag: str | None) -> tuple[FlagSet, str | None]:
        import hashlib  # only for documents from the network
        import json

        if etag is not None and etag != f'"{hashlib.sha256(body).hexdigest()[:40]}"':
            # The server's ETag is the body's sha256: a mismatch is a truncated or altered body.
            raise InvalidDocumentError("the body does not match its ETag")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidDocumentError(f"not JSON ({exc})") from None
        return self._accept(document), etag

    def _accept(self, document: Any) -> FlagSet:
        """The document compiled (with tallies when telemetry is on). The flag set it replaces
        waits, with its tallies, for the next batch."""
        flagset = FlagSet(document, environment=self.environment, telemetry=self._counting)
        if self.environment is None:
            self.environment = flagset.environment  # from now on, only this environment
        current = self._flagset
        if self._counting is not None and current is not None:
            self._retired.append(current)
            if len(self._retired) > MAX_RETIRED:  # no batch taken for a while: count them now
                self._fold_telemetry()
        return flagset

    def _confirmed(self, status: int, fetched_at: float) -> None:
        self._fetched_at = fetched_at
        self._http_status = status
        self._stale = False
        self._failures = 0
        self._error = None
        self._unauthorized = False
        left = self.ttl - max(time.time() - fetched_at, 0.0)
        self._next_check = self._clock() + max(left, 0.0) * _jitter()

    def _fail(self, status: int | None, error: str) -> None:
        self._failures += 1
        self._http_status = status
        self._error = error
        self._stale = self._flagset is not None
        self._unauthorized = status in (401, 403)
        backoff = min(2.0 ** min(self._failures - 1, 10), self.ttl, MAX_BACKOFF)
        self._next_check = self._clock() + backoff * _jitter()
        serving = f"revision {self._flagset.revision}" if self._flagset is not None else "code defaults"
        if self._unauthorized:
            _log("error", "flag set %s: %s; serving %s", self.url, error, serving)
        else:
            _log("warning", "flag set %s unavailable (%s); serving %s", self.url, error, serving)

    # Caches ----------------------------------------------------------------------------
    def _load_bootstrap(self, bootstrap: Any) -> None:
        try:
            if isinstance(bootstrap, Mapping):
                record: Any = bootstrap
            else:
                import json

                with open(os.fspath(bootstrap), "rb") as handle:
                    record = json.load(handle)
            if isinstance(record, Mapping) and "document" not in record:
                record = {"document": record}  # a bare document
            self._flagset = self._accept(record["document"])
            self._etag = record.get("etag")
            self._fetched_at = float(record.get("fetched_at") or 0.0)
            if self._fetched_at:
                self._confirmed(200, self._fetched_at)  # fresh while within its TTL
        except Exception as exc:  # a bad snapshot must not stop the caller
            self._flagset = None
            _log("warning", "ignoring the bootstrap flag set: %s", exc)

    def _load_file_cache(self) -> builtins.bool:
        """Take the file cache when it is newer than what this process holds and still within
        its TTL; True when it was taken."""
        path = self.cache_path
        if path is None:
            return False
        try:
            with open(path, "rb") as handle:
                if hasattr(os, "geteuid"):
                    info = os.fstat(handle.fileno())
                    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
                        return False  # not ours, or writable by others: not to be trusted
                data = handle.read(self.max_bytes + 64)
            if data[:4] != _CACHE_MAGIC or int.from_bytes(data[4:8], "big") != _crc(data[8:]):
                return False
            record = marshal.loads(data[8:])
            if record.get("fingerprint") != self._fingerprint:
                return False
            fetched_at = float(record["fetched_at"])
            if fetched_at <= self._fetched_at or time.time() - fetched_at >= self.ttl:
                return False
            flagset = self._accept(record["document"])
        except FileNotFoundError:
            return False
        except Exception:  # a broken cache file is just a cache miss
            return False
        self._flagset, self._etag = flagset, record.get("etag")
        self._confirmed(200, fetched_at)
        return True

    def _write_file_cache(self) -> None:
        path = self.cache_path
        if path is None or self._flagset is None:
            return
        record = {
            "fingerprint": self._fingerprint,
            "etag": self._etag,
            "fetched_at": self._fetched_at,
            "document": self._flagset.raw,
        }
        payload = marshal.dumps(record)
        temporary = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "wb") as handle:
                handle.write(_CACHE_MAGIC + _crc(payload).to_bytes(4, "big") + payload)
            os.replace(temporary, path)  # readers see the old file or the new one, never half
        except OSError as exc:
            _log("warning", "cannot write the flag-set cache %s: %s", path, exc)
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def _after_fork(self) -> None:
        self._lock = _thread.allocate_lock()  # a lock held by another thread at fork stays held
        if self._log is not None:
            del self._log[:]  # the parent reports what it logged (telemetry.sender forgets the rest)
            self._retired, self._draining = [], []
            for flag in self._flagset.flags.values() if self._flagset is not None else ():
                for tally in flag.tallies:
                    tally.forget()
        left = self._next_check - self._clock()
        if left > 0:
            self._next_check = self._clock() + left * _jitter()  # children do not poll in step

    def __repr__(self) -> str:
        return f"<FlagClient {self.url} revision={self.revision} state={self.status.state}>"


def _crc(data: bytes) -> int:
    import binascii  # small, and only needed with a file cache

    return binascii.crc32(data)


def _temp_dir() -> str:
    for name in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(name):
            return os.environ[name]
    if os.name == "posix":
        return "/tmp"  # Lambda's writable folder; the file is 0600 and checked
    import tempfile

    return tempfile.gettempdir()


_clients: list[Any] = []
_telemetry_lock = _thread.allocate_lock()
_default_client: FlagClient | None = None


def set_default_client(client: FlagClient | None) -> None:
    """Register the process's flag client: a hydrator built by ``get_hydrator`` with no flag
    client of its own reports its telemetry through it. None forgets it."""
    global _default_client
    _default_client = client


def default_client() -> FlagClient | None:
    return _default_client


def _register(client: FlagClient) -> None:
    import weakref

    if not _clients and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_all)
    _clients[:] = [ref for ref in _clients if ref() is not None]
    _clients.append(weakref.ref(client))


def _after_fork_all() -> None:
    global _telemetry_lock
    _telemetry_lock = _thread.allocate_lock()  # one held by another thread at the fork stays held
    for ref in _clients:
        client = ref()
        if client is not None:
            client._after_fork()
