"""Text attacks side by side with TextAttack: success rate, median queries per success, wall time.

The same model (dlsec's embedding bag trained on builtin:rotten-tomatoes, seed 0), the same test
texts (the first N of the test split), the same budget (at most ``--max-change`` of the words
changed; the same stop words kept). TextAttack pins old versions, so it runs in its own virtual
environment (``--textattack-python``, default ``.venv-textattack/bin/python``), which reads the
same ``model.safetensors`` and ``tokenizer.json`` and computes the same forward pass (mean of the
word embeddings, then the linear layer); the two sides' clean predictions are compared first.

TextAttack's WordNet comes from NLTK: the script builds an ``nltk_data`` folder whose
``corpora/wordnet`` points at the same Debian ``wordnet-base`` files dlsec reads (plus the
``lexnames`` table NLTK needs), so both PWWS runs draw synonyms from one database. TextAttack's
TextFooler and HotFlip recipes need the counter-fitted embeddings and the Universal Sentence
Encoder, downloaded at run time: those rows show dlsec alone.

dlsec runs each attack twice: one text at a time (``lockstep=1``) and ``--lockstep`` texts
together (their candidates in one model call); the two results must be equal (the script says
so), and the table shows both wall times. WordNet is loaded once before timing (both sides).

Usage:
    python benchmarks/text.py            # 200 texts
    python benchmarks/text.py --quick    # 50 texts
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
    "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
]  # fmt: skip

TEXTATTACK_SIDE = r"""
import json, math, sys, time
import numpy as np, torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
import textattack
from textattack import Attack, Attacker, AttackArgs
from textattack.attack_results import SuccessfulAttackResult, SkippedAttackResult
from textattack.constraints.overlap import MaxWordsPerturbed
from textattack.datasets import Dataset
from textattack.models.wrappers import ModelWrapper

args = json.loads(sys.argv[1])
torch.set_num_threads(1)
state = load_file(args["model"] + "/model.safetensors")
tok = Tokenizer.from_file(args["model"] + "/tokenizer.json")

class Bag(ModelWrapper):
    # the same forward pass as dlsec's embedding bag, batched the same way

    def __init__(self):
        self.model = None

    def __call__(self, texts):
        encs = tok.encode_batch(list(texts))
        width = max([min(len(e.ids), 128) for e in encs] + [1])
        ids = torch.zeros((len(encs), width), dtype=torch.long)
        mask = torch.zeros((len(encs), width))
        for i, e in enumerate(encs):
            row = e.ids[:128]
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1.0
        emb = state["embedding.weight"][ids] * mask.unsqueeze(-1)
        pooled = emb.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        logits = pooled @ state["head.weight"].T + state["head.bias"]
        return torch.softmax(logits.double(), 1).numpy()

class FloorBudget(MaxWordsPerturbed):
    # TextAttack rounds the budget up (ceil(0.2 * 18 words) = 4 words, 22%); dlsec never exceeds
    # the fraction (floor: 3 words). Compare at the same budget: TextAttack's check with floor.
    def _check_constraint(self, transformed_text, reference_text):
        changed = len(transformed_text.all_words_diff(reference_text))
        words = min(len(transformed_text.words), len(reference_text.words))
        return changed <= math.floor(words * self.max_percent + 1e-9)


wrapper = Bag()
data = json.load(open(args["data"]))
print(json.dumps({"clean": wrapper(data["texts"]).argmax(1).tolist()}), flush=True)
from textattack.attack_recipes import PWWSRen2019, DeepWordBugGao2018
rows = {}
for name, recipe in (("pwws", PWWSRen2019), ("deepwordbug", DeepWordBugGao2018)):
    attack = recipe.build(wrapper)
    budget = FloorBudget(max_percent=args["max_change"])
    # Attack() takes every constraint in one list; the recipe keeps its pre-transformation ones
    # (stop words, no repeats) apart, so both lists go back in.
    kept = attack.pre_transformation_constraints + attack.constraints + [budget]
    attack = Attack(attack.goal_function, kept, attack.transformation, attack.search_method)
    ds = Dataset(list(zip(data["texts"], data["labels"])))
    attack_args = AttackArgs(num_examples=len(data["texts"]), disable_stdout=True, silent=True)
    attacker = Attacker(attack, ds, attack_args)
    t = time.perf_counter()
    results = attacker.attack_dataset()
    wall = time.perf_counter() - t
    won = [r.num_queries for r in results if isinstance(r, SuccessfulAttackResult)]
    attacked = [r for r in results if not isinstance(r, SkippedAttackResult)]
    rows[name] = {"success_rate": len(won) / max(len(attacked), 1),
                  "median_queries": float(np.median(won)) if won else float("nan"), "wall_s": wall}
print(json.dumps({"rows": rows}), flush=True)
"""


def nltk_data(root: Path, wordnet: Path) -> Path:
    """An nltk_data folder: corpora/wordnet is the local WordNet database, the stop words dlsec's."""
    from dlsec.text.words import STOPWORDS

    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for f in wordnet.iterdir():
        if f.is_file() and not (target / f.name).exists():
            shutil.copyfile(f, target / f.name)  # NLTK refuses links that leave its folder
    (target / "lexnames").write_text(
        "".join(f"{i:02d}\t{n}\t{n.split('.')[0]}\n" for i, n in enumerate(LEXNAMES))
    )
    # TextAttack's StopwordModification reads NLTK's English list: give it dlsec's (the same words).
    stop = root / "corpora" / "stopwords"
    stop.mkdir(parents=True, exist_ok=True)
    (stop / "english").write_text("".join(f"{w}\n" for w in sorted(STOPWORDS)))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 texts instead of 200")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--max-change", type=float, default=0.2)
    parser.add_argument("--lockstep", type=int, default=16, help="texts attacked together (default 16)")
    parser.add_argument("--model", type=Path, default=None, help="a trained embedding-bag folder")
    parser.add_argument(
        "--textattack-python", default=os.environ.get("TEXTATTACK_PYTHON", ".venv-textattack/bin/python")
    )
    args = parser.parse_args()
    n = args.n or (50 if args.quick else 200)

    import torch
    from rich.console import Console

    torch.set_num_threads(1)
    from dlsec.text import WordNet, get_text_attack, load_text_dataset, load_text_model, train_text_model
    from dlsec.text.wordnet import DEFAULT_WORDNET_DIR

    status = Console(stderr=True).status

    data = load_text_dataset("builtin:rotten-tomatoes")
    work = Path(tempfile.mkdtemp(prefix="dlsec-bench-text-"))
    folder = args.model
    if folder is None:
        folder = work / "model"
        with status("training the embedding bag"):
            train_text_model(data, arch="embedding-bag", out=folder, seed=0)
    model = load_text_model(folder)
    test = data.split(test_size=0.25, seed=0)[1].subset(range(n))

    WordNet.load()  # cached: neither timing below pays for reading it
    ours: dict[str, dict[str, float]] = {}
    unequal: list[str] = []
    for name in ("pwws", "textfooler", "deepwordbug", "hotflip"):
        params: dict[str, object] = {"max_change": args.max_change, "seed": 0}
        if name == "pwws":
            params["same_pos"] = False  # TextAttack's PWWS recipe has no part-of-speech constraint
        runs = {}
        for lockstep in (1, args.lockstep):
            attack = get_text_attack(name, **params, lockstep=lockstep)
            with status(f"dlsec {name}, lockstep {lockstep}, {n} texts"):
                t = time.perf_counter()
                result = attack(model, test.texts, test.y)
                runs[lockstep] = (result, time.perf_counter() - t)
        one, many = runs[1][0], runs[args.lockstep][0]
        if one.adv_texts != many.adv_texts or one.queries.tolist() != many.queries.tolist():
            unequal.append(name)
        ours[name] = {
            "success_rate": many.success_rate,
            "median_queries": many.median_queries,
            "wall_s_1": runs[1][1],
            "wall_s": runs[args.lockstep][1],
        }

    theirs: dict[str, dict[str, float]] = {}
    note = ""
    python = Path(args.textattack_python)
    if not python.exists():
        note = f"TextAttack not run: {python} is missing (make a venv there and pip install textattack)"
    else:
        (work / "data.json").write_text(json.dumps({"texts": list(test.texts), "labels": test.y.tolist()}))
        env = dict(
            os.environ, NLTK_DATA=str(nltk_data(work / "nltk_data", DEFAULT_WORDNET_DIR)), HF_HUB_OFFLINE="1"
        )
        payload = json.dumps(
            {"model": str(folder), "data": str(work / "data.json"), "max_change": args.max_change}
        )
        with status(f"TextAttack: PWWS and DeepWordBug on {n} texts"):
            proc = subprocess.run(
                [str(python), "-c", TEXTATTACK_SIDE, payload],
                capture_output=True,
                text=True,
                env=env,
                timeout=3600,
            )
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        clean = next((line["clean"] for line in lines if "clean" in line), None)
        theirs = next((line["rows"] for line in lines if "rows" in line), {})
        if clean is not None and clean != model.predict(test.texts).tolist():
            note = "warning: TextAttack's forward pass disagrees with dlsec's on some clean texts"
        if proc.returncode != 0 or not theirs:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            note = f"TextAttack failed (exit {proc.returncode}): {tail[:200]}"

    print(f"Rotten Tomatoes, embedding bag, {n} test texts, max {args.max_change:.0%} of words changed\n")
    k = args.lockstep
    print(
        "| attack | dlsec success | TextAttack success | dlsec median queries | TextAttack median queries "
        f"| dlsec wall s (1 text / {k} texts) | TextAttack wall s | wall ratio (1 text / {k} texts) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in ours.items():
        other = theirs.get(name)
        if other:
            ratio = f"{row['wall_s_1'] / other['wall_s']:.2f}x / {row['wall_s'] / other['wall_s']:.2f}x"
            cells = [
                f"{other['success_rate']:.1%}",
                f"{other['median_queries']:.0f}",
                f"{other['wall_s']:.1f}",
            ]
        else:
            ratio, cells = "-", ["not run offline", "-", "-"]
        print(
            f"| {name} | {row['success_rate']:.1%} | {cells[0]} | {row['median_queries']:.0f} | {cells[1]} "
            f"| {row['wall_s_1']:.1f} / {row['wall_s']:.1f} | {cells[2]} | {ratio} |"
        )
    print(
        f"\nlockstep {k} gave the same adversarial texts and queries as one text at a time: "
        + ("yes, every attack" if not unequal else f"NO for {', '.join(unequal)}")
    )
    if note:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
