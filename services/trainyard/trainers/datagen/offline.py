"""The offline provider: labelled data with no network, from templates and realistic values.

Tokens. Each sample sentence becomes a template: its runs of one entity become slots
(`call {NAME} at {PHONE}`), its other tokens stay; `templates_per_sample` variants of each add
a neutral opening or closing (tagged outside). A tag's sentences come from the templates that
show it (SAMPLE_SHARE of them) and from generic carrier sentences (`please note {X} for the
record .`), which are all a tag no sample shows gets. A slot is filled with a value of its tag: one
of the tag's examples or of the values the samples show for it, or a Faker value when the
tag's name (else its description) says what it holds: names, phones, emails, addresses,
dates, companies, cities and the like (`FAKER_KINDS`). The sentences are spread evenly over
the tags (each tag leads the same share), so a rare tag is not drowned.

Text. Each generated text is one of the label's examples (or its description when it has
none), with its emails, URLs, numbers and dates replaced by Faker values, sometimes joined
with a second example of the same label, and framed by a neutral opening or closing.

Everything comes from one seeded `random.Random` and a Faker seeded the same way: the same
task and seed give the same rows.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from faker import Faker

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

NAME = "offline"

FakerValue = Callable[[Faker], str]

#: What a tag holds, recognised from the words of its name (then of its description), and
#: the Faker value that fills it. The first match wins: specific kinds come first.
FAKER_KINDS: tuple[tuple[frozenset[str], FakerValue], ...] = tuple(
    (frozenset(words.split()), value)
    for words, value in (
        ("email mail e-mail", lambda f: f.email()),
        ("phone telephone mobile cell fax tel", lambda f: f.phone_number()),
        ("ssn", lambda f: f.ssn()),
        ("iban", lambda f: f.iban()),
        ("card credit cc", lambda f: f.credit_card_number()),
        ("url website link domain uri", lambda f: f.url()),
        ("ip ipv4", lambda f: f.ipv4()),
        ("zip zipcode postcode postal", lambda f: f.postcode()),
        ("street", lambda f: f.street_address()),
        ("address addr", lambda f: f.address()),
        ("city town", lambda f: f.city()),
        ("country nation nationality", lambda f: f.country()),
        ("state province region", lambda f: f.state()),
        ("date dob birthday birthdate day", lambda f: f.date()),
        ("time hour", lambda f: f.time()),
        (
            "company organization organisation org employer business firm",
            lambda f: f.company(),
        ),
        ("job occupation profession position", lambda f: f.job()),
        ("first given firstname", lambda f: f.first_name()),
        ("last surname family lastname", lambda f: f.last_name()),
        (
            "name person per people customer patient user fullname",
            lambda f: f.name(),
        ),
        ("amount price money cost salary currency", lambda f: f.pricetag()),
        ("location loc place gpe", lambda f: f.city()),
        ("number age quantity count num", lambda f: str(f.random_int(1, 99))),
    )
)

#: Carrier sentences for a tag no sample shows; {X} is the slot.
FRAMES = (
    "{X}",
    "it is {X} .",
    "please note {X} for the record .",
    "the value was {X} , thanks",
    "can you check {X} ?",
    "I wrote down {X} yesterday",
    "send the details to {X} today",
    "we confirmed {X} on the call",
    "here : {X}",
    "{X} was mentioned in the report .",
    "update the file with {X} please",
    "they asked about {X} this morning",
)
#: The share of a tag's sentences made from the samples' templates when it has some.
SAMPLE_SHARE = 0.8
OPENINGS = ("", "hi ,", "fyi", "note :", "update :", "ok so", "hello ,", "quick one :")
CLOSINGS = ("", "thanks", ", thank you .", "please", "asap", "- regards", "!")
TEXT_OPENINGS = ("", "Hi,", "Hello,", "Honestly,", "Quick question:", "FYI:", "Update:", "Well,")
TEXT_CLOSINGS = ("", "Thanks.", "Thank you!", "Any ideas?", "Cheers.", "Please advise.")

_WORD = re.compile(r"[a-z0-9]+")
_VALUES: tuple[tuple[re.Pattern[str], FakerValue], ...] = (
    (re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"), lambda f: f.email()),
    (re.compile(r"\bhttps?://\S+"), lambda f: f.url()),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}\b"), lambda f: f.date()),
    (re.compile(r"\b\d+(?:[.,]\d+)?\b"), lambda f: str(f.random_int(1, 999))),
)


def faker_kind(entity: Entity) -> FakerValue | None:
    """The Faker value of a tag, from the words of its name, else of its description."""
    for text in (entity.name, entity.description):
        words = set(_WORD.findall(re.sub(r"([a-z])([A-Z])", r"\1 \2", text).lower()))
        for kind, value in FAKER_KINDS:
            if words & kind:
                return value
    return None


@dataclass(frozen=True)
class _Slot:
    tag: str


Piece = str | _Slot


def template_of(sample: TokenRow, names: Sequence[str]) -> tuple[list[Piece], dict[str, list[str]]]:
    """A sample as a template (runs of one entity become one slot) and the values it shows."""
    pieces: list[Piece] = []
    values: dict[str, list[str]] = {}
    run: list[str] = []
    run_tag: str | None = None

    def close() -> None:
        nonlocal run, run_tag
        if run_tag is not None:
            pieces.append(_Slot(run_tag))
            values.setdefault(run_tag, []).append(" ".join(run))
        run, run_tag = [], None

    for token, tag in zip(sample.tokens, sample.tags, strict=True):
        entity = plain_tag(tag, names)
        if entity is None or entity == OUTSIDE:
            close()
            pieces.append(token)
            continue
        if entity != run_tag or tag.startswith("B-"):
            close()
            run_tag = entity
        run.append(token)
    close()
    return pieces, values


class OfflineProvider:
    """Generates without a network; `seed` makes it repeatable."""

    name = NAME

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _random(self) -> tuple[random.Random, Faker]:
        fake = Faker("en_US")
        fake.seed_instance(self.seed)
        return random.Random(self.seed), fake

    # ---- tokens ------------------------------------------------------------------------------

    def tokens(self, task: TokenTask) -> Generated[TokenRow]:
        rng, fake = self._random()
        names = task.tag_names
        warnings: list[str] = []
        templates: list[list[Piece]] = []
        seen_values: dict[str, list[str]] = {}
        for sample in task.samples:
            pieces, values = template_of(sample, names)
            for tag, found in values.items():
                seen_values.setdefault(tag, []).extend(found)
            templates.append(pieces)
            for _ in range(task.templates_per_sample - 1):
                templates.append(_framed(pieces, rng))
        by_tag: dict[str, list[list[Piece]]] = {name: [] for name in names}
        for template in templates:
            for tag in {p.tag for p in template if isinstance(p, _Slot)}:
                by_tag[tag].append(template)
        frames = {name: [_frame(frame, name) for frame in FRAMES] for name in names}
        fillers: dict[str, Callable[[], str]] = {}
        for entity in task.tags:
            fillers[entity.name] = _filler(
                entity, seen_values.get(entity.name, []), rng, fake, warnings
            )
        rows: list[TokenRow] = []
        for i in range(task.sentences):
            tag = names[i % len(names)]
            # The samples' own templates mostly; carrier sentences for variety (and for the
            # tags no sample shows).
            pool = by_tag[tag] if by_tag[tag] and rng.random() < SAMPLE_SHARE else frames[tag]
            template = rng.choice(pool)
            tokens: list[str] = []
            tags: list[str] = []
            for piece in template:
                if isinstance(piece, _Slot):
                    value = fillers[piece.tag]().split() or ["-"]
                    tokens += value
                    tags += [piece.tag] * len(value)
                else:
                    tokens.append(piece)
                    tags.append(OUTSIDE)
            rows.append(TokenRow(tuple(tokens), tuple(tags)))
        return Generated(rows, NAME, warnings)

    # ---- text --------------------------------------------------------------------------------

    def texts(self, task: TextTask) -> Generated[TextRow]:
        rng, fake = self._random()
        rows: list[TextRow] = []
        for label in task.labels:
            sources = [e for e in label.examples if e.strip()] or (
                [label.description] if label.description.strip() else []
            )
            if not sources:
                raise GenerationError(
                    f"label {label.name!r} has no examples and no description: the offline "
                    "provider builds texts from them; give one or the other"
                )
            for _ in range(task.samples_per_label):
                text = _vary(rng.choice(sources), rng, fake)
                if len(sources) > 1 and rng.random() < 0.3:
                    end = "" if text[-1:] in ".!?" else "."
                    text = f"{text}{end} {_vary(rng.choice(sources), rng, fake)}"
                opening, closing = rng.choice(TEXT_OPENINGS), rng.choice(TEXT_CLOSINGS)
                text = " ".join(part for part in (opening, text, closing) if part)
                rows.append(TextRow(text, label.name))
        return Generated(rows, NAME, [])


def _frame(frame: str, tag: str) -> list[Piece]:
    return [_Slot(tag) if word == "{X}" else word for word in frame.split()]


def _framed(pieces: list[Piece], rng: random.Random) -> list[Piece]:
    """A variant of a template: a neutral opening and closing around it."""
    opening: list[Piece] = list(rng.choice(OPENINGS).split())
    closing: list[Piece] = list(rng.choice(CLOSINGS).split())
    return opening + pieces + closing


def _filler(
    entity: Entity,
    seen: list[str],
    rng: random.Random,
    fake: Faker,
    warnings: list[str],
) -> Callable[[], str]:
    examples = [e for e in (*entity.examples, *seen) if e.split()]
    kind = faker_kind(entity)
    if kind is None and not examples:
        warnings.append(
            f"tag {entity.name!r} has no examples and its name says nothing the offline "
            "provider knows: its values are random words; give examples"
        )

        def word() -> str:
            return str(fake.word())

        return word

    def value() -> str:
        if kind is not None and (not examples or rng.random() < 0.5):
            return kind(fake)
        return rng.choice(examples)

    return value


def _vary(text: str, rng: random.Random, fake: Faker) -> str:
    """The text with some of its values (emails, URLs, dates, numbers) replaced."""
    for pattern, value in _VALUES:
        text = pattern.sub(
            lambda m, v=value: v(fake) if rng.random() < 0.7 else m.group(0),  # type: ignore[misc]
            text,
        )
    return " ".join(text.split())
