"""Sampling n completions per prompt, behind one call for every backend.

``sample(...)`` returns texts, completion token ids and the per-token
log-probabilities (and entropies) of the *sampling* distribution, i.e. after
temperature and top-p. The ``"hf"`` backend runs transformers' ``generate``
(KV cache, left padding) on CPU or GPU; the ``"vllm"`` backend is imported
lazily and only on a machine with a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from rlnb.metrics import token_entropy

BACKENDS = ("hf", "vllm")


@dataclass
class Rollouts:
    """Flat list of completions; ``prompt_index[i]`` says which prompt made completion ``i``."""

    prompts: list[str]
    prompt_index: np.ndarray
    texts: list[str]
    completion_ids: list[list[int]]
    logprobs: list[np.ndarray]
    entropies: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.completion_ids])


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: str | Sequence[str],
    n: int = 1,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 512,
    seed: int = 0,
    backend: str = "hf",
    progress: bool = True,
) -> Rollouts:
    """Draw ``n`` completions for each prompt; a single string is one prompt (a str is
    also a sequence, of characters, which would otherwise be sampled one by one).

    ``batch_size`` counts sequences, not prompts: one ``generate`` call runs
    ``batch_size`` completions, so a small model on a CPU is kept busy. Each
    batch is seeded from ``seed`` and its index, so the result does not depend
    on what ran before in the process.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampling backend {backend!r}: choose one of {BACKENDS}")
    if n < 1 or temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"need n >= 1, temperature > 0 and 0 < top_p <= 1 (got {n}, {temperature}, {top_p})")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if backend == "vllm":
        return _sample_vllm(model, prompts, n, max_new_tokens, temperature, top_p, seed)
    return _sample_hf(model, tokenizer, prompts, n, max_new_tokens, temperature, top_p, batch_size, seed, progress)


def token_logprobs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Teacher-forced ``log p(token_t | tokens_<t)`` for every token after the first: (B, T - 1), float32.

    The scoring counterpart of :func:`sample`'s sampling log-probabilities: it
    scores given text (an expert trace, a fixed probe) instead of sampling it.
    Positions that are padding under ``attention_mask`` are zero.
    """
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    return logp if attention_mask is None else logp * attention_mask[:, 1:]


def text_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`token_logprobs` of whole texts, tokenized and padded as the tokenizer pads (left for the tiny world).

    Returns the (B, T - 1) log-probabilities and the encoding, whose attention mask
    says which positions are padding.
    """
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    return token_logprobs(model, batch["input_ids"], batch["attention_mask"]), batch


def _sample_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    seed: int,
    progress: bool,
) -> Rollouts:
    flat = [i for i in range(len(prompts)) for _ in range(n)]
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        return_dict_in_generate=True,
        output_scores=True,
    )
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    texts: list[str] = []
    ids_out: list[list[int]] = []
    logps_out: list[np.ndarray] = []
    ents_out: list[np.ndarray] = []
    try:
        batches = range(0, len(flat), batch_size)
        for b, start in enumerate(tqdm(batches, desc="sampling", disable=not progress, leave=False)):
            chunk = [prompts[i] for i in flat[start : start + batch_size]]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
            torch.manual_seed(seed * 100_003 + b)
            with torch.inference_mode():
                out = model.generate(**enc, generation_config=config)
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            scores = torch.stack(out.scores, dim=1).float()  # [B, T, V], processed logits
            logp_all = torch.log_softmax(scores, dim=-1)
            token_logp = logp_all.gather(-1, new.unsqueeze(-1)).squeeze(-1)  # [B, T]
            ent = token_entropy(scores)  # [B, T]
            for row in range(new.shape[0]):
                length = _completion_length(new[row], tokenizer.eos_token_id, tokenizer.pad_token_id)
                ids = new[row, :length].tolist()
                ids_out.append(ids)
                texts.append(tokenizer.decode(ids, skip_special_tokens=True))
                logps_out.append(token_logp[row, :length].cpu().numpy())
                ents_out.append(ent[row, :length].cpu().numpy())
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return Rollouts(
        prompts=[prompts[i] for i in flat],
        prompt_index=np.array(flat),
        texts=texts,
        completion_ids=ids_out,
        logprobs=logps_out,
        entropies=ents_out,
    )


def _completion_length(tokens: torch.Tensor, eos_id: int, pad_id: int) -> int:
    """Tokens up to and including the first EOS (the EOS is part of the sampled completion)."""
    hits = (tokens == eos_id).nonzero()
    if len(hits):
        return int(hits[0]) + 1
    return int((tokens != pad_id).sum())


def require_vllm() -> None:
    """Raise a clear error that says what to use instead when vLLM cannot run here."""
    if not torch.cuda.is_available():
        raise RuntimeError(
            "the 'vllm' backend needs a CUDA GPU and this machine has none: "
            "use backend='hf' (the default), or the 'ci'/'full' presets on a CPU"
        )
    if importlib.util.find_spec("vllm") is None:
        raise RuntimeError(
            "the 'vllm' backend needs vLLM, which is not installed: "
            "`pip install -e '.[gpu]'`, or use backend='hf'"
        )


@functools.lru_cache(maxsize=1)
def _vllm_engine(path: str):
    """One vLLM engine per model folder, kept across calls: starting one takes tens of seconds."""
    from vllm import LLM

    return LLM(model=path, gpu_memory_utilization=0.5)


def _sample_vllm(
    model: PreTrainedModel | str,
    prompts: Sequence[str],
    n: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
) -> Rollouts:
    """vLLM sampling; ``model`` is a model folder or hub id (vLLM loads its own weights)."""
    require_vllm()
    from vllm import SamplingParams  # lazy: GPU only

    path = model if isinstance(model, str) else model.name_or_path
    llm = _vllm_engine(path)
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, logprobs=0, seed=seed)
    outputs = llm.generate(list(prompts), params)
    flat, texts, ids_out, logps_out = [], [], [], []
    for i, request in enumerate(outputs):
        for comp in request.outputs:
            flat.append(i)
            texts.append(comp.text)
            ids_out.append(list(comp.token_ids))
            logps_out.append(np.array([lp[t].logprob for lp, t in zip(comp.logprobs, comp.token_ids)]))
    return Rollouts([prompts[i] for i in flat], np.array(flat), texts, ids_out, logps_out)
