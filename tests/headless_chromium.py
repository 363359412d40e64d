"""Headless Chromium driven over its DevTools protocol (a helper module, no tests here): open a
page, evaluate JavaScript in it, take screenshots. Bokeh pages draw after their websocket
delivers the document, so a plain ``chromium --screenshot`` would catch an empty page."""
from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import numpy as np


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Chromium:
    """``with Chromium() as browser: page = browser.open(url); page.evaluate("1 + 1"); page.screenshot()``."""

    def __init__(self, width: int = 1000, height: int = 800):
        self.size = (width, height)

    def __enter__(self):
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        self._proc = subprocess.Popen(
            [chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile.name}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: its helper processes are stopped with it
        deadline = time.monotonic() + 60
        for line in self._proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
            match = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
            if match:
                self.port = int(match.group(1))
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError("chromium did not start its DevTools server")
        self._loop = asyncio.new_event_loop()
        return self

    def __exit__(self, *exc):
        self._signal_group(signal.SIGTERM)
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._signal_group(signal.SIGKILL)  # renderer / crashpad helpers still writing the profile
        self._loop.close()
        for _ in range(20):  # a helper may still be flushing into the profile for a moment
            shutil.rmtree(self._profile.name, ignore_errors=True)
            if not os.path.exists(self._profile.name):
                break
            time.sleep(0.1)
        self._profile.cleanup()

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def open(self, url: str) -> "Page":
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?{url}", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as answer:
            target = json.load(answer)
        return Page(self._loop, target["webSocketDebuggerUrl"])


class Page:
    """One tab: :meth:`evaluate` (a JavaScript expression → its JSON value), :meth:`screenshot`."""

    def __init__(self, loop, ws_url: str):
        from tornado.websocket import websocket_connect

        self._loop = loop
        self._ids = itertools.count(1)
        async def connect():
            return await websocket_connect(ws_url, max_message_size=64 << 20)

        self._ws = loop.run_until_complete(connect())

    def _call(self, method: str, **params) -> dict:
        async def call():
            key = next(self._ids)
            await self._ws.write_message(json.dumps({"id": key, "method": method, "params": params}))
            while True:
                message = json.loads(await self._ws.read_message())
                if message.get("id") == key:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message["result"]

        return self._loop.run_until_complete(asyncio.wait_for(call(), 60))

    def evaluate(self, expression: str):
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]
        return result.get("value")

    def wait_for(self, expression: str, timeout_s: float = 30):
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout_s} s")
            time.sleep(0.25)

    def screenshot(self) -> np.ndarray:
        """The page as an ``(height, width, 3)`` uint8 RGB array."""
        from PIL import Image

        png = base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
