"""MultiRC (SuperGLUE): a paragraph, several questions, each with answer options to judge.

Every (question, answer option) pair is one question here, judged true/false from
the first-step logits of " yes" / " no" after the prompt; the paragraph is the shared
context of its groups (a group never spans two paragraphs, so the last group of a
paragraph may be smaller). Metrics as SuperGLUE defines them: EM, the share of
questions whose options are all judged right, and F1a, binary F1 over all options.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.safe_io import read_jsonl, write_jsonl
from pmbench.suites import data
from pmbench.suites.base import TextGroup, TextQuestion, chunks, data_files
from pmbench.suites.choice import ChoiceSuite
from pmbench.suites.metrics import compute, mean
from pmbench.types import Question, QuestionOutput


class MultiRCSuite(ChoiceSuite):
    """YAML choices are [yes, no]: index 0 means "this option is correct" (label 1)."""

    metric = "multirc"

    def text_groups(self) -> Iterator[TextGroup]:
        prompt = self.config["prompt"]
        for record in read_jsonl(self.data_path("eval"), follow=True):
            passage = record["passage"]
            items = []
            for q in passage["questions"]:
                for a in q["answers"]:
                    if "label" not in a:
                        raise BadInput(f"multirc {self.split} split has no labels; use val")
                    verdict = self.choices[0 if a["label"] else 1]
                    qid = f"{record['idx']}/{q['idx']}"
                    meta = {"question_id": qid, "label": int(a["label"]),
                            "gold_index": 0 if a["label"] else 1}
                    text = prompt["question"].format(question=q["question"], answer=a["text"])
                    items.append(TextQuestion(f"{qid}/{a['idx']}", text, verdict,
                                              self.delimiter + verdict, meta))
            context = prompt["context"].format(paragraph=passage["text"])
            for chunk in chunks(items, self.branch):
                yield TextGroup(context, chunk, meta={"paragraph": record["idx"]})

    def score(
        self, question: Question, output: QuestionOutput, *, allow_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        fields = super().score(question, output, eos_token_ids=eos_token_ids)
        judged_true = int(fields["prediction"] == self.choices[0])
        label = question.meta["label"]
        # the option as exact match judges it (no choice found counts as "no", unlike acc)
        return {**fields, "question_id": question.meta["question_id"], "label": label,
                "pred_label": judged_true, "option_right": float(judged_true == label)}

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        m = compute("multirc", predictions=[s["pred_label"] for s in samples],
                    references=[s["label"] for s in samples],
                    question_ids=[s["question_id"] for s in samples])
        return {
            "em": m["exact_match"],
            "f1a": m["f1_a"],
            "acc": mean(s["acc"] for s in samples),
            "n": len(samples),
            "n_questions": len({s["question_id"] for s in samples}),
        }

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """super_glue/multirc rows are flat (one per answer option): nest them again."""
        for local, hub in (("train", "train"), ("val", "validation"), ("test", "test")):
            passages: dict[int, dict[str, Any]] = {}
            questions: dict[tuple[int, int], dict[str, Any]] = {}
            for r in data.load_hub(config["data"]["hub"], "multirc", hub):
                p, q, a = r["idx"]["paragraph"], r["idx"]["question"], r["idx"]["answer"]
                passage = passages.setdefault(p, {"text": r["paragraph"], "questions": []})
                if (p, q) not in questions:
                    questions[(p, q)] = {"question": r["question"], "answers": [], "idx": q}
                    passage["questions"].append(questions[(p, q)])
                answer = {"text": r["answer"], "idx": a}
                if r["label"] in (0, 1):  # test rows carry -1: no label
                    answer["label"] = r["label"]
                questions[(p, q)]["answers"].append(answer)
            records = ({"idx": p, "version": 1.1, "passage": v} for p, v in passages.items())
            write_jsonl(root / data_files(config, local)["eval"], records)
