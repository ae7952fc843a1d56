# syntax=docker/dockerfile:1
# The gateway: OpenAI-compatible HTTP and gRPC gateway.v1.GatewayService. No onnxruntime, no embedder.
# Build from the repository root:  docker build -f deploy/gateway.Dockerfile -t routestack-gateway:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
# Only the shared code and this service: the image carries no code of the other one.
COPY routing_api routing_api
COPY service_core service_core
COPY gateway_service gateway_service
RUN pip install '.[gateway]' && pip uninstall --yes --quiet pip setuptools

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/app app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 GATEWAY_SERVER__HOST=0.0.0.0
USER 10001
# OpenAI-compatible HTTP, gRPC
EXPOSE 8000 50052
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["gateway-service", "health"]
STOPSIGNAL SIGTERM
CMD ["gateway-service", "serve"]
