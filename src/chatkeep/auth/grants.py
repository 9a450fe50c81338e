"""The rule for a new key's limits: a key can never be given more than its creator has.

The admin (the admin token, or the ``chatkeep keys`` command) may give anything; a field
it leaves out comes from the defaults (``CHATKEEP_KEY_RATE`` …). A key may create keys
only for its own owner and only within its own limits, field by field:

    rate, burst, max_streams   at most the creator's
    priority                   at least the creator's number (0 runs first: lower is more)
    models                     a subset of the creator's; a creator restricted to some
                               models cannot create a key for every model

and a field it leaves out is the creator's. Without this, a leaked low-rights key could
mint a key with more rights than it has (a privilege escalation found in LLM gateways).

Values are checked before rights: an impossible value is `InvalidRequest` (422) whoever
asks; an escalation is `Forbidden` (403), with a message naming the field. A model
outside a restricted creator's own is the same 403 whatever the name (`KeyService` asks
whether a name is configured only for names the creator may use), and the message lists
only the creator's own models: a key learns nothing of the models it may not use.

Limits are a key's own. What a key makes also shares its family's budget (the root's
limits, `chatkeep.domain.keys`), so minting keys never multiplies what the family may use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from chatkeep.domain.keys import ApiKey, KeyLimits, number_text
from chatkeep.errors import Forbidden, InvalidRequest
from chatkeep.settings import AccessSettings

#: Longest owner name and model name.
MAX_NAME_CHARS = 200
#: Most models one key may be restricted to.
MAX_MODELS = 256
#: Admission priorities: 0 runs first.
PRIORITIES = range(10)


class _EveryModel:
    """Asks explicitly for every model (``models=None`` means "not said")."""

    def __repr__(self) -> str:
        return "EVERY_MODEL"


#: ``models=EVERY_MODEL``: the new key may use every configured model.
EVERY_MODEL = _EveryModel()

ModelChoice = Sequence[str] | _EveryModel | None


def grant(
    creator: ApiKey | None,
    *,
    owner: str,
    rate: float | None = None,
    burst: int | None = None,
    max_streams: int | None = None,
    priority: int | None = None,
    models: ModelChoice = None,
    defaults: AccessSettings,
) -> KeyLimits:
    """The limits of a new key of ``owner`` made by ``creator`` (``None``: the admin).

    ``None`` for a field means "not said": it comes from ``defaults`` for the admin, from
    the creator's own limits for a key. Raises `InvalidRequest` for an impossible value and
    `Forbidden` when a key asks for more than it has.
    """
    check_name("owner", owner)
    _check_values(rate, burst, max_streams, priority)
    wanted_models = model_names(models)
    if creator is None:
        return KeyLimits(
            rate=float(rate if rate is not None else defaults.rate),
            burst=burst if burst is not None else defaults.burst,
            max_streams=max_streams if max_streams is not None else defaults.max_streams,
            priority=priority if priority is not None else defaults.priority,
            models=None if isinstance(wanted_models, _EveryModel) else wanted_models,
        )
    if creator.revoked_at is not None:
        raise Forbidden(f"key {creator.id} is revoked")
    if owner != creator.owner_id:
        raise Forbidden("owner: a key can create keys only for its own owner")
    has = creator.limits
    limits = KeyLimits(
        rate=float(rate) if rate is not None else has.rate,
        burst=burst if burst is not None else has.burst,
        max_streams=max_streams if max_streams is not None else has.max_streams,
        priority=priority if priority is not None else has.priority,
        models=has.models if wanted_models is None else _allowed(wanted_models, has.models),
    )
    for field, asked, own in (
        ("rate", limits.rate, has.rate),
        ("burst", limits.burst, has.burst),
        ("max_streams", limits.max_streams, has.max_streams),
    ):
        if asked > own:
            raise Forbidden(
                f"{field}: {number_text(asked)} is more than this key's own {number_text(own)}"
            )
    if limits.priority < has.priority:
        raise Forbidden(
            f"priority: {limits.priority} would run ahead of this key's own {has.priority} "
            "(0 runs first)"
        )
    return limits


def check_name(field: str, name: str) -> None:
    """An owner or model name: 1 to `MAX_NAME_CHARS` printable characters, no outer spaces."""
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidRequest(f"{field}: must be 1 to {MAX_NAME_CHARS} characters")
    if not name.isprintable() or name != name.strip():
        raise InvalidRequest(
            f"{field}: must be printable characters, without leading or trailing spaces"
        )


def _check_values(
    rate: float | None, burst: int | None, max_streams: int | None, priority: int | None
) -> None:
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise InvalidRequest("rate: must be a number of requests a second above 0")
    if burst is not None and burst < 1:
        raise InvalidRequest("burst: must be at least 1")
    if max_streams is not None and max_streams < 1:
        raise InvalidRequest("max_streams: must be at least 1")
    if priority is not None and priority not in PRIORITIES:
        raise InvalidRequest("priority: must be 0 (runs first) to 9")


def model_names(models: ModelChoice) -> tuple[str, ...] | _EveryModel | None:
    """The names asked for, checked (`InvalidRequest`) and without repeats, in the order given."""
    if models is None or isinstance(models, _EveryModel):
        return models
    if isinstance(models, str):  # a str is a Sequence[str]: "echo" is not ("e", "c", …)
        models = [models]
    names = tuple(dict.fromkeys(models))
    if not names:
        raise InvalidRequest("models: name at least one model, or leave it out")
    if len(names) > MAX_MODELS:
        raise InvalidRequest(f"models: at most {MAX_MODELS}")
    if "" in names:  # said plainly: "must be 1 to 200 characters" hides the empty one
        raise InvalidRequest("models: a name is empty")
    for name in names:
        check_name("models", name)
    return names


def _allowed(
    wanted: tuple[str, ...] | _EveryModel, own: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    if own is None:
        return None if isinstance(wanted, _EveryModel) else wanted
    if isinstance(wanted, _EveryModel):
        raise Forbidden(
            f"models: this key may use only {', '.join(own)}; it cannot create a key for "
            "every model"
        )
    beyond = [name for name in wanted if name not in own]
    if beyond:
        # The same answer whether or not a name is configured, and it lists only the
        # key's own models: a key learns nothing of models it may not use.
        verb = "is" if len(beyond) == 1 else "are"
        raise Forbidden(
            f"models: {', '.join(beyond)} {verb} not among this key's models ({', '.join(own)})"
        )
    return wanted
