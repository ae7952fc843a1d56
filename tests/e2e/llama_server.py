"""llama-cpp-python's OpenAI-compatible server on a free port, as a separate process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["running_llama_server"]


@contextmanager
def running_llama_server(model: Path, context: int = 512) -> Iterator[str]:
    """Serve ``model`` (a GGUF) until the block ends, with ``context`` tokens of context (one a byte for the
    tiny models); yields the server's root URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = model.with_suffix(".log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
         "--n_threads", "1", "--n_threads_batch", "1", "--interrupt_requests", "false", "--n_ctx", str(context)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited; see {log.name}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("llama.cpp server did not start within 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
