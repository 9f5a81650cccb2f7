"""LiteLLM's Responses API through the sidecar: an OpenAI base URL, on which `previous_response_id` chains.

    python examples/litellm/responses_chain.py --sidecar http://127.0.0.1:8080 --model gemma

LiteLLM sends `openai/<model>` calls to `api_base` as they are, so the stateless engine behind the sidecar
gets the whole conversation on every turn while the caller sends only the new input.

LiteLLM hands out its own response ids: `resp_` + base64 of `litellm:custom_llm_provider:openai;model_id:…;
response_id:<the sidecar's id>`, and decodes them again when they come back as `previous_response_id`.
Chaining through LiteLLM therefore just works; to use an id with the sidecar directly
(`GET /v1/responses/{id}`, the session API, the openai SDK) take `sidecar_response_id(response.id)`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no model-price download at import

import litellm
from litellm.responses.utils import ResponsesAPIRequestUtils


def ask(
    sidecar_url: str,
    model: str,
    text: str,
    previous_response_id: str | None = None,
    api_key: str = "none",  # a tenant key, if the sidecar runs with CONVOSTORE_AUTH=api_keys
) -> Any:
    """One turn; the sidecar resolves `previous_response_id` to the stored history."""
    return litellm.responses(
        model=f"openai/{model}",
        input=text,
        api_base=f"{sidecar_url.rstrip('/')}/v1",
        api_key=api_key,
        previous_response_id=previous_response_id,
    )


def sidecar_response_id(litellm_response_id: str) -> str:
    """The sidecar's own `resp_…` id inside a LiteLLM response id (an unwrapped id comes back as it is)."""
    decoded = ResponsesAPIRequestUtils.decode_responses_api_response_id(litellm_response_id)
    return str(decoded.get("response_id") or litellm_response_id)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecar", default="http://127.0.0.1:8080")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--api-key", default="none")
    args = parser.parse_args(argv)
    first = ask(args.sidecar, args.model, "My name is Ada. Say hello.", api_key=args.api_key)
    print(sidecar_response_id(first.id), first.output[0].content[0].text)
    second = ask(args.sidecar, args.model, "What is my name?", first.id, api_key=args.api_key)
    print(sidecar_response_id(second.id), second.output[0].content[0].text)


if __name__ == "__main__":
    main()
