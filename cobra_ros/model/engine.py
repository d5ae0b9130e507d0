"""The state engine: encode a frame once, then ask it many questions.

Mamba's recurrent state after the image prefix (the image tokens, after a BOS for models trained
so) is a few MB whatever the prompt length. `encode` computes it once (vision + projector +
prefill); `ask` and `yes_no` fork it and pay only for their own tokens. Prompts are truncated at
the model's llm_max_length, and `yes_no` scores as the release's evaluation does (`scoring.py`).
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cobra_ros.model.checkpoint import load_model_dir
from cobra_ros.model.grounding import GroundingError, box_pixels, grounding_prompt, parse_box
from cobra_ros.model.cobra import Cobra
from cobra_ros.model.mamba import MambaState, StaticDecoder, StaticPrefill
from cobra_ros.model.scoring import get_scoring
from cobra_ros.model.tokenizer import DESCRIBE_PROMPT, ChatTokenizer
from cobra_ros.model.vision import as_rgb_array

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TokenCallback = Callable[[str, int], None]  # (new text piece, tokens so far)


def resolve_dtype(dtype, device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class FrameState:
    """The LM state after the image prefix for one frame; never modified by questions."""

    state: MambaState
    num_prefix_tokens: int
    encode_ms: float
    image_shape: tuple = ()

    @property
    def nbytes(self) -> int:
        return self.state.nbytes


@dataclass
class Answer:
    text: str
    token_ids: list[int] = field(default_factory=list)
    encode_ms: float = 0.0  # set when this call also encoded the frame (describe)
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    finish_reason: str = "eos"  # "eos" | "length" | "cancelled"

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        return 1000.0 * self.num_tokens / self.decode_ms if self.decode_ms > 0 else 0.0


@dataclass
class Located:
    """A referring expression's box: normalised [x1, y1, x2, y2] and in pixels of the frame."""

    box: tuple  # normalised by image width / height
    box_pixels: tuple  # (u1, v1, u2, v2), max one past the last pixel
    score: float  # mean probability of the answer's tokens (greedy)
    text: str  # what the model said
    ms: float = 0.0


LOCATE_TOKENS = 40  # "[0.12, 0.34, 0.56, 0.78]" is 17-25 tokens in the release's tokenizers


def _ms_since(t0: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000.0


class _Stream:
    """Incremental detokenisation: emits only text that is complete (no half UTF-8 characters)."""

    def __init__(self, tokenizer: ChatTokenizer, on_token: TokenCallback | None):
        self.tokenizer, self.on_token, self.ids, self.text = tokenizer, on_token, [], ""

    def push(self, token_id: int) -> None:
        self.ids.append(token_id)
        self._emit(final=False)

    def flush(self) -> None:
        """At the end of generation whatever is left is emitted, complete or not."""
        self._emit(final=True)

    def _emit(self, final: bool) -> None:
        if self.on_token is None or not self.ids:
            return
        text = self.tokenizer.decode(self.ids)
        if len(text) > len(self.text) and (final or not text.endswith("\ufffd")):
            piece, self.text = text[len(self.text):], text
            self.on_token(piece, len(self.ids))


class _StaticPool:
    """Static decoders or prefills kept between calls, by shape, each used by one caller at a time.

    On CUDA each one captures its CUDA graph on first use, so only a few shapes are kept: the
    `keep` ones. Other shapes (rare) get a fresh object that runs eagerly and is dropped."""

    def __init__(self, make: Callable, keep: Callable[[tuple], bool]):
        self.make, self.keep, self.free, self.lock = make, keep, {}, threading.Lock()

    @contextlib.contextmanager
    def borrow(self, *shape):
        keep = self.keep(shape)
        with self.lock:
            item = self.free[shape].pop() if self.free.get(shape) else None
        if item is None:
            item = self.make(*shape, graph=None if keep else False)
        try:
            yield item
        finally:
            if keep:
                with self.lock:
                    self.free.setdefault(shape, []).append(item)


GRAPH_MAX_BATCH = 8  # decoders of 1 to 8 sequences are captured (one graph each)
PREFILL_BUCKET, PREFILL_GRAPH_MAX = 32, 64  # single-question prefills: padded to 32 or 64 tokens


class CobraEngine:
    def __init__(self, model: Cobra, tokenizer: ChatTokenizer, name: str = ""):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.name = name or model.cfg.model_id
        lm = self.model.llm
        self._decoders = _StaticPool(functools.partial(StaticDecoder, lm),
                                     lambda shape: shape[0] <= GRAPH_MAX_BATCH)
        self._prefills = _StaticPool(functools.partial(StaticPrefill, lm), lambda shape: True)
        # one question on a kept frame (yes/no) is launch-bound on a GPU: its prefill is captured
        self.prefill_graphs = self.device.type == "cuda"

    @classmethod
    def load(cls, path: str | Path, device="cpu", dtype=None) -> "CobraEngine":
        device = torch.device(device)
        model, tokenizer = load_model_dir(path, device=device, dtype=resolve_dtype(dtype, device))
        return cls(model, tokenizer, name=Path(path).name)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- frames -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_batch(self, images: Sequence) -> list[FrameState]:
        """Vision + projector + prefill of the image prefix, for frames of one size; one FrameState
        each."""
        arrays = [as_rgb_array(im) for im in images]
        if len({a.shape for a in arrays}) != 1:
            return [fs for a in arrays for fs in self.encode_batch([a])]
        t0 = time.perf_counter()
        # resampled on the CPU as PIL images (vision.py)
        pixels = torch.from_numpy(np.stack(arrays))
        prefix = self.model.prefix_embeds(self.model.image_tokens(pixels), self.tokenizer.bos_id)
        _, state = self.model.llm(prefix, last_only=True)
        ms = _ms_since(t0, self.device) / len(arrays)
        return [FrameState(state.select(slice(i, i + 1)).clone(), prefix.shape[1], ms,
                           arrays[i].shape) for i in range(len(arrays))]

    def encode(self, image) -> FrameState:
        return self.encode_batch([image])[0]

    # -- questions --------------------------------------------------------------------------------
    @torch.inference_mode()
    def _prefill_batch(self, frames: Sequence[FrameState], questions: Sequence[str]):
        """Prefill every question on its frame's state as one right-padded batch.

        Left padding would run pad tokens through the recurrence before the question and change
        its state; right padding with `lengths` stops each row at its own last token (see
        `Mixer.forward`). Returns float32 next-token logits (n, vocab) and the state (batch n)
        after each question."""
        max_length = self.model.cfg.llm_max_length
        prompts = [self.tokenizer.prompt_ids(q, max_length) for q in questions]
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        ids = torch.full((len(prompts), int(lengths.max())), self.tokenizer.eos_id,
                         device=self.device)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.tensor(p, device=self.device)
        state = MambaState.cat([f.state for f in frames])
        if self.prefill_graphs and len(prompts) == 1 and ids.shape[1] <= PREFILL_GRAPH_MAX:
            bucket = -(-ids.shape[1] // PREFILL_BUCKET) * PREFILL_BUCKET
            with self._prefills.borrow(1, bucket) as prefill:
                logits, after = prefill.run(ids, lengths, state)
                return logits.clone(), after.clone()
        logits, state = self.model.llm(self.model.llm.embed(ids), state, lengths=lengths)
        return logits[:, -1].float(), state

    @torch.inference_mode()
    def yes_no_batch(self, frames: Sequence[FrameState], questions: Sequence[str],
                     scoring: str = "plain", max_batch: int = 32) -> list[float]:
        """P(yes) per (frame, question), from the next-token distribution renormalised over the two
        answer words of `scoring` ("plain" and "pope": Yes/No; "vsr": True/False, P(True)).

        Up to `max_batch` questions are prefilled together as one padded batch (they may share one
        FrameState: the worker coalesces questions waiting on the same frame)."""
        if len(frames) != len(questions):
            raise ValueError(f"{len(frames)} frames but {len(questions)} questions")
        rule = get_scoring(scoring)
        positive, negative = self.tokenizer.answer_pair(rule.answers)
        texts = [rule.prompt(q) for q in questions]
        probs = []
        for start in range(0, len(questions), max_batch):
            chunk = slice(start, start + max_batch)
            logits, _ = self._prefill_batch(frames[chunk], texts[chunk])
            pair = torch.softmax(logits, -1)[:, [positive, negative]]
            probs.extend((pair[:, 0] / pair.sum(-1)).tolist())
        return probs

    def yes_no(self, frame: FrameState, question: str, scoring: str = "plain") -> float:
        return self.yes_no_batch([frame], [question], scoring=scoring)[0]

    @torch.inference_mode()
    def ask_batch(self, frames: Sequence[FrameState], questions: Sequence[str],
                  max_new_tokens: int = 64, on_token: Sequence[TokenCallback | None] | None = None,
                  cancel: Callable[[], bool] | None = None, temperature: float = 0.0,
                  seed: int | None = None, stop_at_eos: bool = True) -> list[Answer]:
        """Answer each question about its frame, decoding all of them together (one padded
        prefill, then one static batch decoder), greedy unless temperature > 0.

        `stop_at_eos=False` always generates max_new_tokens (benchmarks)."""
        n = len(frames)
        if len(questions) != n:
            raise ValueError(f"{n} frames but {len(questions)} questions")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        callbacks = list(on_token) if on_token is not None else [None] * n
        t0 = time.perf_counter()
        logits, state = self._prefill_batch(frames, questions)
        with self._decoders.borrow(n) as decoder:
            decoder.load(state)
            prefill_ms = _ms_since(t0, self.device)
            generator = None
            if seed is not None:
                generator = torch.Generator(self.device).manual_seed(seed)
            streams = [_Stream(self.tokenizer, cb) for cb in callbacks]
            finish = [None] * n
            t1 = time.perf_counter()
            for step in range(max_new_tokens):
                if cancel is not None and cancel():
                    finish = [f or "cancelled" for f in finish]
                    break
                tokens = self._pick(logits, temperature, generator)
                for i, token in enumerate(tokens.tolist()):
                    if finish[i] is None:
                        if token == self.tokenizer.eos_id and stop_at_eos:
                            finish[i] = "eos"
                        else:
                            streams[i].push(token)
                if all(finish) or step == max_new_tokens - 1:
                    break
                logits = decoder.step(tokens)
            decode_ms = _ms_since(t1, self.device)
        for stream in streams:
            stream.flush()
        return [Answer(self.tokenizer.decode(s.ids).strip(), s.ids, 0.0, prefill_ms / n, decode_ms,
                       f or "length") for s, f in zip(streams, finish)]

    @staticmethod
    def _pick(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
        if temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / temperature, -1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    def ask(self, frame: FrameState, question: str, max_new_tokens: int = 64,
            on_token: TokenCallback | None = None, cancel: Callable[[], bool] | None = None,
            **sampling) -> Answer:
        return self.ask_batch([frame], [question], max_new_tokens, [on_token], cancel,
                              **sampling)[0]

    def describe(self, image, prompt: str = DESCRIBE_PROMPT, max_new_tokens: int = 256,
                 **kwargs) -> Answer:
        """The paper's path end to end: encode the frame, then answer the describe prompt."""
        frame = self.encode(image)
        answer = self.ask(frame, prompt, max_new_tokens, **kwargs)
        answer.encode_ms = frame.encode_ms
        return answer

    def locate(self, frame: FrameState, expression: str, image_size=None,
               max_new_tokens: int = LOCATE_TOKENS) -> Located:
        """The box of what `expression` names, asked with the release's grounding prompt and
        decoded greedily; `image_size` (width, height) for the pixel box, by default the frame's.

        Raises GroundingError (model/grounding.py) when the answer is not a well-formed box."""
        found = self.locate_batch([frame], [expression], image_size, max_new_tokens)[0]
        if isinstance(found, GroundingError):
            raise found
        return found

    @torch.inference_mode()
    def locate_batch(self, frames: Sequence[FrameState], expressions: Sequence[str],
                     image_size=None, max_new_tokens: int = LOCATE_TOKENS) -> list:
        """`locate` of each expression on its frame, decoded together (one ask_batch); a Located,
        or the GroundingError saying why not, per expression."""
        if not expressions:
            return []
        t0 = time.perf_counter()
        prompts = [grounding_prompt(e) for e in expressions]
        answers = self.ask_batch(frames, prompts, max_new_tokens)
        ms = _ms_since(t0, self.device) / max(1, len(prompts))
        out = []
        for frame, prompt, answer in zip(frames, prompts, answers):
            try:
                box = parse_box(answer.text)
            except GroundingError as err:
                out.append(err)
                continue
            if image_size is None:
                height, width = frame.image_shape[:2]
            else:
                width, height = image_size
            score = self.answer_probability(frame, prompt, answer.token_ids)
            out.append(Located(box, box_pixels(box, width, height), score, answer.text, ms))
        return out

    @torch.inference_mode()
    def answer_probability(self, frame: FrameState, question: str, answer_ids) -> float:
        """Mean probability the model gives each token of an answer, in one teacher-forced pass
        over the question and the answer on the kept frame state."""
        if not answer_ids:
            return 0.0
        prompt = self.tokenizer.prompt_ids(question, self.model.cfg.llm_max_length)
        ids = torch.tensor([prompt + list(answer_ids)], device=self.device)
        logits, _ = self.model.llm(self.model.llm.embed(ids), frame.state)
        n = len(answer_ids)
        probs = torch.softmax(logits[0, -n - 1:-1].float(), -1)
        picked = probs[torch.arange(n), torch.tensor(list(answer_ids), device=self.device)]
        return float(picked.mean())
