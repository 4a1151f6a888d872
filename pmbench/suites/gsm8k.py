"""GSM8K: grade-school math word problems, exact match on the final number.

The few-shot prefix (the first train items with their worked solutions) is the shared
context of every group. Two extractions, as lm-evaluation-harness: strict (the number
after `#### `, the format the shots teach) and flexible (the last number anywhere).
Fine-tuning on its train split holds out its last problems (`heldout_cut`) and never
trains on the shots.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.safe_io import read_jsonl, write_jsonl
from pmbench.suites import data
from pmbench.suites.base import Suite, TextGroup, TextQuestion, chunks, data_files
from pmbench.suites.metrics import compute
from pmbench.suites.training import HELDOUT, TRAIN, TrainingSplit
from pmbench.types import Group, Question, QuestionOutput

HELDOUT_ROWS = 200  # about this many last train problems are held out (see heldout_cut)


def heldout_cut(n_rows: int) -> int:
    """First held-out row of the train split: about HELDOUT_ROWS from the end, on a multiple
    of 16, so groups of 1..16 consecutive problems never straddle the cut."""
    return (n_rows - HELDOUT_ROWS) // 16 * 16


def final_answer(solution: str) -> str:
    """The gold number: what follows `#### ` on the solution's last line."""
    return solution.split("####")[-1].strip()


class GSM8KSuite(Suite):
    metric = "gsm8k"

    def text_groups(self) -> Iterator[TextGroup]:
        template = self.config["prompt"]["question"]
        shots = read_jsonl(self.data_path("shots"), follow=True)[: self.num_fewshot]
        if len(shots) < self.num_fewshot:
            raise BadInput(f"gsm8k has only {len(shots)} train items for --num-fewshot")
        context = "".join(self.shot(template.format(question=s["question"]), s["answer"])
                          for s in shots)
        items = [
            TextQuestion(f"{self.split}/{i}", template.format(question=d["question"]),
                         final_answer(d["answer"]), self.target_delimiter + d["answer"])
            for i, d in enumerate(read_jsonl(self.data_path("eval"), follow=True))
        ]
        for chunk in chunks(items, self.branch):
            yield TextGroup(context, chunk)

    def score_all(
        self, questions: Sequence[Question], outputs: Sequence[QuestionOutput],
        allow_code_execution: bool = False, allow_unisolated_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """A group's answers through the gsm8k metric (pmbench/suites/metrics/gsm8k.py)."""
        texts = [self.answer_text(o, eos_token_ids) for o in outputs]
        targets = [q.target for q in questions]
        m = compute("gsm8k", predictions=texts, references=targets, per_item=True)
        return [
            {"target": target, "prediction": text,
             "extracted_strict": strict, "extracted_flexible": flexible,
             "em_strict": em_strict, "em_flexible": em_flexible, "score": em_strict}
            for target, text, strict, flexible, em_strict, em_flexible in zip(
                targets, texts, m["extracted_strict"], m["extracted_flexible"],
                m["exact_match_strict"], m["exact_match_flexible"], strict=True)
        ]

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        m = compute("gsm8k", predictions=[s["prediction"] for s in samples],
                    references=[s["target"] for s in samples])
        strict = m["exact_match_strict"]
        return {"exact_match": strict, "exact_match_strict": strict,
                "exact_match_flexible": m["exact_match_flexible"], "n": len(samples)}

    def training_split(self, heldout_documents: int) -> TrainingSplit:
        """Rows from `heldout_cut` on are held out; the first `num_fewshot`, the shots every
        prompt shows, are neither trained on nor held out."""
        path = self.data_path("eval")
        cut = heldout_cut(len(read_jsonl(path, follow=True)))

        def side(group: Group, question: Question) -> str | None:
            row = int(question.doc_id.rsplit("/", 1)[-1])
            return HELDOUT if row >= cut else TRAIN if row >= self.num_fewshot else None

        return TrainingSplit(side, {
            "file": data_files(self.config, self.split)["eval"], "heldout_rows": f"{cut}..",
            "note": "suite shots (first train rows) are not trained on"})

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        for split in ("train", "test"):
            rows = data.load_hub(config["data"]["hub"], "main", split)
            write_jsonl(root / data_files(config, split)["eval"],
                             ({"question": r["question"], "answer": r["answer"]} for r in rows))
