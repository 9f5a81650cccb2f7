"""What the handlers accept of a request (page and metadata bounds, items per call, the `include` values),
kept in one place so that openapi.json (api_schema.py) publishes exactly what they check."""

from __future__ import annotations

# Bounds the handlers check (handlers/pagination.py, conversations.py, responses_request.py) and publish.
PAGE_LIMIT_MIN, PAGE_LIMIT_MAX, PAGE_LIMIT_DEFAULT = 1, 100, 20
CONVERSATION_ITEMS_PER_CALL = 20
METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512
# The `include` values the Responses API defines (the openai SDK's ResponseIncludable).
INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
