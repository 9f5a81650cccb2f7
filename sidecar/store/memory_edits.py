"""The memory backend's edits and deletions: a conversation's metadata, removing one item (the head
branches around it, and what nothing reaches any more is collected), and deleting a response or a whole
conversation."""

from __future__ import annotations

import time

from .memory_lifetime import MemoryLifetime
from .memory_records import Conversation, walk_items


class MemoryEdits(MemoryLifetime):
    """Mixed into MemoryStore; edits read through MemoryLifetime, so a lapsed conversation is gone."""

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        resp = self._live_response(tenant, response_id)
        if resp is None:
            return False
        del self._responses[response_id]
        self._runs.pop(response_id, None)  # a background run's log holds its content too
        resp.conversation.responses.pop(response_id, None)
        self._slots[resp.conversation.tag].records -= 1
        return True

    async def set_conversation_metadata(self, tenant: str, conversation_id: str, metadata: bytes) -> bool:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return False
        conv.metadata = metadata
        conv.updated_ms = int(time.time() * 1000)
        self._touch(conv)
        return True

    async def remove_item(self, tenant: str, conversation_id: str, item_id: str) -> int | None:
        conv = self._live_conversation(tenant, conversation_id)
        if conv is None:
            return None
        walked = list(walk_items(conv, *conv.head))
        found = next((n for n, (_, _, entry) in enumerate(walked) if entry[0] == item_id), None)
        if found is None:
            return None
        # The head branches off just before the item and holds copies of the items after it.
        segment, position, _ = walked[found]
        conv.segments.append([entry for _, _, entry in walked[found + 1 :]])
        head = len(conv.segments) - 1
        conv.parents[head] = (segment, position)
        conv.head = (head, len(conv.segments[head]))
        conv.version += 1
        conv.updated_ms = int(time.time() * 1000)
        self._collect_garbage(conv)
        self._touch(conv)
        return conv.version

    def _collect_garbage(self, conv: Conversation) -> None:
        """Drop segments, and tails of segments, that neither the head nor a live response reaches."""
        need: dict[int, int] = {}
        reached = [conv.head, *((self._responses[r].segment, self._responses[r].end) for r in conv.responses)]
        for segment, stop in reached:
            while True:
                need[segment] = max(need.get(segment, 0), stop)
                parent = conv.parents.get(segment)
                if parent is None:
                    break
                segment, stop = parent
        for segment in range(len(conv.segments)):
            if segment not in need:
                conv.parents.pop(segment, None)
            del conv.segments[segment][need.get(segment, 0) :]
        conv.session_bytes = sum(len(item) for items in conv.segments for _, item in items)

    async def delete_conversation(self, tenant: str, conversation_id: str) -> bool:
        if self._live_conversation(tenant, conversation_id) is None:
            return False
        self._drop_conversation(tenant, conversation_id)
        return True
