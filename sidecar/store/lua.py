"""Loads the Lua scripts in lua/, resolving `--@include` lines so helpers are shared, not copied."""

from __future__ import annotations

import re
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parents[2] / "lua"
_INCLUDE = re.compile(r"^--@include\s+(\S+)\s*$", re.M)


def load_script(name: str, lua_dir: Path = LUA_DIR) -> str:
    """The source of `lua/<name>.lua` with its includes inlined."""
    source = (lua_dir / f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda m: (lua_dir / m.group(1)).read_text(encoding="utf-8"), source)
