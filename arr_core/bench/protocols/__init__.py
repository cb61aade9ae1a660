"""Generation benchmarks scored with their official, VLM-based protocols (docs/protocols.md).

One module per benchmark, each with ``NAME``, ``VERSION``, ``DIFFERENCES`` and
``run(client, inputs, *, judge_name, simulated, n_boot, seed) -> EvalResult``; ``base`` holds what they
share. ``run_protocol`` is the entry point of ``arr eval protocol``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from arr_core.bench.protocols.base import ProtocolInputs
from arr_core.errors import InputError

PROTOCOLS = {"gedit": "gedit", "imgedit": "imgedit", "dpg": "dpg", "tiif": "tiif", "unigenbench": "unigenbench"}


def protocol_module(name: str) -> Any:
    """The module of a protocol by name (``InputError`` naming the choices otherwise)."""
    if name not in PROTOCOLS:
        raise InputError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}", field="protocol")
    return import_module(f"arr_core.bench.protocols.{PROTOCOLS[name]}")


def run_protocol(name: str, client: Any, inputs: ProtocolInputs, *, judge_name: str, simulated: bool = False,
                 n_boot: int = 2000, seed: int = 0) -> Any:
    """Score ``inputs`` with protocol ``name``; returns an ``EvalResult`` (kind = ``name``,
    ``config["protocol"]`` = name, ``config["protocol_version"]``)."""
    return protocol_module(name).run(client, inputs, judge_name=judge_name, simulated=simulated, n_boot=n_boot,
                                     seed=seed)


__all__ = ["PROTOCOLS", "ProtocolInputs", "protocol_module", "run_protocol"]
