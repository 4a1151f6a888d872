"""The suite framework: a YAML config plus a small class that reads data and scores.

A suite turns its data into `TextGroup`s (a shared context and up to `branch`
questions, as text), and this base class turns those into the token-level `Group`s
every method receives. Tokenization lives here, once, so that all methods and all
suites follow the same rules:

* the shared context and each question are tokenized separately and concatenated
  (DESIGN: never re-tokenize a joined string in one method and not another);
* the cut between them falls inside the whitespace that ends the context (a blank
  line, "\\n\\n", in most prompts). Where exactly is chosen once per tokenizer, with a
  probe, so that `context_ids + prompt_ids` equals tokenizing the whole prompt at once
  (SmolLM2's tokenizer: "\\n" stays in the context and the question starts with "\\n";
  a tokenizer that merges "\\n\\n" before a word keeps it whole in the context). The ids
  are then those lm-evaluation-harness would feed for the same prompt string, whenever
  the question starts with a non-space character (all suites but a few HumanEval
  prompts under --apply-chat-template);
* a tokenizer that adds BOS gets it once, at the start of the context;
* `--apply-chat-template` renders [system: task description, user: context + question]
  with the tokenizer's chat template and a generation prompt, as lm-evaluation-harness
  does (few-shot examples in the one user turn); the rendered text is split so that
  everything before the question is the shared context.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from pmbench.errors import BadInput
from pmbench.suites import data, window
from pmbench.suites.metrics import cut_at_stops
from pmbench.suites.metrics import load as load_metric
from pmbench.suites.training import TRAIN, TrainingSplit
from pmbench.types import GenerationConfig, Group, Question, QuestionOutput

# lm-evaluation-harness's defaults for a task's YAML `target_delimiter` (between a prompt and
# its answer) and `fewshot_delimiter` (after each answered few-shot example)
TARGET_DELIMITER, FEWSHOT_DELIMITER = " ", "\n\n"
_SENTINEL = "\ue000"  # a private-use character: marks where the question goes in a chat render
_PROBE = ("Answer: B", "Question")  # text on either side of the context/question boundary


@dataclass
class TextQuestion:
    """One question as text. `gold_output` is what a perfect model would write (the oracle)."""

    doc_id: str
    text: str
    target: Any
    gold_output: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextGroup:
    """Questions that share `context`; `system` is the task description (if any).

    `document` is the long text inside `context` (a reading-comprehension article) that
    --truncate-documents may cut from the end when the group does not fit the model."""

    context: str
    questions: list[TextQuestion]
    system: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    document: str = ""


DATA_ROLES = ("eval", "shots")  # the roles of a YAML `files` list, in order


def data_files(config: dict[str, Any], split: str | None = None) -> dict[str, str]:
    """Role -> file or folder under the data folder that suite `config` reads for `split`
    (default: its YAML split), `{split}` filled in. The YAML's `data.files` maps roles
    ("eval": the questions, "shots": few-shot examples kept apart) to paths; a list names
    them in the order of DATA_ROLES."""
    split = split or config["split"]
    files = config["data"]["files"]
    if isinstance(files, list):
        if len(files) > len(DATA_ROLES):
            raise BadInput(f"suite {config['name']}: data.files lists more than "
                           f"{', '.join(DATA_ROLES)}; name the roles")
        files = dict(zip(DATA_ROLES, files, strict=False))
    return {role: str(path).format(split=split) for role, path in files.items()}


def data_spec(config: dict[str, Any], split: str | None = None) -> data.DataSpec:
    """The files suite `config` reads for `split` (default: its YAML split)."""
    files = list(data_files(config, split).values())
    return data.DataSpec(config["name"], files, config["data"]["hub"])


def chunks(items: Sequence, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


def _positive(name: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and (not isinstance(value, int) or value < minimum):
        raise BadInput(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_selection(config: dict[str, Any], tokenizer: Any, branch: int, limit: int | None,
                     num_fewshot: int | None, split: str | None,
                     subjects: Sequence[str] | None, samples_per_task: int,
                     apply_chat_template: bool) -> None:
    """BadInput for a selection the suite cannot serve, before any data is read."""
    _positive("--branch", branch)
    _positive("--limit", limit)
    _positive("--num-fewshot", num_fewshot, minimum=0)
    _positive("--samples-per-task", samples_per_task)
    name, split = config["name"], split or config["split"]
    if split not in config["splits"]:
        valid = ", ".join(config["splits"])
        raise BadInput(f"suite {name} has no split {split!r}; valid: {valid}")
    if subjects and not config.get("has_subjects"):
        raise BadInput(f"suite {name} has no subjects; drop --subjects")
    if samples_per_task > 1 and "sampling" not in config:
        raise BadInput(f"--samples-per-task applies to sampled suites (humaneval), not {name}")
    if apply_chat_template and not getattr(tokenizer, "chat_template", None):
        raise BadInput("this tokenizer has no chat template: drop --apply-chat-template")


class Suite:
    """A benchmark suite. Subclasses implement `text_groups`, `score` and `aggregate`."""

    requires_code_execution: ClassVar[bool] = False
    keeps_prompt_ids: ClassVar[bool] = True  # samples.jsonl holds each prompt's token ids
    metric: ClassVar[str | None] = None  # the `evaluate` module scoring it (suites/metrics)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Its own (YAML `options:`) options as a run gives them: BadInput when wrong."""

    def __init__(
        self,
        config: dict[str, Any],
        tokenizer: Any,
        *,
        data_dir: str | Path | None = None, branch: int = 1,
        limit: int | None = None, num_fewshot: int | None = None,
        split: str | None = None,
        subjects: Sequence[str] | None = None,
        apply_chat_template: bool = False,
        samples_per_task: int = 1,
        seed: int = 0,
        eos_token_ids: Sequence[int] | None = None,
        context_window: int | None = None,
        max_new_tokens: int | None = None,
        truncate_documents: bool = False,
    ):
        """`context_window`: the positions the model reads (None: no check); a group whose
        context, longest question and `max_new_tokens` (default the YAML's) need more is
        refused here, before any model runs, unless `truncate_documents` lets its document
        be cut from the end to fit (each cut is listed in `record_info`)."""
        _check_selection(config, tokenizer, branch, limit, num_fewshot, split, subjects,
                         samples_per_task, apply_chat_template)
        self.config = config
        self.name: str = config["name"]
        self.tokenizer = tokenizer
        self.branch, self.limit, self.seed = branch, limit, seed
        self.num_fewshot: int = config.get("num_fewshot", 0) if num_fewshot is None else num_fewshot
        self.split: str = split or config["split"]
        self.subjects = list(subjects) if subjects else None
        self.samples_per_task = samples_per_task
        self.context_window = context_window
        self.max_new_tokens: int = max_new_tokens or config["max_new_tokens"]
        self.truncate_documents = truncate_documents
        self.truncated: list[dict[str, Any]] = []  # per cut group: document, tokens, kept
        self.apply_chat_template = apply_chat_template
        self.stop_strings: list[str] = list(config.get("stop", []))
        self.target_delimiter: str = config.get("target_delimiter", TARGET_DELIMITER)
        self.fewshot_delimiter: str = config.get("fewshot_delimiter", FEWSHOT_DELIMITER)
        # The ids that end an answer, fixed here: generation and scoring both read them, so
        # a score never depends on which method was called first. Default: the tokenizer's.
        eos = tokenizer.eos_token_id
        default_eos = () if eos is None else (int(eos),)
        self.eos_token_ids: tuple[int, ...] = (
            default_eos if eos_token_ids is None else tuple(eos_token_ids))
        self.data_spec = data_spec(config, self.split)
        self.data_root = self.resolve_data(data_dir)
        self._cut_cache: dict[str, int] = {}
        self._context_cache: dict[str, list[int]] = {}
        self.groups: list[Group] = self._build_groups()
        if not self.groups:
            raise BadInput(f"suite {self.name}: no questions in {self.data_root} "
                           "for this selection")
        if self.metric:  # loaded now, before any model or timed group: importing is slow
            load_metric(self.metric)

    # --- to implement -------------------------------------------------------------------

    def text_groups(self) -> Iterator[TextGroup]:
        """Groups of at most `self.branch` questions, in data order (read lazily)."""
        raise NotImplementedError

    def score(
        self, question: Question, output: QuestionOutput, *, allow_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """Per-sample fields for samples.jsonl; always "target" and "score". The answer
        ends at the first of `eos_token_ids` (default: the suite's, see `answer_text`).

        A suite scores either per question (override this) or per group (override
        `score_all`, e.g. to compute an `evaluate` metric over a group at once); in the
        second case this scores a group of one."""
        if type(self).score_all is Suite.score_all:
            raise NotImplementedError(f"{type(self).__name__} overrides neither score "
                                      "nor score_all")
        return self.score_all([question], [output], allow_code_execution,
                              eos_token_ids=eos_token_ids)[0]

    def aggregate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """The metrics block of run.json, from score() dicts (also re-read from samples.jsonl)."""
        raise NotImplementedError

    def resolve_data(self, data_dir: str | Path | None) -> Path | None:
        """The folder this suite reads (fetched from the hub where nothing local has it);
        a suite that makes its questions (synthetic) reads none."""
        return data.resolve(self.data_spec, data_dir,
                            lambda root: type(self).fetch(self.config, root))

    @classmethod
    def fetch(cls, config: dict[str, Any], root: Path) -> None:
        """Write the hub copy of this suite's data under `root`, in the local layout."""
        raise BadInput(f"suite {config['name']} cannot be fetched from the hub")

    def training_split(self, heldout_documents: int) -> TrainingSplit:
        """How this suite, built on its YAML `training.split`, divides its questions for
        `pmbench train finetune` (pmbench.suites.training); `heldout_documents`: how many
        documents a suite that holds out whole documents keeps apart. Here every question
        trains and none is held out."""
        files = data_files(self.config, self.split)
        shots = f" (context: {files['shots']} shots)" if "shots" in files else ""
        evaluated = data_files(self.config, self.config["split"])["eval"]
        return TrainingSplit(lambda group, question: TRAIN, {
            "files": files["eval"] + shots, "heldout": None,
            "note": f"evaluation uses {evaluated}"})

    # --- shared behaviour -----------------------------------------------------------------

    def shot(self, question: str, answer: str) -> str:
        """One answered few-shot example, as lm-eval joins it: the question, the target
        delimiter (kept in chat mode too), the answer, the few-shot delimiter."""
        return question + self.target_delimiter + answer + self.fewshot_delimiter

    def data_path(self, role: str = "eval") -> Path:
        """The file or folder of YAML `data.files` role `role`, for this suite's split (a
        glob pattern's first match)."""
        relative = data_files(self.config, self.split)[role]
        return data.locate(self.data_root, relative) or self.data_root / relative

    def score_token_ids(self) -> list[int] | None:
        return None

    def generation(
        self, max_new_tokens: int | None = None, ignore_eos: bool = False,
        eos_token_ids: Sequence[int] = (),
    ) -> GenerationConfig:
        """How runners decode this suite. `eos_token_ids` (when given) replaces the suite's
        in the returned config only: the suite is not changed, and scoring cuts at the ids
        passed to it (or the suite's own), never at ids an earlier call left behind."""
        sampling = self.config.get("sampling", {}) if self.samples_per_task > 1 else {}
        return GenerationConfig(
            max_new_tokens=max_new_tokens or self.config["max_new_tokens"],
            ignore_eos=ignore_eos,
            stop_strings=list(self.stop_strings),
            eos_token_ids=list(eos_token_ids or self.eos_token_ids),
            score_token_ids=self.score_token_ids(),
            temperature=float(sampling.get("temperature", 0.0)),
            top_p=float(sampling.get("top_p", 1.0)),
            seed=self.seed,
        )

    def answer_text(
        self, output: QuestionOutput, eos_token_ids: Sequence[int] | None = None
    ) -> str:
        """The output as scored: up to the first EOS token (`eos_token_ids`, default the
        suite's), then up to the first stop string.

        Under --ignore-eos a runner keeps generating past both; the score must not see that.
        """
        eos = set(self.eos_token_ids if eos_token_ids is None else eos_token_ids)
        cut = next((i for i, t in enumerate(output.output_ids) if t in eos), None)
        text = output.output_text
        if cut is not None:
            text = self.tokenizer.decode(output.output_ids[:cut], skip_special_tokens=True)
        return cut_at_stops(text, self.stop_strings)

    def score_all(
        self, questions: Sequence[Question], outputs: Sequence[QuestionOutput],
        allow_code_execution: bool = False, allow_unisolated_code_execution: bool = False,
        eos_token_ids: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """`score` for each (question, output); pass the run's `eos_token_ids`
        (GenerationConfig.eos_token_ids) when they differ from the suite's."""
        return [
            self.score(q, o, allow_code_execution=allow_code_execution,
                       eos_token_ids=eos_token_ids)
            for q, o in zip(questions, outputs, strict=True)
        ]

    def record_info(self) -> dict[str, Any]:
        n_questions = sum(len(g.questions) for g in self.groups)
        return {
            "suite": self.name,
            "split": self.split,
            "num_fewshot": self.num_fewshot,
            "apply_chat_template": self.apply_chat_template,
            "data_source": str(self.data_root),
            "data_files": self.data_spec.files,
            "subjects": self.subjects,
            "samples_per_task": self.samples_per_task,
            "stop_strings": self.stop_strings,
            "default_max_new_tokens": self.config["max_new_tokens"],
            "n_groups": len(self.groups),
            "n_questions": n_questions,
            "context_window": self.context_window,
            "truncate_documents": self.truncate_documents,
            "truncated_documents": list(self.truncated),
        }

    # --- tokenization ----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _bos_ids(self) -> list[int]:
        """What the tokenizer adds in front of a text by itself (BOS for Llama), else []."""
        if self.apply_chat_template:  # templates write their own BOS into the text
            return []
        plain = self.encode("a")
        full = list(self.tokenizer.encode("a"))
        return full[: full.index(plain[0])] if plain and plain[0] in full else []

    def _wrap(self, group: TextGroup) -> tuple[str, str]:
        """(context text, text that follows every question) with or without the chat template."""
        if not self.apply_chat_template:
            return group.system + group.context, ""
        messages = [{"role": "system", "content": group.system}] if group.system else []
        messages.append({"role": "user", "content": group.context + _SENTINEL})
        rendered = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        prefix, _, suffix = rendered.partition(_SENTINEL)
        return prefix, suffix

    def _whitespace_cut(self, ws: str) -> int:
        """How many chars of the context's trailing whitespace `ws` stay in the context."""
        if ws not in self._cut_cache:
            left, right = _PROBE[0] + ws, _PROBE[1]
            joint = self.encode(left + right)
            self._cut_cache[ws] = next(
                (k for k in range(len(ws), -1, -1)
                 if self.encode(_PROBE[0] + ws[:k]) + self.encode(ws[k:] + right) == joint),
                len(ws),
            )
        return self._cut_cache[ws]

    def _split_context(self, context: str) -> tuple[str, str]:
        body = context.rstrip()
        ws = context[len(body):]
        if not body or not ws:
            return context, ""
        k = self._whitespace_cut(ws)
        return body + ws[:k], ws[k:]

    def _context_ids(self, text: str) -> list[int]:
        if text not in self._context_cache:
            self._context_cache[text] = self._bos_ids() + self.encode(text)
        return self._context_cache[text]

    def _build_groups(self) -> list[Group]:
        groups: list[Group] = []
        # --limit counts documents, as in lm-eval; a document yields samples_per_task questions
        left = None if self.limit is None else self.limit * self.samples_per_task
        for tg in self.text_groups():
            items = tg.questions if left is None else tg.questions[:left]
            if not items:
                continue
            groups.append(window.fit(self, replace(tg, questions=items), len(groups)))
            if left is not None:
                left -= len(items)
                if left == 0:
                    break
        return groups

    def token_group(self, tg: TextGroup, group_id: int) -> Group:
        """The token-level group of `tg` (see the module's docstring for the rules)."""
        context, suffix = self._wrap(tg)
        context, head = self._split_context(context)
        questions = []
        for q in tg.questions:
            prompt = head + q.text + suffix
            meta = {"prompt_text": prompt, "gold_output": q.gold_output, **q.meta}
            questions.append(Question(q.doc_id, self.encode(prompt), q.target, meta))
        meta = {"context_text": context, **tg.meta}
        return Group(group_id, self._context_ids(context), questions, meta)
