"""The training form: the multipart body read incrementally, then every field rule checked.

Plain values may arrive quoted, as in the document's curl examples (`modelId="\\"m1\\""` sends
`"m1"`), or plain (`m1`): one pair of surrounding double quotes is taken off. Every rule that
fails is reported at once, each naming its field and what to fix.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from trainyard.runtime.errors import FieldViolation, InvalidArgument, ResourceExhausted
from trainyard.runtime.multipart import MultipartDecoder, PartData, PartEnd, PartStart
from trainyard.trainers.clustering.data import DIALOGUE, INTENT, SCHEMAS

HINT = (
    "send multipart/form-data, e.g. `curl -F modelId=my-model -F productName=p "
    "-F languageCode=en-US -F dataSchema=dialogue -F dataFile=@dialogues.csv -F numClusters=0 "
    "-F forceTrain=false ...`"
)
LANGUAGES = ("en-US", "tr-TR", "ar-SA", "fr-FR", "nl-NL", "it-IT")
LLMS = ("openai",)
FILE_FIELDS = ("dataFile", "secondaryDataFile")
TEXT_FIELDS = (
    "modelId",
    "productName",
    "languageCode",
    "dataSchema",
    "secondaryDataSchema",
    "numClusters",
    "llm",
    "forceTrain",
)
MAX_MODEL_ID = 63
_MODEL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_TURKISH = "çğıöşüÇĞİÖŞÜâîû"
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str
    data: bytes


@dataclass
class RawForm:
    values: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainParams:
    """A valid training request's parameters (what trainingParams shows)."""

    model_id: str
    product_name: str
    language_code: str
    data_schema: str
    secondary_data_schema: str
    num_clusters: int
    llm: str
    force_train: bool

    def as_json(self) -> dict[str, object]:
        return {
            "modelId": self.model_id,
            "productName": self.product_name,
            "languageCode": self.language_code,
            "dataSchema": self.data_schema,
            "secondaryDataSchema": self.secondary_data_schema,
            "numClusters": self.num_clusters,
            "llm": self.llm,
            "forceTrain": self.force_train,
        }


async def read_form(
    chunks: AsyncIterator[tuple[str, bytes]], *, max_file_bytes: int, max_field_bytes: int
) -> RawForm:
    """The form's values and files from (content_type, data) chunks; only the first chunk's
    content type counts (Envoy sends it once)."""
    decoder: MultipartDecoder | None = None
    form = RawForm()
    current: PartStart | None = None
    buffer = bytearray()
    async for content_type, data in chunks:
        if decoder is None:
            decoder = MultipartDecoder(content_type, HINT)
        for event in decoder.feed(data):
            if isinstance(event, PartStart):
                current, buffer = event, bytearray()
            elif isinstance(event, PartData) and current is not None:
                buffer += event.data
                is_file = current.field in FILE_FIELDS
                limit = max_file_bytes if is_file else max_field_bytes
                if len(buffer) > limit:
                    if is_file:
                        raise ResourceExhausted(
                            f"{current.field}: the file is larger than {limit} bytes; "
                            "send a smaller file",
                            reason="FILE_TOO_LARGE",
                            http_status=413,
                        )
                    raise InvalidArgument(
                        f"{current.field}: the value is longer than {limit} bytes",
                        violations=[FieldViolation(current.field, f"at most {limit} bytes")],
                    )
            elif isinstance(event, PartEnd) and current is not None:
                _keep(form, current, bytes(buffer))
                current = None
    if decoder is None:
        raise InvalidArgument("the request has no body; " + HINT, reason="NOT_MULTIPART")
    decoder.finish()
    return form


def _keep(form: RawForm, part: PartStart, data: bytes) -> None:
    name = part.field
    if name in form.values or name in form.files:
        raise InvalidArgument(
            f"{name}: sent more than once; send each form field once",
            violations=[FieldViolation(name, "sent more than once")],
        )
    if name in FILE_FIELDS:
        if part.filename is None and not data:
            return  # a file input left empty: treated as absent
        form.files[name] = UploadedFile(name, part.filename or name, data)
        return
    if name not in TEXT_FIELDS:
        raise InvalidArgument(
            f"unknown form field {name[:80]!r}; the fields are "
            + ", ".join((*TEXT_FIELDS[:4], "dataFile", *TEXT_FIELDS[4:], "secondaryDataFile")),
            violations=[FieldViolation(name[:80], "is not a field of this form")],
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(
            f"{name}: not UTF-8 text", violations=[FieldViolation(name, "must be UTF-8 text")]
        ) from None
    form.values[name] = unquote(text)


def unquote(value: str) -> str:
    """One pair of surrounding double quotes (and the whitespace around them) taken off."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1].strip()
    return value


def _model_id_problem(value: str) -> str | None:
    if not value:
        return "is required: a-z, 0-9 and '-', e.g. my-model-1"
    turkish = sorted({ch for ch in value if ch in _TURKISH})
    if turkish:
        return (
            "must not contain Turkish characters ("
            + ", ".join(turkish)
            + "); use only lowercase letters a-z, digits 0-9 and '-'"
        )
    if len(value) > MAX_MODEL_ID:
        return f"is {len(value)} characters long; at most {MAX_MODEL_ID} are allowed"
    if value[0] == "-" or value[-1] == "-":
        return "must not start or end with '-'"
    if not _MODEL_ID.match(value):
        bad = sorted(
            {
                ch
                for ch in value
                if not (ch.isascii() and (ch.isdigit() or ch.islower())) and ch != "-"
            }
        )
        return "may contain only lowercase letters a-z, digits 0-9 and '-'; found " + " ".join(
            repr(ch) for ch in bad[:10]
        )
    return None


def check_form(form: RawForm) -> TrainParams:
    """The parameters of a valid form; InvalidArgument listing every violation otherwise."""
    v = form.values
    problems: list[FieldViolation] = []

    def bad(name: str, description: str) -> None:
        problems.append(FieldViolation(name, description))

    model_id = v.get("modelId", "")
    if (problem := _model_id_problem(model_id)) is not None:
        bad("modelId", problem)
    product = v.get("productName", "")
    if not product:
        bad("productName", "is required: the product the model belongs to")
    language = v.get("languageCode", "")
    if language not in LANGUAGES:
        bad(
            "languageCode",
            ("is required" if not language else f"{language[:40]!r} is not supported")
            + "; use one of "
            + ", ".join(LANGUAGES),
        )
    schema = v.get("dataSchema", "")
    if schema not in SCHEMAS:
        bad(
            "dataSchema",
            ("is required" if not schema else f"{schema[:40]!r} is not a schema")
            + "; use dialogue or intent",
        )
    secondary = v.get("secondaryDataSchema", "")
    if secondary and secondary not in SCHEMAS:
        bad("secondaryDataSchema", f"{secondary[:40]!r} is not a schema; use dialogue or intent")
    elif secondary and secondary == schema:
        other = INTENT if schema == DIALOGUE else DIALOGUE
        bad(
            "secondaryDataSchema",
            f"must differ from dataSchema ({schema}); send {other} data as the secondary file",
        )
    if "dataFile" not in form.files:
        bad("dataFile", "is required: attach the data file (-F dataFile=@data.csv)")
    elif not form.files["dataFile"].data.strip():
        bad("dataFile", "is empty")
    if secondary and "secondaryDataFile" not in form.files:
        bad("secondaryDataFile", f"is required with secondaryDataSchema {secondary}")
    if "secondaryDataFile" in form.files and not secondary:
        bad("secondaryDataSchema", "is required with secondaryDataFile: dialogue or intent")
    raw_k = v.get("numClusters", "")
    num_clusters = 0
    if not raw_k:
        bad("numClusters", "is required: an integer >= 0 (0 lets the model choose)")
    elif not re.fullmatch(r"\+?\d{1,6}", raw_k):
        bad("numClusters", f"{raw_k[:40]!r} is not an integer >= 0 (0 lets the model choose)")
    else:
        num_clusters = int(raw_k)
    llm = v.get("llm", "")
    if llm and llm.lower() not in LLMS:
        bad("llm", f"{llm[:40]!r} is not supported; leave it empty or use openai")
    raw_force = v.get("forceTrain", "").lower()
    force = False
    if raw_force in _TRUE:
        force = True
    elif raw_force and raw_force not in _FALSE:
        bad("forceTrain", f"{raw_force[:40]!r} is not a boolean; use true or false")
    if problems:
        raise InvalidArgument(
            "invalid training request: "
            + "; ".join(f"{p.field} {p.description}" for p in problems),
            violations=problems,
        )
    return TrainParams(
        model_id=model_id,
        product_name=product,
        language_code=language,
        data_schema=schema,
        secondary_data_schema=secondary,
        num_clusters=num_clusters,
        llm=llm.lower(),
        force_train=force,
    )
