"""Pairs from MeanCache's contextual query set: a held-out check that nothing here was tuned on.

    python -m evaluation.workloads.meancache_pairs --out .semcache/meancache-pairs.jsonl
    semcache eval pairs --data .semcache/meancache-pairs.jsonl --policy policies/default.yaml --compare ...

``contextual/dataset_contextual_queries/new_claude.json`` (MeanCache, MIT) holds 124
conversations: a first question, a rewording of it, a follow-up and a rewording of that. The
verifier never trained on them and no policy was calibrated on them. Pairs:

* ``paraphrase`` (label 1): the first question and its rewording ("What are the main components
  of a computer?" / "Can you describe the essential parts of a computer system?");
* ``follow_up`` (label 0): the first question and the follow-up, another question on the same
  topic ("What is photosynthesis?" / "What gas is released as a byproduct?").

Only these two: pairs across conversations would need labels the set does not give (several
conversations open on one topic in other words, "What is the significance of the Renaissance?" /
"Tell me about the Renaissance period"), and rule-made labels there were wrong as often as not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluation.workloads.data import DATA

SOURCE = DATA / "contextual" / "dataset_contextual_queries" / "new_claude.json"


def pairs(path: Path = SOURCE) -> list[dict]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for i, row in enumerate(rows):
        out.append({"id": f"meancache-{i}-reworded", "a": row["u0"], "b": row["u0_duplicate"], "label": 1,
                    "kind": "paraphrase", "source": "meancache"})
        out.append({"id": f"meancache-{i}-follow-up", "a": row["u0"], "b": row["u1"], "label": 0,
                    "kind": "follow_up", "source": "meancache"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    found = pairs()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(p) + "\n" for p in found), encoding="utf-8")
    print(f"{len(found)} pairs -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
