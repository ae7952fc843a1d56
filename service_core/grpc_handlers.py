"""Registering a servicer, and mapping a service's domain errors to gRPC statuses.

Handlers raise domain errors (``ServiceError`` subclasses); the service's own
table says which status each one gets. Anything else becomes INTERNAL with an
error id that is also logged, never a traceback on the wire.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import message, symbol_database
from google.protobuf.descriptor import ServiceDescriptor

from .errors import ServiceError

__all__ = ["Context", "MalformedRequest", "add_servicer", "mapped_errors", "status_lookup"]

logger = logging.getLogger(__name__)

# A servicer method's context; its request/response type parameters add nothing at the call sites.
Context = grpc.aio.ServicerContext[Any, Any]


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
        make_handler = (
            grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request_type.FromString, method.input_type.full_name),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def _refuse(context: Context, status: grpc.StatusCode, message: str) -> None:
    """End a unary call with ``status``, set on the context; the handler then returns no response.

    Cheaper than ``abort()``, which raises through grpc's machinery: under overload the
    router refuses most calls, and each refusal's cost comes out of the calls it can answer.
    A call that has already ended (deadline, client gone) is left quietly: nobody is there to tell."""
    if context.done():
        logger.debug("call already finished; not sending %s: %s", status.name, message)
        raise asyncio.CancelledError
    context.set_code(status)
    context.set_details(message)


def status_lookup(table: Mapping[type[ServiceError], grpc.StatusCode]) -> Callable[[ServiceError], grpc.StatusCode]:
    """A function giving an error the status of its nearest class in ``table``; INTERNAL for any other."""

    def status_of(error: ServiceError) -> grpc.StatusCode:
        for cls in type(error).__mro__:
            if cls in table:
                return table[cls]
        return grpc.StatusCode.INTERNAL

    return status_of


Servicer = TypeVar("Servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Servicer, Request, Context], Awaitable[Response]]


def mapped_errors(
    status_of: Callable[[ServiceError], grpc.StatusCode],
    *,
    invalid: type[ServiceError],
    log_name: str,
    count: Callable[[Any, grpc.StatusCode], None] | None = None,
) -> Callable[[Handler[Servicer, Request, Response]], Handler[Servicer, Request, Response]]:
    """A decorator for unary handlers: domain errors get ``status_of(error)``, others INTERNAL with an id.

    ``invalid``: the error raised for a MalformedRequest; ``count(servicer, status)``
    is called for every error (metrics)."""

    def decorate(handler: Handler[Servicer, Request, Response]) -> Handler[Servicer, Request, Response]:
        @functools.wraps(handler)
        async def wrapper(self: Servicer, request: Request, context: Context) -> Response:
            try:
                if isinstance(request, MalformedRequest):
                    raise invalid(request.message)
                return await handler(self, request, context)
            except ServiceError as exc:
                status = status_of(exc)
                if count is not None:
                    count(self, status)
                _refuse(context, status, str(exc))
            except Exception:
                error_id = uuid.uuid4().hex[:12]
                logger.exception("internal error %s in %s", error_id, handler.__name__)
                if count is not None:
                    count(self, grpc.StatusCode.INTERNAL)
                _refuse(context, grpc.StatusCode.INTERNAL, f"internal error (id {error_id}); see the {log_name} log")
            return cast(Response, None)  # grpc sends no message with a non-OK status

        return wrapper

    return decorate
