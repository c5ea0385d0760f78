"""What must not be cached: the refusal rules applied before ``store``."""

from __future__ import annotations

from typing import Any

from semcache.config.policy import CategoryPolicy


def refusal(response: Any, policy: CategoryPolicy) -> str | None:
    """Why ``response`` must not be stored under ``policy``, or None if it may be.

    Errors (a replayed 429 is a classic), empty answers, content-filtered
    answers, answers cut off by ``max_tokens`` (unless the policy allows) and
    tool calls (unless allowed: they usually depend on live state) are refused.
    """
    if not isinstance(response, dict):
        return "response is not a JSON object"
    if "error" in response:
        return "upstream error"
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        return "no choices"
    if len(choices) != 1:
        return "several choices"
    choice = choices[0]
    if not isinstance(choice, dict):
        return "malformed choice"
    finish = choice.get("finish_reason")
    if finish == "content_filter":
        return "content filtered"
    if finish == "length" and not policy.cache_truncated:
        return "truncated (finish_reason length)"
    message = choice.get("message") or {}
    calls_tools = finish in ("tool_calls", "function_call") or bool(
        isinstance(message, dict) and (message.get("tool_calls") or message.get("function_call"))
    )
    if calls_tools and not policy.cache_tool_calls:
        return "tool calls"
    text = message.get("content") if isinstance(message, dict) and "message" in choice else choice.get("text")
    if not calls_tools and (not isinstance(text, str) or not text.strip()):
        return "empty answer"
    return None


def usage_tokens(response: dict[str, Any]) -> tuple[int, int]:
    usage = response.get("usage") or {}
    try:
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        return 0, 0
