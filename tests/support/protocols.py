"""Whether an object implements a protocol's methods with signatures its callers can use.

``isinstance(obj, SomeRuntimeProtocol)`` only checks that the names exist; this checks each method
the protocol declares (its own and inherited) is callable on ``obj`` with the protocol's parameters:
the same names and kinds, and any parameter the protocol does not have given a default.
"""

from __future__ import annotations

import inspect
from typing import Any

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def protocol_methods(protocol: type) -> dict[str, Any]:
    """The methods ``protocol`` declares, by name, from the protocol classes of its MRO."""
    methods: dict[str, Any] = {}
    for cls in reversed(protocol.__mro__):
        if not getattr(cls, "_is_protocol", False) or cls.__module__ == "typing":
            continue
        for name, member in vars(cls).items():
            if inspect.isfunction(member) and (not name.startswith("__") or name == "__call__"):
                methods[name] = member
    return methods


def signature_problems(obj: object, protocol: type) -> list[str]:
    """What keeps ``obj`` from being used as ``protocol`` (empty when nothing does)."""
    problems: list[str] = []
    methods = protocol_methods(protocol)
    if not methods:
        return [f"{protocol.__name__} declares no methods"]
    for name, declared in methods.items():
        implemented = getattr(obj, name, None)
        if not callable(implemented):
            problems.append(f"{name}: missing or not callable")
            continue
        wanted = list(inspect.signature(declared).parameters.values())[1:]  # without self
        have = inspect.signature(implemented).parameters
        variadic = {p.kind for p in have.values() if p.kind in _VARIADIC}
        for param in wanted:
            got = have.get(param.name)
            if got is None:
                if not variadic:
                    problems.append(f"{name}: no parameter {param.name!r}")
            elif got.kind != param.kind:
                problems.append(
                    f"{name}: {param.name!r} is {got.kind.description}, not {param.kind.description}"
                )
            elif param.default is not inspect.Parameter.empty and got.default is inspect.Parameter.empty:
                problems.append(f"{name}: {param.name!r} has no default")
        declared_names = {p.name for p in wanted}
        for extra in have.values():
            required = extra.kind not in _VARIADIC and extra.default is inspect.Parameter.empty
            if extra.name not in declared_names and required:
                problems.append(f"{name}: extra parameter {extra.name!r} without a default")
    return problems


def assert_implements(obj: object, protocol: type) -> None:
    problems = signature_problems(obj, protocol)
    assert not problems, f"{type(obj).__name__} does not implement {protocol.__name__}: {problems}"
