"""docker-compose.yml and the Dockerfile as the tests read them: parsed, and interpolated the way
``docker compose`` does (``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``, ``$$``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?message}``, ``${NAME?msg}``.
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(Exception):
    """A ``${NAME:?message}`` whose variable is unset: ``docker compose`` stops with ``message``."""


def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed (anchors and merge keys resolved), not interpolated."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def variables(value: Any) -> set[str]:
    """The environment variables ``value`` (a string, list or mapping, at any depth) uses."""
    if isinstance(value, dict):
        return set().union(*(variables(v) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(variables(v) for v in value), set())
    if isinstance(value, str):
        return {m.group("name") for m in _VARIABLE.finditer(value)}
    return set()


def required(value: str) -> dict[str, str]:
    """The ``${NAME:?message}`` variables in ``value``: name -> message."""
    return {
        m.group("name"): m.group("arg")
        for m in _VARIABLE.finditer(value)
        if m.group("op") in (":?", "?")
    }


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with its variables replaced from ``env``, as ``docker compose`` does; a required
    variable that is unset (or empty, for ``:?``) raises :class:`MissingVariable`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":?", "?") and unset:
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and unset:
            return arg
        return current or ""

    parts = value.split("$$")  # an escaped dollar reaches the container as one "$"
    return "$".join(_VARIABLE.sub(one, part) for part in parts)


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """A service's published ports as (host address, host port, container port); an address of
    ``""`` is every interface of the host."""
    ports = []
    for entry in service.get("ports", []):
        parts = str(entry).split("/")[0].split(":")
        address = parts[0] if len(parts) == 3 else ""
        host = parts[-2] if len(parts) > 1 else "0"  # "0": a port of Docker's choosing
        ports.append((address, int(host), int(parts[-1])))
    return ports


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def created_users(instructions: list[tuple[str, str]]) -> dict[str, Path]:
    """Users the Dockerfile's ``useradd`` commands create: name -> home folder."""
    users = {}
    for word, rest in instructions:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            args = shlex.split(command)
            if args[:1] == ["useradd"]:
                name = args[-1]
                home = Path("/home") / name
                for flag in ("-d", "--home-dir", "--home"):
                    if flag in args:
                        home = Path(args[args.index(flag) + 1])
                users[name] = home
    return users
