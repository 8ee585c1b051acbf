"""The openai provider: labelled data from an OpenAI-compatible chat-completions API, through
the official `openai` SDK.

Its base URL, model and key are the orchestrator's settings, handed to the workload in the
platform's part of its config (never the request's). Each call asks for at most `batch` rows
as one JSON object (`{"samples": [...]}`, JSON mode): token rows as `{"tokens": [...],
"tags": [...]}`, text rows as `{"text": "..."}` for one label. Every row is checked (one tag
per token, tags among the task's, no empty text); bad rows are dropped and counted in one
warning. A call the provider answers with 429, a 5xx, a timeout or a broken connection is
retried with exponential backoff by tenacity (the SDK's own retries are off: one retry
mechanism); a refusal (401, 403, 400, 404, or a 429 that outlasts the retries) ends the
run with `ProviderRefused`, saying what the provider said and what to check.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import openai
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from trainyard.trainers.datagen.tasks import (
    OUTSIDE,
    Entity,
    Generated,
    GenerationError,
    TextRow,
    TextTask,
    TokenRow,
    TokenTask,
    plain_tag,
)

NAME = "openai"
#: Rows asked for in one call.
BATCH = 25
#: Sample sentences shown in a prompt.
SHOWN_SAMPLES = 10
SHOWN_EXAMPLES = 5
T = TypeVar("T")

_RETRIED = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)


class ProviderRefused(GenerationError):
    """The provider refused the request (bad key, no access, unknown model, rate limit)."""


@dataclass(frozen=True)
class OpenAISettings:
    base_url: str
    model: str
    api_key: str
    max_attempts: int = 4
    retry_initial_seconds: float = 1.0
    timeout_seconds: float = 60.0
    concurrency: int = 4


class OpenAIProvider:
    name = NAME

    def __init__(self, settings: OpenAISettings, seed: int = 0) -> None:
        self.settings = settings
        self.seed = seed
        self._client = openai.AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key,
            max_retries=0,
            timeout=settings.timeout_seconds,
        )

    async def close(self) -> None:
        await self._client.close()

    @property
    def described(self) -> str:
        return f"openai (model {self.settings.model})"

    # ---- one call ----------------------------------------------------------------------------

    async def _ask(self, system: str, user: str) -> Any:
        """The reply's JSON object (None when the reply is not one)."""
        s = self.settings
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_RETRIED),
                stop=stop_after_attempt(s.max_attempts),
                wait=wait_exponential(multiplier=s.retry_initial_seconds, max=30),
                reraise=True,
            ):
                with attempt:
                    answer = await self._client.chat.completions.create(
                        model=s.model,
                        messages=[
                            {"role": "system", "content": system},
                            {"role": "user", "content": user},
                        ],
                        response_format={"type": "json_object"},
                        seed=self.seed,
                        temperature=1.0,
                    )
        except openai.APIStatusError as exc:
            raise ProviderRefused(_refusal(exc, s)) from exc
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ProviderRefused(
                f"the openai provider could not be reached after {s.max_attempts} attempts "
                f"({type(exc).__name__}); check the orchestrator's openai_base_url setting"
            ) from exc
        content = answer.choices[0].message.content if answer.choices else None
        return _json_object(content or "")

    async def _batches(
        self, count: int, ask: Callable[[int], Awaitable[list[T]]]
    ) -> tuple[list[T], int]:
        """`count` rows asked for in batches, a few calls at a time; a batch that comes back
        short is asked again (at most as many extra calls as there were batches)."""
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def one(n: int) -> list[T]:
            async with gate:
                return await ask(n)

        rows: list[T] = []
        calls = 0
        budget = 2 * math.ceil(count / BATCH)
        while len(rows) < count and calls < budget:
            missing = count - len(rows)
            sizes = [min(BATCH, missing - i) for i in range(0, missing, BATCH)]
            sizes = sizes[: budget - calls]
            calls += len(sizes)
            for got in await asyncio.gather(*(one(n) for n in sizes)):
                rows += got
        return rows[:count], calls

    # ---- tokens ------------------------------------------------------------------------------

    async def tokens(self, task: TokenTask) -> Generated[TokenRow]:
        names = task.tag_names
        dropped: list[str] = []
        system = (
            "You write training data for a token-classification (named-entity) model. Answer "
            'with one JSON object only: {"samples": [{"tokens": [...], "tags": [...]}]}. '
            "Split each sentence into tokens on whitespace (punctuation may be its own token); "
            f"give exactly one tag per token: one of {', '.join(names)}, or {OUTSIDE} for a "
            "token outside any entity. Every sentence is new and realistic, and varied in "
            "wording, length and values."
        )

        async def ask(n: int) -> list[TokenRow]:
            user = _token_prompt(task, n)
            reply = await self._ask(system, user)
            return _token_rows(reply, names, dropped)

        rows, calls = await self._batches(task.sentences, ask)
        return _finish(rows, task.sentences, calls, dropped, self.described)

    # ---- text --------------------------------------------------------------------------------

    async def texts(self, task: TextTask) -> Generated[TextRow]:
        dropped: list[str] = []
        rows: list[TextRow] = []
        calls = 0
        system = (
            "You write training data for a text-classification model. Answer with one "
            'JSON object only: {"samples": [{"text": "..."}]}. Each text is new, realistic '
            "and varied, and belongs to the label you are given."
        )
        for label in task.labels:

            async def ask(n: int, label: Entity = label) -> list[TextRow]:
                reply = await self._ask(system, _text_prompt(task, label, n))
                return _text_rows(reply, label.name, dropped)

            got, made = await self._batches(task.samples_per_label, ask)
            rows += got
            calls += made
        wanted = task.samples_per_label * len(task.labels)
        return _finish(rows, wanted, calls, dropped, self.described)


def _finish(
    rows: list[Any], wanted: int, calls: int, dropped: list[str], described: str
) -> Generated[Any]:
    warnings = []
    if dropped:
        warnings.append(
            f"{described} returned {len(dropped)} unusable sample(s), left out; e.g. "
            + "; ".join(dropped[:3])
        )
    if not rows:
        raise GenerationError(
            f"{described} returned no usable samples in {calls} call(s)"
            + (f": {dropped[0]}" if dropped else "")
        )
    if len(rows) < wanted:
        warnings.append(f"{described} produced {len(rows)} of the {wanted} samples asked for")
    return Generated(rows, NAME, warnings)


def _describe(entity: Entity) -> str:
    line = f"- {entity.name}"
    if entity.description:
        line += f": {entity.description}"
    if entity.examples:
        line += " (e.g. " + "; ".join(entity.examples[:SHOWN_EXAMPLES]) + ")"
    return line


def _token_prompt(task: TokenTask, n: int) -> str:
    parts = [f"Task: {task.task_prompt}", "Tags:", *(_describe(t) for t in task.tags)]
    if task.samples:
        parts.append("Sample sentences (tokens/tags):")
        for s in task.samples[:SHOWN_SAMPLES]:
            parts.append(json.dumps({"tokens": list(s.tokens), "tags": list(s.tags)}))
    parts.append(f"Write {n} new sentences.")
    return "\n".join(parts)


def _text_prompt(task: TextTask, label: Entity, n: int) -> str:
    others = ", ".join(x.name for x in task.labels if x.name != label.name)
    return "\n".join(
        [
            f"Task: {task.task_prompt}",
            "Label:",
            _describe(label),
            f"(The other labels are: {others}.)" if others else "",
            f"Write {n} new texts with the label {label.name}.",
        ]
    )


def _json_object(content: str) -> Any:
    text = content.strip()
    if text.startswith("```"):  # a fenced reply despite JSON mode
        text = text.strip("`")
        text = text[text.find("{") :] if "{" in text else text
    try:
        return json.loads(text)
    except ValueError:
        return None


def _samples(reply: Any, dropped: list[str]) -> list[Any]:
    if not isinstance(reply, dict) or not isinstance(reply.get("samples"), list):
        dropped.append('a reply was not a JSON object with a "samples" list')
        return []
    return list(reply["samples"])


def _token_rows(reply: Any, names: Sequence[str], dropped: list[str]) -> list[TokenRow]:
    rows = []
    for item in _samples(reply, dropped):
        tokens = item.get("tokens") if isinstance(item, dict) else None
        tags = item.get("tags") if isinstance(item, dict) else None
        if not isinstance(tokens, list) or not isinstance(tags, list) or not tokens:
            dropped.append("a sample without tokens and tags lists")
            continue
        if len(tokens) != len(tags):
            dropped.append(f"{len(tokens)} tokens with {len(tags)} tags")
            continue
        out_tokens: list[str] = []
        out_tags: list[str] = []
        problem = ""
        for token, tag in zip(tokens, tags, strict=True):
            entity = plain_tag(tag, names) if isinstance(tag, str) else None
            if entity is None:
                problem = f"unknown tag {str(tag)[:40]!r}"
                break
            words = str(token).split() if isinstance(token, (str, int, float)) else []
            if not words:
                problem = "an empty token"
                break
            out_tokens += words  # a token holding spaces becomes several, each with its tag
            out_tags += [entity] * len(words)
        if problem:
            dropped.append(problem)
            continue
        rows.append(TokenRow(tuple(out_tokens), tuple(out_tags)))
    return rows


def _text_rows(reply: Any, label: str, dropped: list[str]) -> list[TextRow]:
    rows = []
    for item in _samples(reply, dropped):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str) or not text.strip():
            dropped.append("a sample without text")
            continue
        rows.append(TextRow(" ".join(text.split()), label))
    return rows


def _refusal(exc: openai.APIStatusError, s: OpenAISettings) -> str:
    status = exc.status_code
    detail = _provider_message(exc)
    hint = {
        401: "check the orchestrator's openai_api_key (or OPENAI_API_KEY)",
        403: "the key has no access to this model or API",
        404: f"check the orchestrator's openai_model ({s.model!r}) and openai_base_url",
        429: f"rate limited or out of quota after {s.max_attempts} attempts; try again later",
    }.get(status, "")
    message = f"the openai provider refused the request ({status}): {detail}"
    return f"{message}; {hint}" if hint else message


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:500]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:500]
    return str(exc.message)[:500]
