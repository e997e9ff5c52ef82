"""What the gateway's guarded protocol takes from uvicorn's private `HttpToolsProtocol`.

The subclass (found by its base class anywhere under gateway/) overrides parser callbacks and
reads attributes uvicorn sets. A uvicorn release may rename or stop calling any of them: these
tests then fail with a message naming the method or attribute, so the `uvicorn` upper bound
in pyproject.toml is raised only once they pass on the new version.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

ROOT = Path(__file__).resolve().parent.parent
UVICORN = f"uvicorn {version('uvicorn')}"
CALLBACKS = ["on_message_begin", "on_headers_complete", "on_body", "on_message_complete"]
"""The parser callbacks the subclass hooks, in the order uvicorn must call them."""


def _subclass() -> tuple[Path, ast.ClassDef]:
    found = [
        (path, node)
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if "HttpToolsProtocol" in path.read_text()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
        and any(isinstance(b, ast.Name) and b.id == "HttpToolsProtocol" for b in node.bases)
    ]
    assert len(found) == 1, f"expected one subclass of HttpToolsProtocol in gateway/: {found}"
    return found[0]


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _broken(what: str) -> str:
    path, cls = _subclass()
    return (
        f"{UVICORN} changed HttpToolsProtocol: {what}. {cls.name} in "
        f"{path.relative_to(ROOT)} relies on it: adapt it, or keep uvicorn below this "
        "version (pyproject.toml)"
    )


def test_every_overridden_method_is_uvicorns_with_the_same_parameters() -> None:
    _, cls = _subclass()
    called = {  # method → what it calls on super()
        name: {
            call.func.attr
            for call in ast.walk(node)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Call)
            and isinstance(call.func.value.func, ast.Name)
            and call.func.value.func.id == "super"
        }
        for name, node in _methods(cls).items()
    }
    overridden = {name: _methods(cls)[name] for name, calls in called.items() if name in calls}
    assert set(CALLBACKS) <= set(overridden), "the subclass no longer hooks every callback"
    for name in set().union(*called.values()):
        assert hasattr(HttpToolsProtocol, name), _broken(f"it has no method {name}()")
    for name, node in overridden.items():
        theirs = list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters)
        ours = [a.arg for a in node.args.args]
        assert theirs == ours, _broken(f"{name}{tuple(theirs)} now, not {name}{tuple(ours)}")


def test_uvicorn_sets_every_attribute_the_subclass_reads() -> None:
    _, cls = _subclass()
    ours = set(_methods(cls))  # methods, class attributes and attributes it assigns
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            ours.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            ours.add(node.id)
    read = {
        node.attr
        for node in ast.walk(cls)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ast.Load)
    } - ours
    assert read >= {"connections", "loop", "transport"}, read

    async def connect() -> HttpToolsProtocol:
        protocol = _protocol(HttpToolsProtocol)
        protocol.connection_made(_Transport())
        return protocol

    protocol = asyncio.run(connect())
    for name in sorted(read):
        assert hasattr(protocol, name), _broken(f"a connected protocol has no attribute {name}")
    assert protocol in protocol.connections, _broken("connection_made() no longer registers it")


def test_uvicorn_calls_the_callbacks_for_each_request_in_order() -> None:
    calls: list[str] = []

    def recording(name: str) -> Any:
        def hook(self: HttpToolsProtocol, *args: Any) -> None:
            calls.append(name)
            getattr(super(Recording, self), name)(*args)

        return hook

    Recording = type("Recording", (HttpToolsProtocol,), {n: recording(n) for n in CALLBACKS})

    async def two_requests() -> bytes:
        transport = _Transport()
        protocol = _protocol(Recording)
        protocol.connection_made(transport)
        request = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        for answers in (1, 2):  # the second on the same kept-alive connection
            protocol.data_received(request)
            try:
                await asyncio.wait_for(transport.wrote(answers), 5)
            except TimeoutError:
                break  # the assertions below say what uvicorn called
        protocol.connection_lost(None)
        assert protocol not in protocol.connections, _broken("connection_lost() keeps it")
        return bytes(transport.written)

    answered = asyncio.run(two_requests())
    assert calls == CALLBACKS * 2, _broken(f"data_received() now calls {calls}")
    assert answered.count(b"HTTP/1.1 200") == 2, _broken(f"two requests got {answered!r}")


@pytest.mark.parametrize("name", ["data_received", "connection_made", "connection_lost"])
def test_the_entry_points_keep_their_signatures(name: str) -> None:
    expected = {"data_received": ["self", "data"], "connection_lost": ["self", "exc"]}
    theirs = list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters)
    assert theirs == expected.get(name, ["self", "transport"]), _broken(f"{name}{tuple(theirs)}")


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    while (await receive())["more_body"]:
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _protocol(cls: type[HttpToolsProtocol]) -> HttpToolsProtocol:
    config = uvicorn.Config(_ok, http=cls, log_config=None, lifespan="off")
    return cls(config=config, server_state=ServerState(), app_state={})


class _Transport(asyncio.Transport):
    """Enough of a socket transport for uvicorn: addresses, writes, flow control."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self._closing = False
        self._changed = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self._changed.set()

    async def wrote(self, responses: int) -> None:
        while self.written.count(b"HTTP/1.1 ") < responses:
            self._changed.clear()
            await self._changed.wait()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
