"""Tokenizer and the Zephyr chat prompt, built from token ids.

The release formats a turn as "<|user|>\\n{question}<|endoftext|>\\n<|assistant|>\\n" and tokenizes
the string. We tokenize the fixed parts and the user's text separately, with special tokens in user
text encoded as plain text: the same ids for ordinary questions, but a question can never contain
the real end-of-text id, so it cannot close its own turn or open an assistant turn.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS_TEXT, PAD_TEXT = "<|endoftext|>", "<|padding|>"
USER_PREFIX, ASSISTANT_PREFIX = "<|user|>\n", "\n<|assistant|>\n"
DESCRIBE_PROMPT = "Describe the image specifically."


class TokenizerError(ValueError):
    pass


class ChatTokenizer:
    """A Hugging Face tokenizer plus the ids Cobra needs: EOS/BOS, the chat template, Yes/No."""

    def __init__(self, hf_tokenizer, source: str = "tokenizer"):
        self.hf = hf_tokenizer
        if hf_tokenizer.eos_token_id is None:
            raise TokenizerError(f"{source}: tokenizer has no eos token (expected {EOS_TEXT!r})")
        self.eos_id = hf_tokenizer.eos_token_id
        self.bos_id = (
            hf_tokenizer.bos_token_id if hf_tokenizer.bos_token_id is not None else self.eos_id
        )
        self.user_ids = self.plain(USER_PREFIX)
        self.assistant_ids = [self.eos_id] + self.plain(ASSISTANT_PREFIX)
        self.source = source
        self.yes_id, self.no_id = self.answer_pair(("Yes", "No"))

    @classmethod
    def load(cls, directory: str | Path) -> "ChatTokenizer":
        from transformers import AutoTokenizer

        directory = Path(directory)
        if not (directory / "tokenizer.json").is_file():
            raise TokenizerError(
                f"{directory}/tokenizer.json: missing "
                "(expected a Hugging Face tokenizer directory)"
            )
        return cls(
            AutoTokenizer.from_pretrained(str(directory), local_files_only=True), str(directory)
        )

    def answer_pair(self, words: tuple[str, str]) -> tuple[int, int]:
        """The ids of two answer words (Yes/No, True/False); each must be one token, as the release
        checks for its scoring."""
        ids = [self.plain(word) for word in words]
        for word, word_ids in zip(words, ids):
            if len(word_ids) != 1:
                raise TokenizerError(
                    f"{self.source}: {word!r} is not a single token ({word_ids}); "
                    "yes/no scoring needs it"
                )
        return ids[0][0], ids[1][0]

    def __len__(self) -> int:
        return len(self.hf)

    def plain(self, text: str) -> list[int]:
        """Token ids of `text` as literal text: special-token strings in it get no special ids."""
        return self.hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def prompt_ids(self, question: str, max_length: int | None = None) -> list[int]:
        """One Zephyr user turn, ending where the assistant's answer starts.

        `max_length` truncates as the release's `tokenizer(prompt, truncation=True)` does at
        llm_max_length: the first max_length ids are kept (an overlong prompt loses its end)."""
        ids = (
            self.user_ids
            + self.plain(question.replace("<image>", "").strip())
            + self.assistant_ids
        )
        return ids if max_length is None else ids[:max_length]

    def answer_ids(self, answer: str) -> list[int]:
        """Training target of an assistant turn: the answer, then end-of-text (as the release)."""
        return self.plain(answer if answer != "" else " ") + [self.eos_id]

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)


BASE_CORPUS = [
    DESCRIBE_PROMPT,
    "Yes",
    "No",
    "Yes.",
    "No.",
    "True",
    "False",
    "What is in the image?",
    "Is there a red block?",
    "Is the blue cube left of the green star?",
    "There is a robot arm pushing coloured blocks on a board.",
    USER_PREFIX,
    ASSISTANT_PREFIX,
]


def build_tokenizer(
    texts: list[str], vocab_size: int, out_dir: str | Path, pad_to_exact: bool = False
) -> Path:
    """Train a GPT-NeoX-style byte-level BPE tokenizer on `texts` and save it as a Hugging Face
    directory.

    With `pad_to_exact`, unused placeholder tokens fill the vocabulary up to exactly `vocab_size`
    (used for a stand-in of the real GPT-NeoX vocabulary when the real tokenizer files are not on
    this machine).
    """
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TEXT, PAD_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = BASE_CORPUS * 50 + list(texts)
    tok.train_from_iterator(corpus, trainer)
    if pad_to_exact and tok.get_vocab_size() < vocab_size:
        tok.add_tokens([f"<|unused_{i}|>" for i in range(vocab_size - tok.get_vocab_size())])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TEXT,
        eos_token=EOS_TEXT,
        unk_token=EOS_TEXT,
        pad_token=PAD_TEXT,
        model_max_length=2048,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return out_dir
