"""RouteLLM's ``Controller``, so ``from routellm.controller import Controller`` is one changed import.

    from routellm_compat.controller import Controller

    client = Controller(routers=["mf"], strong_model="openai/llama3:70b", weak_model="openai/llama3",
                        api_base="http://localhost:11434/v1", api_key="ollama")
    response = client.chat.completions.create(model="router-mf-0.11593", messages=[...])

The same arguments as RouteLLM 0.2's Controller. It starts this project's router and
gateway on loopback ports in a background thread (until ``close()``, the end of a
``with`` block, or exit) and answers with the official ``openai`` SDK's objects
(``response.choices[0].message.content``; streams with ``stream=True``), where
RouteLLM answers with LiteLLM's. Prompts are embedded locally: no OpenAI key to route.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace, TracebackType
from typing import Any

import grpc
import openai

from routing_api.router.v1 import router_pb2, router_pb2_grpc

from .stack import RouteLLMOptions, RunningStack, running_stack

__all__ = ["Controller", "ModelPair", "RoutingError"]


class RoutingError(Exception):
    """A router name or threshold RouteLLM would refuse (same messages)."""


@dataclass
class ModelPair:
    strong: str
    weak: str


class _StackThread(threading.Thread):
    """Router and gateway on their own event loop, so the caller's code may be sync or async."""

    def __init__(self, options: RouteLLMOptions) -> None:
        super().__init__(name="routestack-controller", daemon=True)
        self._options = options
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.stack: RunningStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop_event = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with running_stack(self._options) as stack:
                self.stack = stack
                self.ready.set()
                await self._stop_event.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's thread, raised there
            self.error = exc
        finally:
            self.ready.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self.join(60)


class Controller:
    def __init__(
        self,
        routers: list[str],
        strong_model: str,
        weak_model: str,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        progress_bar: bool = False,
        *,
        embedding_base_url: str = "https://api.openai.com/v1",
        embedding_api_key_env: str | None = None,
    ) -> None:
        """RouteLLM's arguments; ``embedding_*`` only for an MF checkpoint of RouteLLM's in ``config``
        (it scores OpenAI embeddings: name the variable that holds that key). ``progress_bar`` is accepted."""
        self.model_pair = ModelPair(strong=strong_model, weak=weak_model)
        self.routers = list(routers)
        self.api_base, self.api_key = api_base, api_key
        self.model_counts: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        options = RouteLLMOptions(
            routers=self.routers, strong_model=strong_model, weak_model=weak_model, base_url=api_base,
            api_key=api_key, config=config, embedding_base_url=embedding_base_url,
            embedding_api_key_env=embedding_api_key_env, url_named="api_base",
        )
        self._thread = _StackThread(options)
        self._thread.start()
        self._thread.ready.wait()
        if self._thread.error is not None or self._thread.stack is None:
            self._thread.join(10)
            raise self._thread.error or RuntimeError("the routing stack did not start")
        stack = self._thread.stack
        # One channel for the Controller's life; route() answers in RouteLLM's naming (as given).
        self._channel = grpc.insecure_channel(f"127.0.0.1:{stack.router.port}")
        self._router = router_pb2_grpc.RouterServiceStub(self._channel)
        self._given_names = {stack.models["strong"].name: strong_model, stack.models["weak"].name: weak_model}
        self._client = openai.OpenAI(base_url=stack.base_url, api_key="routestack-local", max_retries=0)
        self._async_client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="routestack-local", max_retries=0)
        self._closed = False
        atexit.register(self.close)
        # RouteLLM's shape: client.chat.completions.create / acreate, like the OpenAI SDK
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.completion, acreate=self.acompletion))

    @property
    def base_url(self) -> str:
        """The gateway's OpenAI-compatible URL: other OpenAI clients can use the same router."""
        return str(self._client.base_url)

    def _validate_router_threshold(self, router: str | None, threshold: float | None) -> None:
        if router is None or threshold is None:
            raise RoutingError("Router or threshold unspecified.")
        if router not in self.routers:
            raise RoutingError(f"Invalid router {router}. Available routers are {self.routers}.")
        if not 0 <= threshold <= 1:
            raise RoutingError(f"Invalid threshold {threshold}. Threshold must be a float between 0.0 and 1.0.")

    def _parse_model_name(self, model: str) -> tuple[str, float]:
        parts = model.split("-", 2)
        if len(parts) != 3 or parts[0] != "router":
            raise RoutingError(f"Invalid model {model}. Model name must be of the format 'router-[router name]-[threshold].")
        try:
            threshold = float(parts[2])
        except ValueError as exc:
            raise RoutingError(f"Threshold {parts[2]} must be a float.") from exc
        return parts[1], threshold

    def _routed_request(
        self, router: str | None, threshold: float | None, kwargs: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        if "model" in kwargs:
            router, threshold = self._parse_model_name(kwargs["model"])
        self._validate_router_threshold(router, threshold)
        assert router is not None
        return router, {**kwargs, "model": f"router-{router}-{threshold}"}

    def _count(self, router: str, response: Any) -> Any:
        if isinstance(response, openai.types.chat.ChatCompletion):
            self.model_counts[router][response.model] += 1
        return response

    def completion(self, *, router: str | None = None, threshold: float | None = None, **kwargs: Any) -> Any:
        """OpenAI's chat completions arguments; the model is ``router-<router>-<threshold>`` (or the two arguments)."""
        router, request = self._routed_request(router, threshold, kwargs)
        return self._count(router, self._client.chat.completions.create(**request))

    async def acompletion(self, *, router: str | None = None, threshold: float | None = None, **kwargs: Any) -> Any:
        router, request = self._routed_request(router, threshold, kwargs)
        return self._count(router, await self._async_client.chat.completions.create(**request))

    def route(self, prompt: str, router: str, threshold: float) -> str:
        """The model that would answer ``prompt``: the strong one when its win rate >= ``threshold``."""
        self._validate_router_threshold(router, threshold)
        response = self._router.Route(router_pb2.RouteRequest(prompt=prompt, threshold=threshold), timeout=30)
        return self._given_names.get(response.model, str(response.model))

    def close(self) -> None:
        """Stop the router and gateway; idempotent."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._client.close()
        self._channel.close()
        self._thread.stop()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
