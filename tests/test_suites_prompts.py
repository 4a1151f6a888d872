"""Prompt snapshots: the exact text of the first test item of every suite.

tests/fixtures/prompts/<suite>.txt holds the reviewed full prompt (context + question,
as the model reads it); a change to templates, shots or data handling shows up here.
The question parts are also spelled out below, by hand, in lm-eval's formats.
"""

from pathlib import Path

import pytest

from pmbench.suites import load_suite

PROMPTS = Path(__file__).parent / "fixtures" / "prompts"

QUESTION_PART = {
    "mmlu": "\nFind the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q."
            "\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:",
    "ceval": "\n下列关于税法基本原则的表述中，不正确的是____。\nA. 税收法定原则包括税收要件"
             "法定原则和税务合法性原则\nB. 税收公平原则源于法律上的平等性原则\nC. 税收效率原则"
             "包含经济效率和行政效率两个方面\nD. 税务机关按法定程序依法征税，可以自由做出减征、"
             "停征或免征税款的决定\n答案：",
    "gsm8k": "\nQuestion: Janet’s ducks lay 16 eggs per day. She eats three for breakfast every "
             "morning and bakes muffins for her friends every day with four. She sells the "
             "remainder at the farmers' market daily for $2 per fresh duck egg. How much in "
             "dollars does she make every day at the farmers' market?\nAnswer:",
    "squad": "Question: Which NFL team represented the AFC at Super Bowl 50?\nAnswer:",
    "multirc": "Question: Would the mass of a baseball affect how much force you have to use to "
               "pick it up?\nAnswer: No\nIs the answer correct?",
    "humaneval": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], "
                 "threshold: float) -> bool:\n    \"\"\" Check if in given list of numbers, are "
                 "any two numbers closer to each other than\n    given threshold.\n    >>> "
                 "has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    >>> has_close_elements("
                 "[1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)\n    True\n    \"\"\"\n",
}
CONTEXT_START = {
    "mmlu": "The following are multiple choice questions (with answers) about abstract algebra."
            "\n\nFind all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3"
            "\nAnswer: B\n\n",
    "ceval": "以下是中国关于注册会计师的单项选择题，请选出其中的正确答案。\n\n",
    "gsm8k": "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as"
             " many clips in May. How many clips did Natalia sell altogether in April and May?\n"
             "Answer: Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
             "<<48+24=72>>72 clips altogether in April and May.\n#### 72\n\nQuestion: Weng",
    "squad": "Context: Super Bowl 50 was an American football game to determine the champion",
    "multirc": "What causes a change in motion? The application of a force.",
    "humaneval": "",
}


@pytest.mark.parametrize("name", sorted(QUESTION_PART))
def test_first_prompt_snapshot(tokenizer, name):
    group = load_suite(name, tokenizer, limit=1).groups[0]
    q = group.questions[0]
    text = group.meta["context_text"] + q.meta["prompt_text"]
    assert text == (PROMPTS / f"{name}.txt").read_text(encoding="utf-8")
    assert text.startswith(CONTEXT_START[name]) and text.endswith(QUESTION_PART[name])
    assert tokenizer.decode(group.context_ids + q.prompt_ids) == text


def test_shot_counts(tokenizer):
    text = {n: (PROMPTS / f"{n}.txt").read_text(encoding="utf-8") for n in QUESTION_PART}
    assert text["mmlu"].count("\nAnswer:") == 6 and text["ceval"].count("\n答案：") == 6
    assert text["gsm8k"].count("Question: ") == 9 and text["gsm8k"].count("\n#### ") == 8
    assert text["squad"].count("Question: ") == 1
