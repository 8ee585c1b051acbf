"""Cluster names: from the keywords (default) or from an OpenAI-compatible chat model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import openai
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential


class Namer(Protocol):
    def name(
        self, keywords: Sequence[str], representatives: Sequence[str], language_code: str
    ) -> str: ...


class KeywordNamer:
    """Names a cluster by its top distinct keyword words joined with underscores (`card_lost`)."""

    def __init__(self, max_words: int = 3) -> None:
        self._max_words = max_words

    def name(
        self, keywords: Sequence[str], representatives: Sequence[str], language_code: str
    ) -> str:
        picked: list[str] = []
        for keyword in keywords:  # keywords may be phrases ("bank transfer"): take their words
            for word in keyword.split():
                if word not in picked and len(picked) < self._max_words:
                    picked.append(word)
        return "_".join(picked) if picked else "cluster"


_RETRYABLE = (
    openai.APIConnectionError,
    openai.APITimeoutError,
    openai.RateLimitError,
    openai.InternalServerError,
)


class OpenAINamer:
    """Asks a chat model for a short name; falls back to the keyword name when it fails."""

    def __init__(self, *, base_url: str | None, api_key: str, model: str) -> None:
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=30.0
        )
        self._model = model
        self._fallback = KeywordNamer()

    @retry(
        retry=retry_if_exception_type(_RETRYABLE),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.2, max=2.0),
        reraise=True,
    )
    def _ask(self, prompt: str) -> str:
        response = self._client.chat.completions.create(
            model=self._model,
            messages=[
                {
                    "role": "system",
                    "content": "You name clusters of user utterances. Answer with a short name "
                    "(2 to 4 words, snake_case, no punctuation) in the utterances' language.",
                },
                {"role": "user", "content": prompt},
            ],
            temperature=0.0,
        )
        content = response.choices[0].message.content if response.choices else None
        return (content or "").strip()

    def name(
        self, keywords: Sequence[str], representatives: Sequence[str], language_code: str
    ) -> str:
        prompt = (
            f"Language: {language_code}\nKeywords: {', '.join(keywords)}\nExamples:\n"
            + "\n".join(f"- {r}" for r in representatives)
        )
        try:
            answer = self._ask(prompt)
        except openai.OpenAIError:
            return self._fallback.name(keywords, representatives, language_code)
        answer = answer.splitlines()[0].strip().strip("\"'`") if answer else ""
        return answer[:80] or self._fallback.name(keywords, representatives, language_code)
