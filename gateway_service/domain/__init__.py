"""The gateway's own types: a chat request (chat), its stream of events (events), how its model was chosen
(routing). Client API codecs and upstreams translate to and from these; the chat core sees nothing else."""

from .chat import (
    ROLES,
    ChatParams,
    Image,
    Message,
    Opaque,
    OutputFormat,
    Part,
    Reasoning,
    ReasoningAsk,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from .events import Delta, Finish, FinishReason, ToolCallDelta, Usage, finish_reason
from .routing import (
    Embedded,
    HostState,
    ModelSpec,
    RecentShare,
    RouteDecision,
    RouterView,
    RoutingStatus,
    ScorerView,
)

__all__ = [
    "ROLES", "ChatParams", "Delta", "Embedded", "Finish", "FinishReason", "HostState", "Image", "Message", "ModelSpec",
    "Opaque", "OutputFormat", "Part", "Reasoning", "ReasoningAsk", "RecentShare", "RouteDecision", "RouterView",
    "RoutingStatus", "ScorerView", "Text", "Tool", "ToolCall", "ToolCallDelta", "ToolChoice", "ToolResult", "Usage",
    "finish_reason",
]
