"""A small GPT whose weights can be kept weight-sparse (Gao et al. 2025), with named hooks.

Pre-norm blocks with RMSNorm, multi-head attention with small heads, a GELU MLP, learned
positions and an untied unembedding; optionally an attention sink and a dense bigram table.
Every matrix is stored in ``F.linear`` layout ``[out, in]`` and multiplied through
:func:`sparsecircuits.kernels.sparse_linear`, so the zeros the sparsity projection leaves can be
skipped.

Hook points (all ``[batch, position, channel]`` except the pattern), per block ``i``::

    hook_embed, hook_pos_embed
    blocks.i.hook_resid_pre
    blocks.i.ln1.hook_normalized         residual read by attention
    blocks.i.attn.hook_q / hook_k / hook_v   channel c belongs to head c // d_head
    blocks.i.attn.hook_pattern           [batch, head, query, key]
    blocks.i.attn.hook_z                 pattern-weighted values, same channels as hook_v
    blocks.i.hook_attn_out               residual write of attention
    blocks.i.hook_resid_mid
    blocks.i.ln2.hook_normalized         residual read by the MLP
    blocks.i.mlp.hook_pre / hook_post    MLP neurons before / after GELU
    blocks.i.hook_mlp_out                residual write of the MLP
    blocks.i.hook_resid_post
    ln_final.hook_normalized             residual read by the unembedding
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsecircuits.config import ModelConfig
from sparsecircuits.data.tokenizer import PAD_ID, TOKENIZER
from sparsecircuits.hooks import HookedModule, HookPoint
from sparsecircuits.kernels import sparse_linear


def _keep(cfg: ModelConfig, site: str, width: int) -> int:
    """Channels kept per token at ``site`` under activation sparsity (0: the site is dense)."""
    if cfg.act_sparsity <= 0 or site not in cfg.act_sparsity_sites:
        return 0
    return max(1, math.ceil(cfg.act_sparsity * width))


class RMSNorm(nn.Module):
    """x / rms(x) * w, with a hook on the normalised output."""

    def __init__(self, width: int, keep: int = 0, eps: float = 1e-6) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(width))
        self.eps = eps
        self.hook_normalized = HookPoint(keep)

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_normalized(F.rms_norm(x, x.shape[-1:], self.w, self.eps))


class Linear(nn.Module):
    """``y = x Wᵀ + b`` through the sparse-kernel dispatcher."""

    def __init__(self, d_in: int, d_out: int, std: float, backend: str) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(d_out, d_in) * std)
        self.b = nn.Parameter(torch.zeros(d_out))
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        return sparse_linear(x, self.W, self.b, backend=self.backend)


class Attention(nn.Module):
    """Causal multi-head attention; q, k and v are separate matrices so each is its own tensor
    to sparsify and its own hook site."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = cfg.n_heads * cfg.d_head
        std, backend = cfg.init_std, cfg.kernel_backend
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.q = Linear(cfg.d_model, width, std, backend)
        self.k = Linear(cfg.d_model, width, std, backend)
        self.v = Linear(cfg.d_model, width, std, backend)
        self.o = Linear(width, cfg.d_model, std / math.sqrt(2 * cfg.n_layers), backend)
        self.sink = nn.Parameter(torch.zeros(cfg.n_heads)) if cfg.attn_sink else None
        self.hook_q = HookPoint(_keep(cfg, "attn.hook_q", width))
        self.hook_k = HookPoint(_keep(cfg, "attn.hook_k", width))
        self.hook_v = HookPoint(_keep(cfg, "attn.hook_v", width))
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def _heads(self, x: Tensor) -> Tensor:
        batch, pos, _ = x.shape
        return x.view(batch, pos, self.n_heads, self.d_head).transpose(1, 2)

    def forward(self, x: Tensor, last_only: bool = False) -> Tensor:
        """Attention output at every position, or only at the last (keys and values still
        come from every position)."""
        q = self._heads(self.hook_q(self.q(x[:, -1:] if last_only else x)))
        k = self._heads(self.hook_k(self.k(x)))
        v = self._heads(self.hook_v(self.v(x)))
        if self.sink is None and not self.hook_pattern.fns:
            # A single last query sees every key: no mask (is_causal aligns top-left).
            z = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only)
        else:
            z = self.hook_pattern(self._pattern(q, k)) @ v
        batch, _, pos, _ = z.shape
        z = self.hook_z(z.transpose(1, 2).reshape(batch, pos, -1))
        return self.o(z)

    def _pattern(self, q: Tensor, k: Tensor) -> Tensor:
        queries, keys = q.shape[2], k.shape[2]
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d_head)
        # The queries are the last positions: query i sits at position keys - queries + i.
        causal = torch.ones(queries, keys, dtype=torch.bool, device=q.device).tril(keys - queries)
        scores = scores.masked_fill(~causal, float("-inf"))
        if self.sink is None:
            return scores.softmax(dim=-1)
        sink = self.sink.view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        return torch.cat([scores, sink], dim=-1).softmax(dim=-1)[..., :-1]


class MLP(nn.Module):
    """GELU MLP with hooks on the neurons."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        std, backend = cfg.init_std, cfg.kernel_backend
        self.fc_in = Linear(cfg.d_model, cfg.d_mlp, std, backend)
        self.fc_out = Linear(cfg.d_mlp, cfg.d_model, std / math.sqrt(2 * cfg.n_layers), backend)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint(_keep(cfg, "mlp.hook_post", cfg.d_mlp))
        self.restricted: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        """Set within :func:`restricted_mlps`: the input matrix and bias of the computed
        neurons, the output matrix's columns for them and the output bias with the held
        neurons folded in."""

    def forward(self, x: Tensor) -> Tensor:
        if self.restricted is None:
            return self.fc_out(self.hook_post(F.gelu(self.hook_pre(self.fc_in(x)))))
        w_in, b_in, w_out, b_out = self.restricted
        post = self.hook_post(F.gelu(self.hook_pre(F.linear(x, w_in, b_in))))
        if b_out.dim() == 2:  # per position; this pass may compute only the last positions
            b_out = b_out[-x.shape[-2]:]
        return F.linear(post, w_out) + b_out


class Block(nn.Module):
    """One pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        # Registration order is forward order: hook_names() lists hooks as the pass meets them.
        self.hook_resid_pre = HookPoint()
        self.ln1 = RMSNorm(d, _keep(cfg, "ln1.hook_normalized", d))
        self.attn = Attention(cfg)
        self.hook_attn_out = HookPoint(_keep(cfg, "hook_attn_out", d))
        self.hook_resid_mid = HookPoint()
        self.ln2 = RMSNorm(d, _keep(cfg, "ln2.hook_normalized", d))
        self.mlp = MLP(cfg)
        self.hook_mlp_out = HookPoint(_keep(cfg, "hook_mlp_out", d))
        self.hook_resid_post = HookPoint()

    def forward(self, x: Tensor, last_only: bool = False, resume: str | None = None) -> Tensor:
        """The block at every position, or (``last_only``) its output at the last one.

        ``resume="pre"`` or ``"mid"``: ``x`` is the residual stream just after
        ``hook_resid_pre`` or ``hook_resid_mid``; that hook does not run again."""
        if resume != "mid":
            if resume is None:
                x = self.hook_resid_pre(x)
            attn_out = self.hook_attn_out(self.attn(self.ln1(x), last_only))
            x = self.hook_resid_mid((x[:, -1:] if last_only else x) + attn_out)
        elif last_only:
            x = x[:, -1:]
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class SparseGPT(HookedModule):
    """The model. ``forward(tokens [batch, pos]) -> logits [batch, pos, vocab]``."""

    def __init__(self, cfg: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            self.W_E = nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_model) * cfg.init_std)
            self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * cfg.init_std)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.ln_final = RMSNorm(cfg.d_model)
            self.unembed = Linear(cfg.d_model, cfg.vocab_size, cfg.init_std, cfg.kernel_backend)
            self.bigram = (
                nn.Parameter(torch.rand(cfg.vocab_size, cfg.vocab_size) * 0.02)
                if cfg.bigram else None
            )
        finally:
            torch.random.set_rng_state(generator_state)
        self.setup_hooks()

    def to_tokens(self, text: str | list[str]) -> Tensor:
        """Token ids ``[batch, n_ctx]`` of one prompt or a list, left-padded to the context as
        the tasks' prompts are (so the last character sits at the last position, where the
        tasks are scored)."""
        texts = [text] if isinstance(text, str) else list(text)
        tokens = torch.full((len(texts), self.cfg.n_ctx), PAD_ID, dtype=torch.long)
        for row, prompt in enumerate(texts):
            ids = TOKENIZER.encode(prompt)
            if len(ids) > self.cfg.n_ctx:
                raise ValueError(f"prompt {row} has {len(ids)} characters, more than the "
                                 f"context of {self.cfg.n_ctx}: {prompt[:40]!r}...")
            if ids:
                tokens[row, -len(ids):] = torch.tensor(ids)
        return tokens.to(self.W_E.device)

    def to_str_tokens(self, tokens: str | Tensor) -> list[str] | list[list[str]]:
        """The characters of a prompt or of token ids, padding left out: a list for one row
        (a string or 1-D ids), a list of lists for ``[batch, pos]`` ids."""
        ids = self.to_tokens(tokens)[0] if isinstance(tokens, str) else tokens
        rows = [ids] if ids.dim() == 1 else list(ids)
        out = [[TOKENIZER.decode([int(t)]) for t in row if int(t) != PAD_ID] for row in rows]
        return out[0] if ids.dim() == 1 else out

    def _as_tokens(self, tokens: str | list[str] | Tensor) -> Tensor:
        if isinstance(tokens, str) or (isinstance(tokens, list) and tokens
                                       and isinstance(tokens[0], str)):
            return self.to_tokens(tokens)
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a string, a list of strings or a tensor of ids, "
                            f"not {type(tokens).__name__}")
        if tokens.dim() == 1:
            return tokens.unsqueeze(0)
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [pos] or [batch, pos], got {list(tokens.shape)}")
        return tokens

    def forward(
        self, tokens: str | list[str] | Tensor, *, last_only: bool = False,
        start: tuple[str, Tensor] | None = None,
    ) -> Tensor:
        """Logits ``[batch, pos, vocab]`` of ``tokens [batch, pos]`` (a 1-D tensor is one row;
        a string or list of strings goes through :meth:`to_tokens`).

        ``last_only``: ``[batch, 1, vocab]`` at the last position, computed without the final
        block's work at the other positions (its queries and everything after attention; hooks
        there see one position). ``start=(hook, resid)``: continue from the residual stream
        ``resid [batch, pos, d_model]`` just after ``hook``, one of
        :meth:`residual_starts`; everything up to that hook, the hook included, is skipped.
        """
        tokens = self._as_tokens(tokens)
        if tokens.shape[-1] > self.cfg.n_ctx:
            raise ValueError(f"{tokens.shape[-1]} tokens exceed the context of {self.cfg.n_ctx}")
        first, resume = 0, None
        if start is None:
            # F.embedding, not W_E[tokens]: indexing's backward is index_put_ with
            # accumulate, which on a multi-threaded CPU adds rows with atomics in whatever
            # order the threads run; embedding's backward sums each row in token order.
            x = self.hook_embed(F.embedding(tokens, self.W_E))
            x = x + self.hook_pos_embed(self.W_pos[: tokens.shape[-1]].expand_as(x))
        else:
            name, x = start
            first, resume = self.residual_starts().get(name, (-1, None))
            if first < 0:
                raise ValueError(f"cannot start at {name!r}: one of {list(self.residual_starts())}")
        last = len(self.blocks) - 1
        for i in range(first, len(self.blocks)):
            x = self.blocks[i](x, last_only and i == last, resume if i == first else None)
        if last_only and first > last:
            x = x[:, -1:]
        logits = self.unembed(self.ln_final(x))
        if self.bigram is not None:
            logits = logits + F.embedding(tokens[:, -1:] if last_only else tokens, self.bigram)
        return logits

    def residual_starts(self) -> dict[str, tuple[int, str | None]]:
        """The residual hooks a forward pass can start after: ``blocks.{i}.hook_resid_pre``,
        ``blocks.{i}.hook_resid_mid`` and the last block's ``hook_resid_post``, each with the
        block it continues in and how (``n_layers``: straight to ``ln_final``)."""
        n = len(self.blocks)
        starts: dict[str, tuple[int, str | None]] = {}
        for i in range(n):
            starts[f"blocks.{i}.hook_resid_pre"] = (i, "pre")
            starts[f"blocks.{i}.hook_resid_mid"] = (i, "mid")
        starts[f"blocks.{n - 1}.hook_resid_post"] = (n, None)
        return starts

    def sparse_parameters(self) -> dict[str, str]:
        """Every weight-sparse tensor by name, with its kind: ``matrix`` or ``embed`` (the
        embeddings, the unembedding and every bias). Norm gains, the sink and the bigram table
        stay dense."""
        kinds: dict[str, str] = {}
        for name, param in self.named_parameters():
            if name.endswith(".w") or name.endswith("sink") or name == "bigram":
                continue
            is_matrix = param.dim() == 2 and name not in ("W_E", "W_pos", "unembed.W")
            kinds[name] = "matrix" if is_matrix else "embed"
        return kinds


@contextmanager
def restricted_mlps(model: SparseGPT, held: dict[int, tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Within: the MLP of each block ``i`` in ``held``, given ``(neurons, values)``, computes
    only the neurons whose indices are in ``neurons`` and holds every other neuron at its entry
    of ``values`` (``[d_mlp]``, or ``[position, d_mlp]`` per position), their contribution
    folded into the output bias.

    The same function as replacing those neurons by ``values`` at ``mlp.hook_post``, at the
    cost of the computed neurons alone: exact ablation of most of an MLP, cheaply. The MLP's
    hooks see only the computed neurons, in the order of ``neurons``. Not for an
    activation-sparse MLP (its top-k needs every neuron): that raises ``ValueError``."""
    mlps = {i: model.blocks[i].mlp for i in held}
    for i, mlp in mlps.items():
        if mlp.hook_post.keep:
            raise ValueError(f"blocks.{i}.mlp is activation-sparse: it cannot be restricted")
    with torch.no_grad():
        for i, (neurons, values) in held.items():
            fc_in, fc_out = mlps[i].fc_in, mlps[i].fc_out
            others = torch.ones(fc_out.W.shape[1], dtype=torch.bool, device=fc_out.W.device)
            others[neurons] = False
            folded = fc_out.b + values[..., others] @ fc_out.W[:, others].T
            mlps[i].restricted = (fc_in.W[neurons], fc_in.b[neurons], fc_out.W[:, neurons],
                                  folded)
    try:
        yield
    finally:
        for mlp in mlps.values():
            mlp.restricted = None
