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
        return lambda name: names in name
    if callable(names):
        return names
    wanted = set(names)
    return lambda name: name in wanted


_RESIDUAL = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
_ATTENTION = ("q", "k", "v", "z", "pattern")
_MLP = ("pre", "post")


def act_name(name: str, layer: int | None = None, norm: str | None = None) -> str:
    """A hook name from TransformerLens' short form: ``("post", 0)`` ->
    ``blocks.0.mlp.hook_post``, ``("q", 1)`` -> ``blocks.1.attn.hook_q``, ``("resid_pre", 0)``,
    ``("normalized", 0, "ln1")`` -> ``blocks.0.ln1.hook_normalized``, ``("normalized",)`` ->
    ``ln_final.hook_normalized``, ``("embed",)`` -> ``hook_embed``."""
    if name in ("embed", "pos_embed"):
        return f"hook_{name}"
    if name == "normalized":
        if layer is None:
            return "ln_final.hook_normalized"
        return f"blocks.{layer}.{norm or 'ln1'}.hook_normalized"
    if layer is None:
        raise KeyError(f"{name!r} needs a layer, e.g. ({name!r}, 0)")
    if name in _RESIDUAL:
        return f"blocks.{layer}.hook_{name}"
    if name in _ATTENTION:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in _MLP:
        return f"blocks.{layer}.mlp.hook_{name}"
    known = ", ".join((*_RESIDUAL, *_ATTENTION, *_MLP, "normalized", "embed", "pos_embed"))
    raise KeyError(f"unknown activation {name!r}; short names: {known}")


class ActivationCache(dict[str, Tensor]):
    """Activations by hook name; also indexed TransformerLens-style, ``cache["post", 0]``
    (see :func:`act_name`)."""

    def __getitem__(self, key: str | tuple) -> Tensor:
        name = act_name(*key) if isinstance(key, tuple) else key
        try:
            return super().__getitem__(name)
        except KeyError:
            near = [n for n in self if name in n or n.endswith(name)]
            hint = f"; did you mean {', '.join(near[:4])}?" if near else (
                f"; cached: {', '.join(list(self)[:6])}{', ...' if len(self) > 6 else ''}")
            raise KeyError(f"{name!r} is not in the cache{hint}") from None


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
        """Names of the hook points that ``names`` selects, in forward order: all (None),
        those containing a string (``"mlp.hook_post"``), those in a list, or those a predicate
        accepts. A string or list that selects nothing is an error naming it."""
        match = _matcher(names)
        found = [name for name in self.hook_points if match(name)]
        if not found and isinstance(names, str | list | tuple | set):
            raise KeyError(f"no hook point matches {names!r}; hook names look like "
                           f"{', '.join(list(self.hook_points)[2:5])}")
        return found

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
        self, tokens: Any, fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = (), **kwargs: Any
    ) -> Tensor:
        """Logits of a forward pass (``kwargs`` go to ``forward``) with the hooks attached."""
        with self.hooks(fwd_hooks):
            return self(tokens, **kwargs)

    def run_with_cache(
        self, tokens: Any, names_filter: NameFilter = None, *, detach: bool = True,
        **kwargs: Any,
    ) -> tuple[Tensor, ActivationCache]:
        """Logits and the activations at every hook point ``names_filter`` selects (see
        :meth:`hook_names`; ``kwargs`` go to ``forward``)."""
        cache = ActivationCache()

        def save(x: Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        logits = self.run_with_hooks(tokens, [(self.hook_names(names_filter), save)], **kwargs)
        return logits, cache
