"""A real browser for tests: Debian's headless chromium, driven over the DevTools protocol with aiohttp's
websocket client (no driver, no extra package). Asynchronous, so the servers under test can share the loop."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["CHROMIUM", "Tab", "open_tab"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


class Tab:
    """One page of the browser: navigate, type, click, read, screenshot."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command's result; events that arrive meanwhile are dropped."""
        call = next(self._ids)
        await self._socket.send_str(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads((await self._socket.receive(timeout=30)).data)
            if message.get("id") == call:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression in the page (awaited when it is a promise)."""
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll until a JS expression is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.1)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def type_into(self, selector: str, text: str) -> None:
        """Focus an element and type into it, as a keyboard would (input events and all)."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre."""
        box = await self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_tab(profile: Path, width: int = 1280, height: int = 1000) -> AsyncIterator[Tab]:
    """Start headless chromium on a free DevTools port and attach to its page."""
    assert CHROMIUM is not None
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-extensions", "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}",
        f"--window-size={width},{height}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    drain: asyncio.Task[None] | None = None
    try:
        seen = b""
        async with asyncio.timeout(30):
            while (found := LISTENING.search(seen)) is None:
                line = await process.stderr.readline()
                assert line, f"chromium exited: {seen.decode(errors='replace')[-2000:]}"
                seen += line
        stderr = process.stderr

        async def drained() -> None:  # chromium logs on: a full pipe would stall it
            while await stderr.read(65536):
                pass

        drain = asyncio.create_task(drained())
        port = found.group(1).decode().split(":")[2].split("/")[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as listing:
                targets = await listing.json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as socket:
                tab = Tab(socket)
                await tab.send("Page.enable")
                yield tab
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        if drain is not None:
            drain.cancel()
