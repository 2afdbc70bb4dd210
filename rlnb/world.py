"""The tiny reasoning world: digit-wise addition with a verifiable answer, and a base with three regimes.

A problem is the sum of two ``n``-digit numbers; ``n`` (3..7) is the difficulty
level. The task prompt is ``"47+85="``. A completion either answers directly
(``"A132"``) or first works digit by digit from the right, carrying
(``"7+5+0=12;4+8+1=13;A132"``), then answers. A second prompt form,
``"47+85:"`` (:func:`worked_prompt`), asks for the worked solution.

Why this world (see the field notes' calibration probes):

* every step of the worked trace is a single-digit sum with a carry, an
  operation a 1M-parameter model learns almost without error, so a base that
  *chooses* to work a problem out is reliable, while one that answers directly
  guesses (it cannot add long numbers in one token-step);
* the pretraining corpus (:func:`corpus_document`) teaches the procedure under
  the worked-solution prompt at 3-6 digits, but under the task prompt works
  problems out only at 3 digits (a fifth of the time) and answers 4-6 digits
  directly; 7 digits never appear. So the base *knows* the procedure at 3-6
  digits and *chooses* it only at 3: the three regimes of :data:`REGIMES`,
  inside (3), latent (4-6) and outside (7), measured in notebook 00;
* the expert solver (:func:`expert_trace`) solves every level: the stand-in for
  the reasoning traces that LUFFY mixes into its groups.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

LEVELS: tuple[int, ...] = (3, 4, 5, 6, 7)
"""Difficulty levels: the number of digits of each addend."""

REGIMES: dict[int, str] = {3: "inside", 4: "latent", 5: "latent", 6: "latent", 7: "outside"}
"""Each level's place relative to the shipped base's support, as measured in notebook 00 (and tested):

* ``inside``: the base solves it sometimes under the task prompt and far more often at many tries;
* ``latent``: asked for its worked solution the base solves it, under the task prompt it almost never
  chooses to work it out, so its sampled groups are almost all wrong;
* ``outside``: the base cannot do it in either form (it never saw a problem of this size).
"""

def levels_in(regime: str) -> tuple[int, ...]:
    """The levels of one regime, easiest first."""
    if regime not in ("inside", "latent", "outside"):
        raise ValueError(f"unknown regime {regime!r}: choose 'inside', 'latent' or 'outside'")
    return tuple(lvl for lvl in LEVELS if REGIMES[lvl] == regime)


EVAL_SEED = 2026
"""The seed of every held-out evaluation set: fixed, so that runs of different training seeds are judged
on the same problems."""

TASK_CHARS = "0123456789+=;A:"
"""Every character a prompt or a completion of the task uses."""

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ANSWER_MARK = "A"
WORKED_MARK = ":"
STEP_SEP = ";"

# A well-formed completion: zero or more digit steps, then the answer.
# ASCII digits only: ``\d`` would also accept unicode digits such as "٣".
_STEP = r"[0-9]\+[0-9]\+[01]=[0-9]{1,2}"
FORMAT_RE = re.compile(rf"(?:{_STEP};)*A[0-9]{{1,8}}")
STEPS_RE = re.compile(rf"(?:{_STEP};)+A")


@dataclass(frozen=True)
class Problem:
    """One addition problem; ``answer`` is the exact integer sum."""

    a: int
    b: int
    level: int

    @property
    def prompt(self) -> str:
        return f"{self.a}+{self.b}="

    @property
    def answer(self) -> int:
        return self.a + self.b


def worked_prompt(problem: Problem) -> str:
    """The worked-solution prompt ``"47+85:"``: the form under which the base was taught its procedure.

    Sampling from it measures what the base *knows*; sampling from
    :attr:`Problem.prompt` measures what it *chooses* to do.
    """
    return f"{problem.a}+{problem.b}{WORKED_MARK}"


def is_test_pair(a: int, b: int) -> bool:
    """Deterministic held-out split: one pair in five is reserved for evaluation.

    A hash (not ``random``) so that the split is the same in every process and
    every Python version, and training never sees an evaluation problem.
    """
    digest = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=2).digest()
    return int.from_bytes(digest, "big") % 5 == 0


def sample_problem(level: int, rng: random.Random, split: str = "train") -> Problem:
    """Draw one problem of ``level`` digits from the ``"train"`` or ``"test"`` split."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}: the world has levels {LEVELS}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    lo, hi = 10 ** (level - 1), 10**level - 1
    while True:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if is_test_pair(a, b) == (split == "test"):
            return Problem(a, b, level)


def make_problems(
    levels: Sequence[int], per_level: int, seed: int, split: str = "test"
) -> list[Problem]:
    """``per_level`` distinct problems for each level, in level order, seeded."""
    problems: list[Problem] = []
    for level in levels:
        rng = random.Random(f"{seed}-{split}-{level}")  # a level's problems do not depend on the others asked
        seen: set[tuple[int, int]] = set()
        while len(seen) < per_level:
            p = sample_problem(level, rng, split)
            if (p.a, p.b) not in seen:
                seen.add((p.a, p.b))
                problems.append(p)
    return problems


def expert_trace(a: int, b: int) -> str:
    """The expert solver: a correct digit-by-digit trace, right to left, then the answer.

    This is the off-policy teacher of notebook 02, the stand-in for the
    DeepSeek-R1 traces that LUFFY mixes into its groups.
    """
    da, db = str(a)[::-1], str(b)[::-1]
    width = max(len(da), len(db))
    steps, carry = [], 0
    for i in range(width):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return STEP_SEP.join(steps) + STEP_SEP + direct_answer(a, b)


def trace_prefix(trace: str, share: float) -> str:
    """The first ``share`` of a trace's column steps with their separators (``7+5+0=12;``), never its answer.

    The guidance text of notebook 07 (:mod:`rlnb.guidance`) and of the hinted evaluation forms: a share
    above 0 gives at least one step, and the number of steps is rounded half up.
    """
    steps = trace.split(STEP_SEP)[:-1]  # the last part is the answer
    if share <= 0 or not steps:
        return ""
    count = min(len(steps), max(1, math.floor(share * len(steps) + 0.5)))
    return STEP_SEP.join(steps[:count]) + STEP_SEP


def direct_answer(a: int, b: int) -> str:
    """The completion that states the answer without working."""
    return f"{ANSWER_MARK}{a + b}"


def uses_steps(completion: str) -> bool:
    """Whether a completion starts by writing at least one digit step."""
    return STEPS_RE.match(completion) is not None


_PROMPT_RE = re.compile(rf"([0-9]+)\+([0-9]+)[=:]")


def operands(prompt: str) -> tuple[int, int]:
    """``(a, b)`` of a task prompt ``"a+b="`` (or a worked prompt ``"a+b:"``)."""
    match = _PROMPT_RE.fullmatch(prompt)
    if match is None:
        raise ValueError(f"{prompt!r} is not a tiny-world prompt such as '47+85='")
    return int(match.group(1)), int(match.group(2))


def works_the_problem(completion: str, a: int, b: int) -> bool:
    """Whether a completion opens with the problem's own digit steps, then the answer mark.

    One step per digit column of ``a`` and ``b``, right to left as :func:`expert_trace` writes them:
    step i adds the i-th digits (0 past the shorter number) and a carry of 0 or 1. :func:`uses_steps`
    alone would pay for steps of any digits, such as ``0+0+0=0;A5``. What a step states as its sum,
    and whether its carry follows from the previous step, are not checked: a slip there is an
    arithmetic error, which the accuracy reward judges, not a step left out.
    """
    match = STEPS_RE.match(completion)
    if match is None:
        return False
    steps = match.group()[: -len(STEP_SEP + ANSWER_MARK)].split(STEP_SEP)
    da, db = str(a)[::-1], str(b)[::-1]
    if len(steps) != max(len(da), len(db)):
        return False
    columns = [(da[i : i + 1] or "0", db[i : i + 1] or "0") for i in range(len(steps))]
    return all(tuple(step.split("+")[:2]) == column for step, column in zip(steps, columns))


def token_role(tokens: Sequence[str], i: int, eos: str) -> str:
    """What token ``i`` of a world completion does: where a forking token sits tells what is being decided.

    The first token decides between writing steps and guessing; later tokens are
    step tokens, the answer marker, answer digits, or the end of sequence.
    """
    if tokens[i] == eos:
        return "end of sequence"
    if i == 0:
        return "first token (steps or guess?)"
    if tokens[i] == ANSWER_MARK:
        return "answer marker A"
    return "answer digit" if ANSWER_MARK in tokens[:i] else "step token"


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level Hugging Face fast tokenizer, built locally (no download).

    Every task character is one token; a ``<s>`` is prepended to every encoded
    text so that prompts tokenized by TRL look exactly like pretraining data.
    The chat template simply concatenates message contents, so code that
    formats conversational prompts (the ``gpu`` path) also runs on this model.
    """
    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials + list(TASK_CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=256,
    )
    fast.chat_template = (
        "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    )
    return fast


# --------------------------------------------------------------------------- model


@dataclass
class PretrainRecipe:
    """Everything that determines the shipped base model; saved beside it.

    The corpus mixes two prompt forms per level. ``task_mix`` and
    ``worked_mix`` give each level's share of the task-prompt (``a+b=``) and
    worked-prompt (``a+b:``) documents; ``task_steps`` is the fraction of a
    level's task-prompt documents that write the worked trace (the rest answer
    directly). A level absent from both mixes is never seen: outside.
    """

    seed: int = 0
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    worked_fraction: float = 0.5
    task_mix: dict[int, float] = field(default_factory=lambda: {3: 1.0, 4: 0.15, 5: 0.15, 6: 0.15})
    task_steps: dict[int, float] = field(default_factory=lambda: {3: 0.2})
    worked_mix: dict[int, float] = field(default_factory=lambda: {3: 1.0, 4: 1.0, 5: 1.5, 6: 2.0})
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 128
    length_buckets: int = 4


def build_model(recipe: PretrainRecipe, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
    """A freshly initialised tiny Qwen2 (a real transformers architecture, ~1M parameters)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads,
        max_position_embeddings=recipe.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(recipe.seed)
    return Qwen2ForCausalLM(config)


def _draw_level(rng: random.Random, mix: dict[int, float]) -> int:
    levels = sorted(mix)
    return rng.choices(levels, weights=[mix[lvl] for lvl in levels])[0]


def corpus_document(rng: random.Random, recipe: PretrainRecipe) -> tuple[str, str]:
    """One pretraining (prompt, completion) pair.

    A ``worked_fraction`` of documents use the worked-solution prompt and are
    always followed by the expert trace: the base *learns the procedure* at
    every level of ``worked_mix``. The task-prompt documents write the trace
    only at the ``task_steps`` levels (and only that fraction of the time);
    everywhere else they state the answer directly. A tiny model cannot compute
    a multi-digit sum in one token-step, so it learns to *guess* there: near
    misses that give the inside level its pass@1/pass@k gap and that make the
    latent levels' direct answers almost never right.
    """
    if rng.random() < recipe.worked_fraction:
        p = sample_problem(_draw_level(rng, recipe.worked_mix), rng, "train")
        return worked_prompt(p), expert_trace(p.a, p.b)
    p = sample_problem(_draw_level(rng, recipe.task_mix), rng, "train")
    if rng.random() < recipe.task_steps.get(p.level, 0.0):
        return p.prompt, expert_trace(p.a, p.b)
    return p.prompt, direct_answer(p.a, p.b)


def encode_batch(
    tokenizer: PreTrainedTokenizerFast, pairs: Sequence[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels``; the loss covers completions only."""
    rows, labels = [], []
    for prompt, completion in pairs:
        p_ids = tokenizer(prompt)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(p_ids + c_ids)
        labels.append([-100] * len(p_ids) + c_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def _accumulate_gradient(
    model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[str, str]], buckets: int
) -> float:
    """Backpropagate the mean completion-token loss of ``pairs``; return it.

    Documents differ in length fivefold (a direct answer against a 6-digit
    trace), so padding one batch to its longest document wastes most of the
    compute. The batch is sorted by length and cut into ``buckets`` micro-batches,
    each padded only to its own longest document; each micro-batch's loss is
    weighted by its share of the batch's completion tokens, so the gradient is
    that of the whole batch's token mean.
    """
    pairs = sorted(pairs, key=lambda pc: len(pc[0]) + len(pc[1]))
    size = math.ceil(len(pairs) / buckets)
    batches = [encode_batch(tokenizer, pairs[i:i + size]) for i in range(0, len(pairs), size)]
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    total = sum(counts)
    loss_sum = 0.0
    for batch, count in zip(batches, counts):
        loss = model(**batch, use_cache=False).loss * (count / total)
        loss.backward()
        loss_sum += loss.item()
    return loss_sum


@dataclass
class PretrainResult:
    model: Qwen2ForCausalLM
    tokenizer: PreTrainedTokenizerFast
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def pretrain_base(
    recipe: PretrainRecipe | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> PretrainResult:
    """The seeded recipe that made the shipped base: one call, CPU friendly.

    Plain next-token pretraining (AdamW, linear warm-up then cosine decay) on
    :func:`corpus_document` samples. When ``out_dir`` is given the model, the
    tokenizer and the recipe are written there with ``save_pretrained``.
    """
    recipe = recipe or PretrainRecipe()
    tokenizer = build_tokenizer()
    model = build_model(recipe, tokenizer)
    rng = random.Random(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)

    def lr_at(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        frac = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(recipe.steps), desc="pretraining", disable=not progress)
    for step in bar:
        loss = _accumulate_gradient(model, tokenizer, [corpus_document(rng, recipe) for _ in range(recipe.batch_size)],
                                    recipe.length_buckets)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    result = PretrainResult(model, tokenizer, losses, time.perf_counter() - start)
    if out_dir is not None:
        save_base(result, recipe, Path(out_dir))
    return result


def save_base(result: PretrainResult, recipe: PretrainRecipe, out_dir: Path) -> None:
    """Write model, tokenizer and recipe in the standard ``save_pretrained`` layout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(out_dir)
    result.tokenizer.save_pretrained(out_dir)
    meta = {"recipe": asdict(recipe), "seconds": round(result.seconds, 1),
            "final_loss": sum(result.losses[-50:]) / max(1, len(result.losses[-50:]))}
    (out_dir / "recipe.json").write_text(json.dumps(meta, indent=2))
