"""Loads the Lua scripts (package data `sidecar.lua`), resolving `--@include` lines so helpers are shared."""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

LUA_DIR: Traversable = resources.files("sidecar").joinpath("lua")
_INCLUDE = re.compile(r"^--@include\s+(\S+)\s*$", re.M)


def load_script(name: str, lua_dir: Traversable = LUA_DIR) -> str:
    """The source of `lua/<name>.lua` with its includes inlined."""
    source = lua_dir.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: _read(lua_dir, m.group(1)), source)


def _read(lua_dir: Traversable, relative: str) -> str:
    node = lua_dir
    for part in relative.split("/"):
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")
