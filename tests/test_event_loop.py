"""The loop `lace serve` and `lace worker` run on: uvloop unless LACE_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import uvloop

from lace_engine.config import Settings
from lace_engine.errors import InvalidArgument
from lace_server import event_loop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_the_default_is_uvloop_and_asyncio_can_be_chosen() -> None:
    assert Settings.from_env({}).event_loop == "uvloop"
    assert Settings.from_env({"LACE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    assert event_loop.run(_loop_type(), "uvloop") is uvloop.Loop
    assert not issubclass(event_loop.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument, match="LACE_EVENT_LOOP='trio' is not one of 'uvloop', 'asyncio'"):
        Settings.from_env({"LACE_EVENT_LOOP": "trio"})


def test_lace_serve_refuses_an_unknown_loop_before_it_starts() -> None:
    done = subprocess.run([sys.executable, "-m", "lace_server.cli", "serve", "--listen", "127.0.0.1:0"],
                          env={"LACE_EVENT_LOOP": "trio", "PATH": ""}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "LACE_EVENT_LOOP='trio' is not one of" in done.stderr
