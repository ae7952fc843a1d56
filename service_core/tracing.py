"""Optional OpenTelemetry tracing, with the official packages (`pip install -e '.[otel]'`).

Off by default. When on, spans go to an OTLP/HTTP endpoint; gRPC servers and
clients, the gateway's HTTP app and its upstream clients are instrumented per
instance (interceptors, middleware, per-client hooks), never by global patching,
and the trace context travels from the gateway to the router in gRPC metadata.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError

__all__ = ["TracingSettings", "grpc_client_interceptors", "grpc_server_interceptors", "tracer_provider"]


class TracingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    otlp_endpoint: str = Field("http://localhost:4318/v1/traces", description="OTLP/HTTP traces endpoint")


def tracer_provider(settings: TracingSettings, service_name: str) -> Any | None:
    """A TracerProvider exporting to the OTLP endpoint, or None when tracing is off."""
    if not settings.enabled:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError("tracing.enabled needs the OpenTelemetry packages: pip install -e '.[otel]'") from None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    return provider


def grpc_server_interceptors(provider: Any | None) -> list[Any]:
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=provider)]


def grpc_client_interceptors(provider: Any | None) -> list[Any]:
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=provider))
