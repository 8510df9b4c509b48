"""Linear attention (Katharopoulos et al. 2020): softmax replaced by a kernel φ(q)·φ(k).

With φ(x) = elu(x) + 1 > 0 the output is φ(q)ᵀ(Σⱼ φ(kⱼ) vⱼᵀ) / φ(q)ᵀ(Σⱼ φ(kⱼ)), so the cost is
O(N · hd²) instead of O(N²); causal attention keeps running (prefix) sums of the same terms.
The (Nq, Nk) weights are materialised only when asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.attention import Attention, dense_mask, merge_heads, split_heads
from attnbench.nn.ctx import Ctx

EPS = 1e-6


def feature_map(x: Tensor) -> Tensor:
    return F.elu(x) + 1


@register("attention", "linear")
class LinearAttention(Attention):
    """Kernelised linear attention, φ = elu + 1; no score biases (use absolute posenc)."""

    # neither score biases nor RoPE fit its normaliser: no supports_relative_posenc
    supports_causal = True  # prefix sums
    supports_cross = True
    supports_padding = True  # padded keys get a zero feature vector

    def __init__(self, d_model: int, heads: int, bias: bool = True):
        super().__init__(d_model, heads)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        ctx: Ctx | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        ctx = ctx or Ctx()
        q = feature_map(split_heads(self.q_proj(query), self.heads))  # (B, h, Nq, hd)
        k = feature_map(split_heads(self.k_proj(key), self.heads))  # (B, h, Nk, hd)
        v = split_heads(self.v_proj(value), self.heads)  # (B, h, Nk, hd)
        nq, nk = q.size(-2), k.size(-2)
        if ctx.key_padding_mask is not None:  # a zero feature vector adds nothing to the sums
            k = k * ctx.key_padding_mask[:, None, :, None].to(k.dtype)
        if need_weights:
            mask = dense_mask(ctx, nq, nk, q.device)
            a = q @ k.transpose(-2, -1)  # (B, h, Nq, Nk), >= 0
            if mask is not None:
                a = a.masked_fill(~mask, 0.0)
            # the sum comes out in float32 under CUDA autocast: weights in v's dtype
            weights = (a / a.sum(-1, keepdim=True).clamp_min(EPS)).to(v.dtype)
            return self.out(merge_heads(weights @ v)), weights
        if ctx.causal:
            y = self._causal(q, k, v)
        else:
            kv = k.transpose(-2, -1) @ v  # (B, h, hd, hd)
            z = k.sum(-2)  # (B, h, hd)
            y = (q @ kv) / (q @ z.unsqueeze(-1)).clamp_min(EPS)
        # CUDA autocast sums and cumsums in float32: back to the values' dtype
        return self.out(merge_heads(y.to(v.dtype))), None

    @staticmethod
    def _causal(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Query i sees keys <= i + (Nk - Nq) (the last Nq positions when decoding)."""
        nq, nk = q.size(-2), k.size(-2)
        kv = torch.cumsum(k.unsqueeze(-1) * v.unsqueeze(-2), dim=-3)  # (B, h, Nk, hd, hd)
        z = torch.cumsum(k, dim=-2)  # (B, h, Nk, hd)
        idx = torch.arange(nq, device=q.device) + (nk - nq)  # the last key each query sees
        seen = (idx >= 0).to(q.dtype)[:, None]  # (Nq, 1); a query before every key sees none
        idx = idx.clamp(0, nk - 1)
        kv, z = kv[:, :, idx], z[:, :, idx]  # (B, h, Nq, hd, hd), (B, h, Nq, hd)
        num = (q.unsqueeze(-2) @ kv).squeeze(-2)  # (B, h, Nq, hd)
        den = (q * z).sum(-1, keepdim=True)  # (B, h, Nq, 1)
        return num * seen / den.clamp_min(EPS)
