"""Domain errors and the one table that maps them to gRPC status codes.

Handlers raise these; ``grpc_errors`` turns them into a status with a message
that says what to fix. Anything else becomes INTERNAL with an error id that
is also logged, never a traceback on the wire.
"""

from __future__ import annotations

import functools
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import message, symbol_database
from google.protobuf.descriptor import ServiceDescriptor

__all__ = [
    "ConfigError",
    "DeadlineExceeded",
    "EmbedderMisconfigured",
    "EmbedderUnavailable",
    "InvalidRequest",
    "RouterError",
    "UnknownScorer",
    "add_servicer",
    "grpc_errors",
    "run_cli",
]

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    """A setting is wrong: the service refuses to start and says which one."""


class RouterError(Exception):
    """An error a client sees, with its gRPC status."""

    status = grpc.StatusCode.INTERNAL


class InvalidRequest(RouterError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class UnknownScorer(RouterError):
    status = grpc.StatusCode.NOT_FOUND


class EmbedderUnavailable(RouterError):
    """The embedding backend could not be reached or failed for now; retrying may work."""

    status = grpc.StatusCode.UNAVAILABLE


class EmbedderMisconfigured(RouterError):
    """The embedding backend answered, but the router's settings for it are wrong."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(RouterError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[object, Request, grpc.aio.ServicerContext], Awaitable[Response]]


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so the handler can refuse it.

    grpc-python answers UNKNOWN when a deserializer raises; a client that sent
    bad bytes (invalid UTF-8, a corrupt message) deserves INVALID_ARGUMENT.
    """

    def __init__(self, type_name: str, reason: str) -> None:
        self.message = f"request is not a valid {type_name}: {reason}"


def _lenient(parse: Callable[[bytes], object], type_name: str) -> Callable[[bytes], object]:
    def deserialize(data: bytes) -> object:
        try:
            return parse(data)
        except message.DecodeError as exc:
            return MalformedRequest(type_name, str(exc).split(": ", 1)[-1])

    return deserialize


def add_servicer(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    """Register a servicer (unary and server-streaming methods), mapping undecodable requests to INVALID_ARGUMENT."""
    database = symbol_database.Default()
    handlers = {}
    for method in service.methods:
        request_type = database.GetSymbol(method.input_type.full_name)
        response_type = database.GetSymbol(method.output_type.full_name)
        make_handler = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request_type.FromString, method.input_type.full_name),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _count_error(servicer: object, status: grpc.StatusCode) -> None:
    metrics = getattr(servicer, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=status.name).inc()


def grpc_errors(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """Map domain errors raised by a unary handler to gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: object, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            if isinstance(request, MalformedRequest):
                raise InvalidRequest(request.message)
            return await handler(self, request, context)
        except RouterError as exc:
            _count_error(self, exc.status)
            await context.abort(exc.status, str(exc))
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("internal error %s in %s", error_id, handler.__name__)
            _count_error(self, grpc.StatusCode.INTERNAL)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the router log")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


def run_cli(prog: str, command: Callable[[], int]) -> int:
    """Run a command-line action: a wrong setting or a failed call is one line on stderr, never a traceback."""
    from pydantic import ValidationError

    try:
        return command()
    except (ConfigError, FileNotFoundError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"{prog}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except RouterError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
