"""Wire types of the OpenAI routes the proxy serves.

Only what the proxy itself relies on is declared and validated; every other
field (``temperature``, ``tools``, ``response_format``, vendor extensions...)
is allowed and forwarded unchanged, like the fields declared here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _OpenAIObject(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_OpenAIObject):
    include_usage: StrictBool | None = None


class ChatMessage(_OpenAIObject):
    role: StrictStr
    content: StrictStr | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_OpenAIObject):
    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None


class CompletionRequest(_OpenAIObject):
    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] | list[StrictInt] | list[list[StrictInt]]
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None


class EmbeddingRequest(_OpenAIObject):
    model: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class InvalidateRequest(BaseModel):
    """Body of ``POST /admin/invalidate``: entries matching every given filter go."""

    model_config = ConfigDict(extra="forbid")

    entry_id: StrictStr | None = None
    tenant: StrictStr | None = None
    namespace: StrictStr | None = None
    category: StrictStr | None = None
    model: StrictStr | None = None
    all: StrictBool = Field(False, description="must be true to invalidate with no filter")


def wire_body(request: _OpenAIObject) -> dict[str, Any]:
    """The request as the caller sent it (declared and unknown fields), for forwarding."""
    return request.model_dump(exclude_unset=True)
