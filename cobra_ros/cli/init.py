"""cobra-init: write a complete model directory in the release layout with random weights."""

from __future__ import annotations

import argparse
import shutil
import tempfile

from cobra_ros.model.checkpoint import save_model_dir
from cobra_ros.model.cobra import random_cobra
from cobra_ros.model.config import ARCH_SPECIFIERS, GPT_NEOX_VOCAB, preset, preset_names
from cobra_ros.model.engine import DTYPES, resolve_dtype
from cobra_ros.model.tokenizer import ChatTokenizer, build_tokenizer


def init_model_dir(
    preset_name: str,
    out: str,
    dtype: str = "float32",
    seed: int = 0,
    tokenizer_dir: str | None = None,
    arch: str | None = None,
    corpus: list[str] | None = None,
) -> str:
    """Returns a note on the tokenizer used (real or stand-in)."""
    base = preset(preset_name)
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer_dir:
            tokenizer, note = (
                ChatTokenizer.load(tokenizer_dir),
                f"tokenizer copied from {tokenizer_dir}",
            )
        elif preset_name == "cobra-3b":
            tokenizer = ChatTokenizer.load(
                build_tokenizer(corpus or [], GPT_NEOX_VOCAB, tmp, pad_to_exact=True)
            )
            note = (
                f"stand-in tokenizer: {len(tokenizer)} tokens (the real GPT-NeoX vocabulary size) "
                "with its special tokens, trained on a small corpus; put the real tokenizer in "
                "<dir>/tokenizer for real text"
            )
        else:
            tokenizer = ChatTokenizer.load(build_tokenizer(corpus or [], base.llm.vocab_size, tmp))
            note = f"small byte-level BPE tokenizer with {len(tokenizer)} tokens"
        cfg = preset(preset_name, vocab_size=len(tokenizer), arch=arch)
        model = random_cobra(cfg, seed, resolve_dtype(dtype, "cpu"))
        save_model_dir(model, tokenizer, out)
    return note


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--preset",
        required=True,
        choices=preset_names(),
        help="cobra-3b: the release's shapes; the others: small models of the same kind",
    )
    parser.add_argument("--out", required=True, help="the model directory to write")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="dtype the weights are built, initialised and written in",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--arch", choices=ARCH_SPECIFIERS, help="projector variant (default: the preset's)"
    )
    parser.add_argument(
        "--tokenizer", help="a local Hugging Face tokenizer directory to use instead of a stand-in"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output directory"
    )
    args = parser.parse_args(argv)
    if args.force:
        shutil.rmtree(args.out, ignore_errors=True)
    note = init_model_dir(args.preset, args.out, args.dtype, args.seed, args.tokenizer, args.arch)
    print(f"wrote {args.preset} ({args.dtype}, seed {args.seed}) to {args.out}: {note}")


if __name__ == "__main__":
    main()
