"""Committing a reply: tried again when storage fails, never left open for good.

A reply is committed once its model is done (or it was stopped). A commit that fails (a
busy or full disk) is tried again after a pause; past the attempts with its text, one last
attempt stores the reply without it, as ``incomplete`` (``storage_unavailable``), so that
a bad commit does not leave its conversation with a reply open (every later send would
get ``409``) until a restart runs recovery.
"""

from __future__ import annotations

import asyncio
import logging

from chatkeep.domain.outcome import ReplyOutcome
from chatkeep.domain.records import Conversation, Message, MessageStatus, Usage
from chatkeep.errors import ChatkeepError, StorageError
from chatkeep.storage.base import Store

logger = logging.getLogger("chatkeep.service.reply_commit")

#: Pauses before each attempt to commit a reply with its text.
COMMIT_RETRY_PAUSES = (0.0, 0.2, 1.0)


async def commit_reply(
    store: Store,
    conversation: Conversation,
    user_message: Message,
    content: str,
    usage: Usage | None,
    error: ChatkeepError | None,
) -> ReplyOutcome:
    """Commit the assistant message that closes the reply to ``user_message``.

    ``error`` is why the reply did not complete (``None``: it did). Returns the outcome
    as storage has it, or an unstored one when storage failed every attempt.
    """
    status: MessageStatus = "complete" if error is None else "incomplete"
    reason = None if error is None else error.message
    code = None if error is None else error.code
    failure: StorageError | None = None
    attempts = [(pause, True) for pause in COMMIT_RETRY_PAUSES] + [(0.0, False)]
    for attempt, (pause, with_text) in enumerate(attempts):
        if not with_text:
            status, content, usage, code = "incomplete", "", None, StorageError.code
            reason = f"the reply could not be stored ({failure}); its text is lost"
        await asyncio.sleep(pause)
        try:
            message = await store.finish_reply(
                conversation.owner_id,
                conversation.id,
                reply_to=user_message.id,
                content=content,
                status=status,
                reason=reason,
                reason_code=code,
                usage=usage,
            )
        except Exception as exc:
            failure = exc if isinstance(exc, StorageError) else StorageError(str(exc))
            logger.error(
                "could not commit reply (attempt %d): %s",
                attempt + 1,
                failure.message,
                exc_info=not isinstance(exc, ChatkeepError),
                extra={"conversation_id": conversation.id},
            )
        else:
            return ReplyOutcome.committed(message)
    # Storage is failing altogether: the user message stays, and recovery closes the
    # reply at the next start; the readers are told it could not be stored.
    assert failure is not None
    return ReplyOutcome.unstored(failure)
