"""Attach / detach bookkeeping for edits that live in hooks (LoFiT heads, RED, RepE steering).

A subclass only says where its hooks go (`_register`); attaching twice, detaching, switching the
edit off for reference passes and applying it for one block behave the same for every method.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.hooks import RemovableHandle

from lofit.families import FamilySpec


class HookedEdit:
    """Mixin: call `_init_hooks()` in `__init__` and implement `_register`."""

    enabled: bool
    _handles: list[RemovableHandle]

    def _init_hooks(self) -> None:
        self.enabled = True
        self._handles = []

    def _register(self, model: nn.Module, family: FamilySpec | None) -> list[RemovableHandle]:
        """Register this edit's hooks on `model` and return their handles."""
        raise NotImplementedError

    def attach(self, model: nn.Module, family: FamilySpec | None = None):
        if self._handles:
            raise RuntimeError(f"{type(self).__name__} is already attached; detach() it first")
        self._handles = self._register(model, family)
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The base model while the hooks stay in place (DPO reference passes)."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    @contextmanager
    def applied(self, model: nn.Module, family: FamilySpec | None = None) -> Iterator:
        """Attach for the duration of a block, then detach."""
        self.attach(model, family)
        try:
            yield self
        finally:
            self.detach()
