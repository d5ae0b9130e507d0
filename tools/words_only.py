"""The words-only control on v2 training data: can a question's answer be told from its words?

Fits a per-question-text majority classifier (case, punctuation and spacing ignored) on the
yes/no questions of one set of physics-world scenes and scores it on another's, per relation.
About 0.5 means the words tell nothing; presence of blocks no set has is always "No" (but for
negations) and is expected high.

    python tools/words_only.py --scenes 300
"""
from __future__ import annotations

import argparse
from collections import Counter

from cobra_ros.langtable import questions


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=300, help="scenes in each of the two sets")
    parser.add_argument("--seeds", default="100,101", help="the fitted set's and scored set's")
    parser.add_argument("--source", default="sim", help="sim (the physics world) or 2d")
    parser.add_argument("--cache-dir", default=".cache/scenes", help="rendered scenes' cache")
    args = parser.parse_args(argv)
    fit_seed, score_seed = (int(s) for s in args.seeds.split(","))
    sets = [questions.make_examples(seed, args.scenes, image_size=None, n_blocks=(1, 8),
                                    kind="v2", source=args.source, cache_dir=args.cache_dir)
            for seed in (fit_seed, score_seed)]
    control = questions.words_only_accuracy(sets[0].examples, sets[1].examples)
    n = Counter(e.relation for e in sets[1].examples if e.label is not None)
    print(f"words-only control: fitted on seed {fit_seed}, scored on seed {score_seed}, "
          f"{args.scenes} {args.source} scenes each")
    for relation, accuracy in control.items():
        print(f"  {relation:<17} {accuracy:.3f}  (n={n[relation]})")


if __name__ == "__main__":
    main()
