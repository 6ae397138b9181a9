"""Named hook points: read or replace any activation by name, as in TransformerLens.

A :class:`HookPoint` is an identity module placed at every channel site of the model. Its name
is its module path (``blocks.0.mlp.hook_post``), and the same name, with ``:index`` for one
channel, is the circuit node id, the pruning mask key and the viewer row. Every channel-site
activation has shape ``[batch, position, channel]``; attention patterns are
``[batch, head, query, key]``.

A hook function takes ``(activation, hook)`` and returns a replacement tensor or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]
NameFilter = str | Sequence[str] | Callable[[str], bool] | None


class HookPoint(nn.Module):
    """An identity on the activation, unless hook functions are attached.

    ``keep`` > 0 makes the site activation-sparse: per position, only the ``keep`` largest
    |x| channels survive (AbsTopK), before any hook function sees the tensor.
    """

    def __init__(self, keep: int = 0) -> None:
        super().__init__()
        self.name = ""
        self.keep = keep
        self.fns: list[HookFn] = []

    def forward(self, x: Tensor) -> Tensor:
        if 0 < self.keep < x.shape[-1]:
            top = x.abs().topk(self.keep, dim=-1).indices
            x = x * torch.zeros_like(x).scatter_(-1, top, 1.0)
        for fn in self.fns:
            out = fn(x, self)
            if out is not None:
                x = out
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}, keep={self.keep}"


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _: True
    if isinstance(names, str):
        return lambda name: name == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda name: name in wanted


class HookedModule(nn.Module):
    """Base for models with hook points. Call :meth:`setup_hooks` at the end of ``__init__``."""

    hook_points: dict[str, HookPoint]

    def setup_hooks(self) -> None:
        """Name every :class:`HookPoint` by its module path."""
        self.hook_points = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_points[name] = module

    def hook_names(self, names: NameFilter = None) -> list[str]:
        """Names of the hook points that ``names`` selects, in forward order."""
        match = _matcher(names)
        return [name for name in self.hook_points if match(name)]

    def _point(self, name: str) -> HookPoint:
        try:
            return self.hook_points[name]
        except KeyError:
            raise KeyError(f"no hook point {name!r}; see model.hook_names()") from None

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[NameFilter, HookFn]]) -> Iterator[None]:
        """Attach ``(name_or_filter, fn)`` pairs for the duration of the block."""
        attached: list[tuple[HookPoint, HookFn]] = []
        try:
            for names, fn in fwd_hooks:
                if isinstance(names, str):
                    targets = [self._point(names)]
                elif callable(names):
                    targets = [self.hook_points[n] for n in self.hook_names(names)]
                else:
                    targets = [self._point(name) for name in names]
                for point in targets:
                    point.fns.append(fn)
                    attached.append((point, fn))
            yield
        finally:
            for point, fn in attached:
                point.fns.remove(fn)

    def run_with_hooks(
        self, tokens: Tensor, fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = (), **kwargs: Any
    ) -> Tensor:
        """Logits of a forward pass (``kwargs`` go to ``forward``) with the hooks attached."""
        with self.hooks(fwd_hooks):
            return self(tokens, **kwargs)

    def run_with_cache(
        self, tokens: Tensor, names_filter: NameFilter = None, *, detach: bool = True,
        **kwargs: Any,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and a dict of the activations at every hook point ``names_filter`` selects
        (``kwargs`` go to ``forward``)."""
        cache: dict[str, Tensor] = {}

        def save(x: Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        logits = self.run_with_hooks(tokens, [(self.hook_names(names_filter), save)], **kwargs)
        return logits, cache
