"""MMLU (and, by subclassing, C-Eval): 4-choice exams in many subjects, 5-shot.

Per subject: the description, then the first `num_fewshot` dev items with answers,
form the shared context; groups of `branch` test items of that subject follow
(the last group of a subject may be smaller). Metrics: accuracy over all questions
(micro), the mean of per-subject accuracies (macro), and accuracy per category.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from pmbench.errors import BadInput
from pmbench.safe_io import atomic_write_text
from pmbench.suites import data
from pmbench.suites.base import TextGroup, TextQuestion, chunks, data_files
from pmbench.suites.choice import ChoiceSuite
from pmbench.suites.metrics import mean
from pmbench.types import Question, QuestionOutput

# lm-evaluation-harness's subject -> category map (lm_eval/tasks/mmlu/_generate_configs.py),
# the grouping of Hendrycks et al. (2021).
CATEGORIES = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem",
    "business_ethics": "other", "clinical_knowledge": "other", "college_biology": "stem",
    "college_chemistry": "stem", "college_computer_science": "stem",
    "college_mathematics": "stem", "college_medicine": "other", "college_physics": "stem",
    "computer_security": "stem", "conceptual_physics": "stem",
    "econometrics": "social_sciences", "electrical_engineering": "stem",
    "elementary_mathematics": "stem", "formal_logic": "humanities", "global_facts": "other",
    "high_school_biology": "stem", "high_school_chemistry": "stem",
    "high_school_computer_science": "stem", "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences", "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences", "high_school_physics": "stem",
    "high_school_psychology": "social_sciences", "high_school_statistics": "stem",
    "high_school_us_history": "humanities", "high_school_world_history": "humanities",
    "human_aging": "other", "human_sexuality": "social_sciences",
    "international_law": "humanities", "jurisprudence": "humanities",
    "logical_fallacies": "humanities", "machine_learning": "stem", "management": "other",
    "marketing": "other", "medical_genetics": "other", "miscellaneous": "other",
    "moral_disputes": "humanities", "moral_scenarios": "humanities", "nutrition": "other",
    "philosophy": "humanities", "prehistory": "humanities", "professional_accounting": "other",
    "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences", "virology": "other", "world_religions": "humanities",
}
COLUMNS = ["question", "A", "B", "C", "D", "answer"]


class MMLUSuite(ChoiceSuite):
    """YAML `data.files`: `eval` and `shots` are folders of `<subject>_<folder>.csv` files."""

    categories: dict[str, str] = CATEGORIES

    # --- what C-Eval changes ---------------------------------------------------------------

    def subject_name(self, subject: str) -> str:
        return subject.replace("_", " ")

    def read_rows(self, path: Path) -> list[dict[str, str]]:
        """Headerless 6-column CSV (question, A, B, C, D, answer letter)."""
        with open(path, encoding="utf-8", newline="") as f:
            return [dict(zip(COLUMNS, row, strict=True)) for row in csv.reader(f)]

    # --- shared --------------------------------------------------------------------------

    def _file(self, role: str, subject: str) -> Path:
        """`<subject>_<split>.csv` in the folder of `role`, named after its split."""
        folder = self.data_path(role)
        return folder / f"{subject}_{folder.name}.csv"

    def all_subjects(self) -> list[str]:
        folder = self.data_path("eval")
        suffix = f"_{folder.name}.csv"
        return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}"))

    def selected_subjects(self) -> list[str]:
        known = self.all_subjects()
        if not self.subjects:
            return known
        unknown = [s for s in self.subjects if s not in known]
        if unknown:
            raise BadInput(f"unknown {self.name} subject(s) {', '.join(unknown)}; valid: "
                           f"{', '.join(known)}")
        return [s for s in known if s in self.subjects]

    def format_question(self, row: dict[str, str]) -> str:
        fields = {**row, "question": row["question"].strip()}
        return self.config["prompt"]["question"].format(**fields)

    def text_groups(self) -> Iterator[TextGroup]:
        prompt = self.config["prompt"]
        for subject in self.selected_subjects():
            shots = self.read_rows(self._file("shots", subject))[: self.num_fewshot]
            if len(shots) < self.num_fewshot:
                raise BadInput(f"{self.name} {subject}: only {len(shots)} dev items for "
                               f"--num-fewshot {self.num_fewshot}")
            context = "".join(self.shot(self.format_question(r), r["answer"]) for r in shots)
            system = prompt["description"].format(subject=self.subject_name(subject))
            items = [self._question(subject, i, row)
                     for i, row in enumerate(self.read_rows(self._file("eval", subject)))]
            for chunk in chunks(items, self.branch):
                yield TextGroup(context, chunk, system=system, meta={"subject": subject})

    def _question(self, subject: str, i: int, row: dict[str, str]) -> TextQuestion:
        answer = row.get("answer", "").strip()
        if answer not in self.choices:
            raise BadInput(f"{self.name} {subject} item {i}: answer {answer!r} is not one of "
                           f"{self.choices} (the {self.split} split may have no answers)")
        meta = {"subject": subject, "category": self.categories.get(subject, "other"),
                "gold_index": self.choices.index(answer)}
        return TextQuestion(f"{subject}/{i}", self.format_question(row), answer,
                            self.delimiter + answer, meta)

    def score(
        self, question: Question, output: QuestionOutput, *, allow_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        fields = super().score(question, output, eos_token_ids=eos_token_ids)
        meta = question.meta
        return {**fields, "subject": meta["subject"], "category": meta["category"]}

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """acc (micro), acc_macro (the mean over subjects), acc_<category> (the YAML
        `breakdown`: lm-eval's categories, `categories` mapping subjects to them)."""
        by_subject: dict[str, list[float]] = defaultdict(list)
        for s in samples:
            by_subject[s["subject"]].append(s["acc"])
        metrics: dict[str, Any] = {
            "acc": mean(s["acc"] for s in samples),
            "acc_macro": mean(mean(v) for v in by_subject.values()),
            **self.breakdown(samples),
        }
        metrics["n"] = len(samples)
        metrics["n_subjects"] = len(by_subject)
        return metrics

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """cais/mmlu "all": rows with subject, question, choices[4], answer index."""
        splits = {"dev": "dev", "val": "validation", "test": "test"}
        for local, hub in splits.items():
            per_subject: dict[str, list[list[str]]] = defaultdict(list)
            for r in data.load_hub(config["data"]["hub"], "all", hub):
                per_subject[r["subject"]].append(
                    [r["question"], *r["choices"], "ABCD"[r["answer"]]])
            for subject, rows in per_subject.items():
                out = StringIO()
                csv.writer(out, lineterminator="\n").writerows(rows)
                folder = root / data_files(config, local)["eval"]
                atomic_write_text(folder / f"{subject}_{local}.csv", out.getvalue())
