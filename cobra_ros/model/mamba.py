"""Mamba-1 language model in plain PyTorch, with an explicit constant-size recurrent state.

Two ways through a layer, which agree numerically:
  * prefill: a selective scan over a whole (optionally right-padded) batch of sequences,
    continuing a state or not; chunked-parallel or a loop, whichever is faster on the device
    (`prefill_scan`), or on CUDA mamba_ssm's kernel (`from_state` lets it continue a state);
  * step: the single-token recurrence used for decoding, in place on the state, so that
    `StaticDecoder` can capture a whole step as one CUDA graph.
Module and parameter names follow the release (`backbone.layers.N.mixer.in_proj.weight`, ...), so
the checkpoint's `llm_backbone` state dict loads under the `llm.` prefix. On CUDA with `mamba_ssm`
installed the scan and the step use its kernels (see `kernels.py`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cobra_ros.model import kernels
from cobra_ros.model.addnorm import add_rms_norm, rms_norm_ref
from cobra_ros.model.config import MambaConfig


@dataclass
class MambaState:
    """The whole recurrent state of the LM for a batch: fixed size whatever the sequence length."""

    conv: torch.Tensor  # (n_layer, batch, d_inner, d_conv): the last d_conv inputs of each conv
    ssm: torch.Tensor  # (n_layer, batch, d_inner, d_state), float32

    @classmethod
    def zeros(cls, cfg: MambaConfig, batch: int, device=None, dtype=torch.float32) -> "MambaState":
        shape = (cfg.n_layer, batch, cfg.d_inner)
        return cls(torch.zeros(*shape, cfg.d_conv, device=device, dtype=dtype),
                   torch.zeros(*shape, cfg.d_state, device=device, dtype=torch.float32))

    def clone(self) -> "MambaState":
        return MambaState(self.conv.clone(), self.ssm.clone())

    def copy_(self, other: "MambaState") -> "MambaState":
        """Overwrite these tensors in place (their memory stays where a CUDA graph reads it)."""
        self.conv.copy_(other.conv)
        self.ssm.copy_(other.ssm)
        return self

    def select(self, index) -> "MambaState":
        return MambaState(self.conv[:, index], self.ssm[:, index])

    @staticmethod
    def cat(states: list["MambaState"]) -> "MambaState":
        return MambaState(torch.cat([s.conv for s in states], 1),
                          torch.cat([s.ssm for s in states], 1))

    @property
    def batch(self) -> int:
        return self.conv.shape[1]

    @property
    def nbytes(self) -> int:
        return self.conv.nbytes + self.ssm.nbytes


def selective_scan(x, delta, A, B, C, D, h0=None, chunk: int = 16, max_decay: float = 60.0):
    """Reference selective scan in float32, parallel within chunks of up to `chunk` steps.

    x, delta: (b, L, d); A: (d, n); B, C: (b, L, n); D: (d,); h0: (b, d, n) or None.
    Returns y (b, L, d) and the final state (b, d, n). With a_t the running sum of delta*A inside a
    chunk, h_t = exp(a_t) * (h_prev + sum_{s<=t} exp(-a_s) delta_s B_s x_s): two cumsums instead of
    a loop. A chunk whose total decay would overflow exp(-a) is halved until it fits (down to one
    exact step).
    """
    b, L, d = x.shape
    h = x.new_zeros(b, d, A.shape[1], dtype=torch.float32) if h0 is None else h0.float()
    x, delta, B, C = x.float(), delta.float(), B.float(), C.float()
    dx = delta * x
    ys, start = [], 0
    while start < L:  # (b, T, d, n) tensors are made per chunk: memory does not grow with L
        T = min(chunk, L - start)
        a = torch.cumsum(delta[:, start:start + T, :, None] * A, dim=1)  # all <= 0
        while T > 1 and -a[:, T - 1].min() > max_decay:
            T //= 2
            a = a[:, :T]
        xB = dx[:, start:start + T, :, None] * B[:, start:start + T, None]
        if T == 1:  # one step whose decay alone would overflow exp(-a): the recurrence as written
            hs = torch.exp(a) * h[:, None] + xB
        else:
            hs = torch.exp(a) * (h[:, None] + torch.cumsum(torch.exp(-a) * xB, dim=1))
        ys.append((hs * C[:, start:start + T, None]).sum(-1))
        h = hs[:, -1]
        start += T
    return torch.cat(ys, dim=1) + x * D, h


def recurrent_scan(x, delta, A, B, C, D, h0=None):
    """The same scan, one step at a time, never materialising (b, L, d, n).

    Autograd through the chunked form moves ~3x more memory than through this loop, whose per-step
    tensors stay in cache; see `prefill_scan` for when each is used.
    """
    h = h0.float() if h0 is not None else x.new_zeros(x.shape[0], x.shape[2], A.shape[1],
                                                      dtype=torch.float32)
    x, delta, B, C = x.float(), delta.float(), B.float(), C.float()
    dx = delta * x
    ys = []
    for t in range(x.shape[1]):
        h = h * torch.exp(delta[:, t, :, None] * A) + dx[:, t, :, None] * B[:, t, None, :]
        ys.append((h @ C[:, t, :, None]).squeeze(-1))
    return torch.stack(ys, dim=1) + x * D, h


def from_state(h0, delta, A, C, block: int = 256):
    """What a starting state h0 (b, d, n) adds to a scan that started from zero.

    The recurrence is linear in h, so the scan from h0 is the scan from zero plus h0 decayed:
    y_t += C_t . (exp(sum_{s<=t} delta_s A) h0), and the final state gains exp(sum delta A) h0.
    Lets a kernel that always starts from zero (mamba_ssm's selective scan) continue a kept frame
    state. Blocks of `block` tokens keep memory flat in the sequence length. Returns (y_add
    (b, L, d), h_add (b, d, n)), float32."""
    h0, delta, C = h0.float(), delta.float(), C.float()
    total = torch.zeros_like(h0)  # running sum of delta * A, (b, d, n)
    ys = []
    for start in range(0, delta.shape[1], block):
        a = total[:, None] + torch.cumsum(delta[:, start:start + block, :, None] * A, dim=1)
        ys.append(((torch.exp(a) * h0[:, None]) * C[:, start:start + block, None]).sum(-1))
        total = a[:, -1]
    return torch.cat(ys, dim=1), torch.exp(total) * h0


def prefill_scan(x: torch.Tensor):
    """The reference scan a prefill uses, by device, as `cobra-bench` measures it.

    Training needs the loop (autograd through the chunked form moves ~3x the memory). In inference
    the loop also wins on CPU (at the `small` preset, 750 tokens, 2 threads, the chunked form is
    slower per layer: see docs/PERFORMANCE.md), while on a GPU one chunked launch per 16 tokens
    beats a launch per token. On CUDA with mamba_ssm its kernel is used instead (`kernels.scan`).
    """
    if torch.is_grad_enabled() or x.device.type == "cpu":
        return recurrent_scan
    return selective_scan


def _valid(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(b, L) float mask: 1 where t < the row's length."""
    return (torch.arange(L, device=lengths.device) < lengths[:, None]).float()


def _window_at(xt: torch.Tensor, lengths: torch.Tensor, d_conv: int) -> torch.Tensor:
    """The last d_conv conv inputs of each row at its own length (xt: the window-padded inputs)."""
    idx = lengths[:, None] - 1 + torch.arange(d_conv, device=xt.device)
    return xt.gather(-1, idx[:, None, :].expand(-1, xt.shape[1], -1))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm_ref(x, self.weight, self.eps)


class Mixer(nn.Module):
    """The Mamba (S6) mixer: in_proj -> causal depthwise conv -> selective scan, gated ->
    out_proj."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        d, di, n, r = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank
        self.d_conv = cfg.d_conv
        self.in_proj = nn.Linear(d, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, n))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d, bias=False)
        self.dims = (r, n)

    def _ssm_inputs(self, x):
        r, n = self.dims
        dt, B, C = torch.split(self.x_proj(x), [r, n, n], dim=-1)
        return dt, B, C

    def forward(self, h, conv_state=None, ssm_state=None, lengths=None):
        """h: (b, L, d_model); states None for a fresh sequence. Returns output and the new conv
        and ssm states; the given states are not modified.

        `lengths` (b,) makes a right-padded batch exact: past a row's length its delta is zero,
        so its SSM state stops there (exp(0) = 1, nothing added), and its conv window is the one
        ending there.
        """
        x, z = self.in_proj(h).chunk(2, dim=-1)
        x = x.transpose(1, 2)
        if conv_state is None:
            past = x.new_zeros(*x.shape[:2], self.d_conv - 1)
        else:
            past = conv_state[..., 1:].to(x.dtype)
        xt = torch.cat([past, x], dim=-1)  # (b, di, d_conv - 1 + L)
        if lengths is None:
            new_conv = xt[..., -self.d_conv:]
        else:
            new_conv = _window_at(xt, lengths, self.d_conv)
        x = F.conv1d(xt, self.conv1d.weight, self.conv1d.bias, groups=xt.shape[1])
        x = F.silu(x).transpose(1, 2)
        dt, B, C = self._ssm_inputs(x)
        A = -torch.exp(self.A_log.float())
        mask = None if lengths is None else _valid(lengths, x.shape[1])
        if kernels.available(x):
            y, new_ssm = kernels.scan(x, dt, self.dt_proj, A, B, C, self.D, z, mask, ssm_state)
        else:
            delta = F.softplus(self.dt_proj(dt).float())
            if mask is not None:
                delta = delta * mask[..., None]
            y, new_ssm = prefill_scan(x)(x, delta, A, B, C, self.D.float(), ssm_state)
            y = y.to(x.dtype) * F.silu(z)
        return self.out_proj(y.to(h.dtype)), new_conv, new_ssm

    def conv_step(self, x, conv_state):
        """Push one input into the depthwise conv window (in place); returns silu(conv)."""
        if kernels.available(x) and kernels.has_conv_update():
            return kernels.conv_step(x, conv_state, self.conv1d)
        conv_state.copy_(torch.roll(conv_state, -1, dims=-1))
        conv_state[..., -1] = x
        return F.silu((conv_state * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)

    def step(self, h, conv_state, ssm_state):
        """One token, h: (b, d_model). Updates the two states in place (they belong to the caller)
        and allocates nothing that outlives the call, so a CUDA graph can capture it."""
        x, z = self.in_proj(h).chunk(2, dim=-1)
        x = self.conv_step(x, conv_state)
        if kernels.available(x):
            return self.out_proj(kernels.step(x, z, self, ssm_state))
        dt, B, C = self._ssm_inputs(x)
        delta = F.softplus(self.dt_proj(dt).float())
        A = -torch.exp(self.A_log.float())
        ssm_state.mul_(torch.exp(delta[..., None] * A))
        ssm_state.add_((delta * x.float())[..., None] * B.float()[:, None])
        y = (ssm_state @ C.float()[..., None]).squeeze(-1) + self.D.float() * x.float()
        return self.out_proj((y.to(x.dtype) * F.silu(z)))


class Block(nn.Module):
    """Add -> RMSNorm -> Mixer, carrying the residual stream (in fp32, as the release runs it: the
    norm is computed on the float32 sum, see `addnorm.py`)."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.mixer = Mixer(cfg)
        self.norm = RMSNorm(cfg.d_model, cfg.norm_epsilon)
        self.residual_in_fp32 = cfg.residual_in_fp32

    def _add_norm(self, h, residual):
        return add_rms_norm(h, residual, self.norm, self.residual_in_fp32)


class Backbone(nn.Module):
    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_epsilon)


class MambaLM(nn.Module):
    """Backbone + tied LM head. `forward` prefills embeddings, `step` decodes one token."""

    def __init__(self, cfg: MambaConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        self.lm_head.weight = self.backbone.embedding.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.embedding(ids)

    def _final(self, h, residual):
        return add_rms_norm(h, residual, self.backbone.norm_f, self.cfg.residual_in_fp32, False)

    def forward(self, embeds: torch.Tensor, state: MambaState | None = None,
                last_only: bool = False, lengths: torch.Tensor | None = None):
        """embeds: (b, L, d_model). Returns logits (b, L or 1, vocab) and the state after it.

        `state` is read, never written: pass the same FrameState state to many prompts. `lengths`
        (b,) reads a right-padded batch: each row's logits (b, 1, vocab) and state are at its own
        length.
        """
        convs, ssms = [], []
        h, residual = embeds, None
        for i, layer in enumerate(self.backbone.layers):
            normed, residual = layer._add_norm(h, residual)
            past = (None, None) if state is None else (state.conv[i], state.ssm[i])
            h, conv, ssm = layer.mixer(normed, *past, lengths=lengths)
            convs.append(conv)
            ssms.append(ssm)
        if lengths is not None:
            rows = torch.arange(h.shape[0], device=h.device)
            h, residual = h[rows, lengths - 1, None], residual[rows, lengths - 1, None]
        elif last_only:
            h, residual = h[:, -1:], residual[:, -1:]
        logits = self.lm_head(self._final(h, residual))
        return logits, MambaState(torch.stack(convs), torch.stack(ssms))

    def step(self, ids: torch.Tensor, state: MambaState) -> torch.Tensor:
        """ids: (b,) next tokens. Advances `state` in place and returns logits (b, vocab)."""
        h, residual = self.embed(ids), None
        for i, layer in enumerate(self.backbone.layers):
            normed, residual = layer._add_norm(h, residual)
            h = layer.mixer.step(normed, state.conv[i], state.ssm[i])
        return self.lm_head(self._final(h, residual))


class StaticDecoder:
    """Decoding a batch of `batch` sequences on buffers allocated once.

    Token ids go into `ids`, logits come out in `logits`, and the state in `state` is advanced in
    place, so every step reads and writes the same memory. On CUDA the whole n_layer step is
    therefore captured once as a CUDA graph and replayed (one launch per token instead of ~15 per
    layer, the launch gaps that dominate batch-1 decoding); elsewhere the same step runs eagerly
    and gives exactly what `MambaLM.step` gives. Not thread-safe: one decoder per caller.
    """

    def __init__(self, lm: MambaLM, batch: int, graph: bool | None = None):
        weight = lm.backbone.embedding.weight
        self.lm = lm
        self.state = MambaState.zeros(lm.cfg, batch, weight.device, weight.dtype)
        self.ids = torch.zeros(batch, dtype=torch.long, device=weight.device)
        self.logits = torch.zeros(batch, lm.cfg.padded_vocab_size, device=weight.device)
        self.use_graph = weight.is_cuda if graph is None else graph
        self.graph_error: str | None = None  # why capture failed, if it did (then it runs eagerly)
        self._graph = None

    @property
    def batch(self) -> int:
        return self.ids.shape[0]

    def load(self, state: MambaState) -> None:
        """Start from `state` (copied: the caller's state is not touched by later steps)."""
        self.state.copy_(state)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed ids (batch,); returns the logits buffer (float32, overwritten by the next step)."""
        self.ids.copy_(ids)
        if self.use_graph and self._graph is None:
            self._capture()
        if self._graph is not None:
            self._graph.replay()
        else:
            self._forward()
        return self.logits

    def _forward(self) -> None:
        self.logits.copy_(self.lm.step(self.ids, self.state))

    def _capture(self) -> None:
        saved = self.state.clone()  # the warm-ups advance the state; it is put back
        self._graph, self.graph_error = capture_graph(self._forward)
        self.use_graph = self._graph is not None
        self.state.copy_(saved)


class StaticPrefill:
    """One right-padded prefill shape, (batch, length), on buffers allocated once.

    Prompt ids, their lengths and the starting states go in; next-token logits and the state
    after each prompt come out. On CUDA the whole prefill is captured as one CUDA graph: a yes/no
    question on a kept frame is otherwise ~30 kernel launches per layer for a few dozen tokens.
    Shorter prompts are right-padded to `length`, which `lengths` makes exact. Not thread-safe.
    """

    def __init__(self, lm: MambaLM, batch: int, length: int, graph: bool | None = None):
        weight = lm.backbone.embedding.weight
        self.lm = lm
        self.start = MambaState.zeros(lm.cfg, batch, weight.device, weight.dtype)
        self.after = MambaState.zeros(lm.cfg, batch, weight.device, weight.dtype)
        self.ids = torch.zeros(batch, length, dtype=torch.long, device=weight.device)
        self.lengths = torch.full((batch,), length, dtype=torch.long, device=weight.device)
        self.logits = torch.zeros(batch, lm.cfg.padded_vocab_size, device=weight.device)
        self.use_graph = weight.is_cuda if graph is None else graph
        self.graph_error: str | None = None
        self._graph = None

    def run(self, ids: torch.Tensor, lengths: torch.Tensor, state: MambaState):
        """ids (batch, <= length), right-padded; lengths (batch,); state: batch starting states.
        Returns the logits (batch, vocab) and state buffers, overwritten by the next run."""
        self.ids.zero_()
        self.ids[:, :ids.shape[1]].copy_(ids)
        self.lengths.copy_(lengths)
        self.start.copy_(state)
        if self.use_graph and self._graph is None:
            self._graph, self.graph_error = capture_graph(self._forward)
            self.use_graph = self._graph is not None
        if self._graph is not None:
            self._graph.replay()
        else:
            self._forward()
        return self.logits, self.after

    def _forward(self) -> None:
        logits, after = self.lm(self.lm.embed(self.ids), self.start, lengths=self.lengths)
        self.logits.copy_(logits[:, -1])
        self.after.copy_(after)


def capture_graph(fn):
    """Warm `fn` up on a side stream (Triton compiles and tunes its kernels there), then record it
    as a CUDA graph. Returns (graph, None), or (None, the reason) when something in it cannot be
    captured: the caller then runs `fn` eagerly (same results, slower)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except RuntimeError as e:
        reason = f"{type(e).__name__}: {e}"
        warnings.warn(f"running without a CUDA graph: {reason}", stacklevel=3)
        return None, reason
    return graph, None


def _log_uniform(n: int, low: float, high: float, generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, dtype=torch.float32)  # whatever the model's dtype
    return torch.exp(u * (math.log(high) - math.log(low)) + math.log(low))


def _set_dt(mixer: Mixer, dt: torch.Tensor) -> None:
    # inverse softplus: softplus(bias) == dt
    mixer.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))


@torch.no_grad()
def init_weights(model: MambaLM, generator: torch.Generator | None = None) -> None:
    """Mamba's initialisation: S4D-real A, log-uniform dt in [1e-3, 1e-1], scaled residual
    projections."""
    cfg = model.cfg
    nn.init.normal_(model.backbone.embedding.weight, std=0.02, generator=generator)
    for layer in model.backbone.layers:
        m = layer.mixer
        for lin in (m.in_proj, m.x_proj):
            nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=generator)
        nn.init.kaiming_uniform_(m.conv1d.weight, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(cfg.d_conv)
        nn.init.uniform_(m.conv1d.bias, -bound, bound, generator=generator)
        bound = cfg.dt_rank ** -0.5
        nn.init.uniform_(m.dt_proj.weight, -bound, bound, generator=generator)
        _set_dt(m, _log_uniform(cfg.d_inner, 1e-3, 1e-1, generator).clamp(min=1e-4))
        s4d_real = torch.arange(1, cfg.d_state + 1, dtype=torch.float32)
        m.A_log.copy_(torch.log(s4d_real).repeat(cfg.d_inner, 1))
        m.D.fill_(1.0)
        nn.init.kaiming_uniform_(m.out_proj.weight, a=math.sqrt(5), generator=generator)
        m.out_proj.weight /= math.sqrt(cfg.n_layer)
        layer.norm.weight.fill_(1.0)
    model.backbone.norm_f.weight.fill_(1.0)


@torch.no_grad()
def long_memory_init(model: MambaLM, generator: torch.Generator | None = None) -> None:
    """Re-draw every mixer's dt and A for long memory: dt log-uniform in [0.2, 1], -A uniform in
    [0.001, 0.101).

    The release's init suits fine-tuning a pretrained LM. From scratch, with the answer 10-80
    tokens after the image, it passes the answer's gradient back to the image tokens ~1e-4 as
    strongly as to the question, and a small model stays at chance on image questions for hundreds
    of steps; with this init it is ~1e-2 and image-grounded answers start to be learnt within a few
    hundred steps.
    """
    for layer in model.backbone.layers:
        m = layer.mixer
        d_inner, d_state = m.A_log.shape
        _set_dt(m, _log_uniform(d_inner, 0.2, 1.0, generator))
        m.A_log.copy_(torch.log(torch.rand(d_inner, d_state, generator=generator) * 0.1 + 1e-3))
