"""Optional OpenTelemetry tracing: one trace from the HTTP request through the router call to the upstream."""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra; `make test` installs it")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway_service.server import build_gateway
from router_service.server import build_router
from tests.conftest import router_settings
from tests.gateway.conftest import Stack, gateway_settings


async def test_one_trace_spans_gateway_router_and_upstream(stack: Stack) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router = await build_router(router_settings(), tracing=provider)
    ollama_url, openai_url = stack.upstream_roots
    gateway = await build_gateway(gateway_settings(router.port, ollama_url, openai_url), tracing=provider)
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"http://127.0.0.1:{gateway.http_port}/v1/chat/completions",
                json={"model": "router", "messages": [{"role": "user", "content": "trace this"}]},
            )
        assert response.status_code == 200
    finally:
        await gateway.stop()
        await router.stop()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    route_server = next(s for s in spans if s.name == "/router.v1.RouterService/Route" and s.kind.name == "SERVER")
    route_client = next(s for s in spans if s.name == "/router.v1.RouterService/Route" and s.kind.name == "CLIENT")
    http_server = next(s for s in spans if s.kind.name == "SERVER" and s.name.startswith("POST"))
    upstream = next(s for s in spans if s.kind.name == "CLIENT" and s.name.startswith("POST")  # not a health check's
                    and "/api/show" not in str(dict(s.attributes or {}).get("http.url", "")))
    trace_ids = {s.context.trace_id for s in (route_server, route_client, http_server, upstream)}
    assert len(trace_ids) == 1  # one request, one trace, across both services
    assert route_server.parent is not None and route_client.context is not None
    assert route_server.parent.span_id == route_client.context.span_id  # context crossed the gRPC call
