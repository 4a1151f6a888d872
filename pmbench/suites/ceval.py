"""C-Eval: Chinese 4-choice exams in 52 subjects; scored on val (test has no answers).

Same mechanics as MMLU; what differs is the CSV header, the Chinese description
naming the subject in Chinese, and the categories. The map below is C-Eval's
official `subject_mapping.json` (hkust-nlp/ceval: English name, Chinese name,
category), which was not copied with the data. That file gives `clinical_medicine`
no category; C-Eval's paper and README list it under Other, used here.
"""

from __future__ import annotations

import csv
from io import StringIO
from pathlib import Path
from typing import Any

from pmbench.safe_io import atomic_write_text
from pmbench.suites import data
from pmbench.suites.base import data_files
from pmbench.suites.mmlu import MMLUSuite

SUBJECTS: dict[str, tuple[str, str, str]] = {
    "computer_network": ("Computer Network", "计算机网络", "stem"),
    "operating_system": ("Operating System", "操作系统", "stem"),
    "computer_architecture": ("Computer Architecture", "计算机组成", "stem"),
    "college_programming": ("College Programming", "大学编程", "stem"),
    "college_physics": ("College Physics", "大学物理", "stem"),
    "college_chemistry": ("College Chemistry", "大学化学", "stem"),
    "advanced_mathematics": ("Advanced Mathematics", "高等数学", "stem"),
    "probability_and_statistics": ("Probability and Statistics", "概率统计", "stem"),
    "discrete_mathematics": ("Discrete Mathematics", "离散数学", "stem"),
    "electrical_engineer": ("Electrical Engineer", "注册电气工程师", "stem"),
    "metrology_engineer": ("Metrology Engineer", "注册计量师", "stem"),
    "high_school_mathematics": ("High School Mathematics", "高中数学", "stem"),
    "high_school_physics": ("High School Physics", "高中物理", "stem"),
    "high_school_chemistry": ("High School Chemistry", "高中化学", "stem"),
    "high_school_biology": ("High School Biology", "高中生物", "stem"),
    "middle_school_mathematics": ("Middle School Mathematics", "初中数学", "stem"),
    "middle_school_biology": ("Middle School Biology", "初中生物", "stem"),
    "middle_school_physics": ("Middle School Physics", "初中物理", "stem"),
    "middle_school_chemistry": ("Middle School Chemistry", "初中化学", "stem"),
    "veterinary_medicine": ("Veterinary Medicine", "兽医学", "stem"),
    "college_economics": ("College Economics", "大学经济学", "social_science"),
    "business_administration": ("Business Administration", "工商管理", "social_science"),
    "marxism": ("Marxism", "马克思主义基本原理", "social_science"),
    "mao_zedong_thought": ("Mao Zedong Thought", "毛泽东思想和中国特色社会主义理论体系概论",
                           "social_science"),
    "education_science": ("Education Science", "教育学", "social_science"),
    "teacher_qualification": ("Teacher Qualification", "教师资格", "social_science"),
    "high_school_politics": ("High School Politics", "高中政治", "social_science"),
    "high_school_geography": ("High School Geography", "高中地理", "social_science"),
    "middle_school_politics": ("Middle School Politics", "初中政治", "social_science"),
    "middle_school_geography": ("Middle School Geography", "初中地理", "social_science"),
    "modern_chinese_history": ("Modern Chinese History", "近代史纲要", "humanities"),
    "ideological_and_moral_cultivation": ("Ideological and Moral Cultivation",
                                          "思想道德修养与法律基础", "humanities"),
    "logic": ("Logic", "逻辑学", "humanities"),
    "law": ("Law", "法学", "humanities"),
    "chinese_language_and_literature": ("Chinese Language and Literature", "中国语言文学",
                                        "humanities"),
    "art_studies": ("Art Studies", "艺术学", "humanities"),
    "professional_tour_guide": ("Professional Tour Guide", "导游资格", "humanities"),
    "legal_professional": ("Legal Professional", "法律职业资格", "humanities"),
    "high_school_chinese": ("High School Chinese", "高中语文", "humanities"),
    "high_school_history": ("High School History", "高中历史", "humanities"),
    "middle_school_history": ("Middle School History", "初中历史", "humanities"),
    "civil_servant": ("Civil Servant", "公务员", "other"),
    "sports_science": ("Sports Science", "体育学", "other"),
    "plant_protection": ("Plant Protection", "植物保护", "other"),
    "basic_medicine": ("Basic Medicine", "基础医学", "other"),
    "clinical_medicine": ("Clinical Medicine", "临床医学", "other"),
    "urban_and_rural_planner": ("Urban and Rural Planner", "注册城乡规划师", "other"),
    "accountant": ("Accountant", "注册会计师", "other"),
    "fire_engineer": ("Fire Engineer", "注册消防工程师", "other"),
    "environmental_impact_assessment_engineer": ("Environmental Impact Assessment Engineer",
                                                 "环境影响评价工程师", "other"),
    "tax_accountant": ("Tax Accountant", "税务师", "other"),
    "physician": ("Physician", "医师资格", "other"),
}
CATEGORIES = {subject: category for subject, (_, _, category) in SUBJECTS.items()}


class CEvalSuite(MMLUSuite):
    categories = CATEGORIES

    def subject_name(self, subject: str) -> str:
        return SUBJECTS[subject][1] if subject in SUBJECTS else subject

    def read_rows(self, path: Path) -> list[dict[str, str]]:
        """CSV with header id,question,A,B,C,D[,answer[,explanation]]."""
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """ceval/ceval-exam has one hub config per subject, splits dev / val / test."""
        for subject in SUBJECTS:
            for split, rows in data.load_hub(config["data"]["hub"], subject).items():
                columns = [c for c in ("id", "question", "A", "B", "C", "D", "answer",
                                       "explanation") if c in rows.column_names]
                out = StringIO()
                writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\r\n")
                writer.writeheader()
                writer.writerows(rows)
                folder = root / data_files(config, split)["eval"]
                atomic_write_text(folder / f"{subject}_{split}.csv", out.getvalue())
