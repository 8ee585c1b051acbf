"""The NDB library without any server: parsing real pdf/docx/html/txt/md/csv files into the
pinned doc ids and chunks, warnings and the nothing-indexed failure, supervised training moving
held-out recall, deletions, base models left untouched, feedback (upvotes, associations,
implicit events), advanced search with and without an encoder, constraints, memory-mapping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.support.documents import docx_bytes, pdf_bytes
from trainyard.trainers.embeddings import load_encoder
from trainyard.trainers.ndb import NdbModel, load_model
from trainyard.trainers.ndb.config import NdbConfig
from trainyard.trainers.ndb.model import MAX_PASSAGES, Settings, passages_of
from trainyard.trainers.ndb.parsing import CHUNK_WORDS, OVERLAP_WORDS, FileEntry
from trainyard.trainers.ndb.training import DataError, Feedback, TrainParams, train
from trainyard.workload import ConfigError, InputFile

DOCS = {
    "refunds.txt": "Refund policy: a customer may return any product within thirty days of "
    "purchase and receive the full price paid back on the original card.",
    "shipping.txt": "Orders leave our warehouse within two business days and travel by ground "
    "courier; remote islands take up to a week.",
    "password.txt": "To reset the password of an account open the login page, choose the "
    "forgot password link and follow the e-mail you receive.",
    "warranty.txt": "Every appliance carries a two year warranty covering defects in materials "
    "and workmanship, repaired or replaced free of charge.",
    "careers.txt": "We hire engineers, designers and support staff; send a resume and a short "
    "letter through the jobs portal.",
    "privacy.txt": "Personal data is stored encrypted in the European Union and never sold to "
    "advertisers; you may ask for its deletion at any time.",
}


def write(folder: Path, name: str, data: bytes | str) -> InputFile:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return InputFile(path, name, path.as_uri())


def entry(*files: InputFile, **options: object) -> FileEntry:
    metadata = options.pop("metadata", None)
    return FileEntry.of(list(files), options, metadata)  # type: ignore[arg-type]


def build(
    entries: list[FileEntry],
    supervised: list[InputFile] | None = None,
    warnings: list[str] | None = None,
    **kw: object,
) -> NdbModel:
    settings = Settings(**kw.pop("settings", {}))  # type: ignore[arg-type]
    params = TrainParams(settings, **kw)  # type: ignore[arg-type]
    sink = warnings if warnings is not None else []
    return train(entries, supervised or [], params, warn=sink.append).model


def help_center(folder: Path) -> list[FileEntry]:
    return [entry(*(write(folder, name, text) for name, text in DOCS.items()))]


def top_doc(model: NdbModel, query: str) -> str:
    return model.search([query], 1)[0][0].doc_id


# ---- parsing and ids -------------------------------------------------------------------------


def test_every_file_type_becomes_documents_with_the_pinned_ids(tmp_path: Path) -> None:
    files = [
        write(tmp_path, "manual.pdf", pdf_bytes("The turbine manual explains blade pitch")),
        write(tmp_path, "memo.docx", docx_bytes("Quarterly memo", "Budget for lighthouse repairs")),
        write(
            tmp_path,
            "page.html",
            "<html><head><title>Garden</title><script>var tulip = 1;</script>"
            "<style>.orchid{}</style></head><body><p>Growing roses in clay soil</p></body></html>",
        ),
        write(tmp_path, "notes.txt", "Notes about the volcano expedition"),
        write(tmp_path, "readme.md", "# Setup\nInstall the telescope driver"),
        write(tmp_path, "faq.csv", "id,text,team\nq1,How to renew a passport,consular\n"),
        write(tmp_path, "plain.csv", "question,answer\nWhat is a comet,A ball of ice\n"),
    ]
    warnings: list[str] = []
    model = build([entry(*files, metadata={"batch": "b1"})], warnings=warnings)
    assert warnings == []
    sources = {s.doc_id: (s.source, s.chunk_count) for s in model.sources()}
    assert sources == {
        "manual.pdf": ("manual.pdf", 1),
        "memo.docx": ("memo.docx", 1),
        "page.html": ("page.html", 1),
        "notes.txt": ("notes.txt", 1),
        "readme.md": ("readme.md", 1),
        "q1": ("faq.csv", 1),
        "plain.csv:1": ("plain.csv", 1),
    }
    for query, doc_id in [
        ("turbine blade", "manual.pdf"),
        ("lighthouse budget", "memo.docx"),
        ("roses clay", "page.html"),
        ("volcano", "notes.txt"),
        ("telescope driver", "readme.md"),
        ("passport", "q1"),
        ("comet ice", "plain.csv:1"),
    ]:
        ref = model.search([query], 1)[0][0]
        assert (ref.doc_id, ref.id) == (doc_id, f"{doc_id}#0"), query
    # scripts and styles are not text; the row's other columns are metadata; the entry's too
    assert model.search(["tulip orchid"], 5) == [[]]
    faq = model.search(["passport"], 1)[0][0]
    assert faq.metadata == {"batch": "b1", "team": "consular"}
    assert faq.text == "How to renew a passport"
    comet = model.search(["comet"], 1)[0][0]
    assert comet.metadata == {"batch": "b1"}
    assert "What is a comet" in comet.text and "A ball of ice" in comet.text
    assert model.has_reference("memo.docx#0") and not model.has_reference("memo.docx#1")


def test_csv_options_choose_id_text_and_metadata_columns(tmp_path: Path) -> None:
    rows = (
        "sku,title,description,brand,price\n"
        "A1,Trail shoe,Light shoe for muddy paths,Peak,90\n"
        "B2,Rain jacket,Keeps a hiker dry on muddy trails,Peak,120\n"
        "C3,Muddy boots cleaner,Brush for shoes,Shine,8\n"
    )
    f = write(tmp_path, "catalog.csv", rows)
    model = build(
        [
            entry(
                f,
                id_column="sku",
                text_columns=["title", "description"],
                metadata_columns=["brand"],
                field_weights={"title": 3},
            )
        ]
    )
    assert [s.doc_id for s in model.sources()] == ["A1", "B2", "C3"]
    ref = model.search(["jacket"], 1)[0][0]
    assert (ref.id, ref.metadata, ref.source) == ("B2#0", {"brand": "Peak"}, "catalog.csv")
    # field weighting: "muddy" in C3's (weighted) title beats it in the others' descriptions
    assert top_doc(model, "muddy") == "C3"


def test_a_long_document_is_cut_into_overlapping_chunks(tmp_path: Path) -> None:
    words = [f"w{i}" for i in range(300)]
    model = build([entry(write(tmp_path, "long.txt", " ".join(words)))])
    step = CHUNK_WORDS - OVERLAP_WORDS
    refs = {r.id: r for r in model.search(["w0 w100 w200 w299"], 10)[0]}
    assert set(refs) == {"long.txt#0", "long.txt#1", "long.txt#2"}
    second = refs["long.txt#1"].text.split()
    assert second[0] == f"w{step}" and len(second) == CHUNK_WORDS
    assert [s.chunk_count for s in model.sources()] == [3]


def test_unusable_files_are_warned_about_and_skipped(tmp_path: Path) -> None:
    warnings: list[str] = []
    model = build(
        [
            entry(
                write(tmp_path, "good.txt", "a usable document about kites"),
                write(tmp_path, "image.png", b"\x89PNG\r\n"),
                write(tmp_path, "broken.pdf", b"%PDF-1.4 not really"),
                write(tmp_path, "empty.txt", "   "),
                write(tmp_path, "bad.csv", "a,a\n1,2\n"),
            )
        ],
        warnings=warnings,
    )
    assert "Unable to parse image.png. Unsupported filetype." in warnings
    assert any(w.startswith("Unable to parse broken.pdf. ") for w in warnings), warnings
    assert "Unable to parse empty.txt. No text found." in warnings
    assert any(w.startswith("Unable to parse bad.csv. ") for w in warnings), warnings
    assert [s.doc_id for s in model.sources()] == ["good.txt"]


def test_nothing_indexed_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing was indexed"):
        build([entry(write(tmp_path, "image.png", b"\x89PNG"))])


def test_a_bad_config_names_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        NdbConfig.parse(
            {"model_id": "m", "model_options": {"in_memory": "yes"}, "test_split": 2},
            {},
        )
    message = str(caught.value)
    assert "artifacts_uri" in message and "in_memory" in message and "test_split" in message


# ---- supervised, deletions, base models ---------------------------------------------------


SUPERVISED = [
    # words the documents do not use: only training can connect them
    ("money back guarantee", "refunds.txt"),
    ("get my money back", "refunds.txt"),
    ("money back after a month", "refunds.txt"),
    ("parcel arrival estimate", "shipping.txt"),
    ("when will my parcel arrive", "shipping.txt"),
    ("parcel tracking arrival", "shipping.txt"),
    ("locked out of my profile", "password.txt"),
    ("locked out cannot sign in", "password.txt"),
    ("profile locked out help", "password.txt"),
    ("broken toaster repair cost", "warranty.txt"),
    ("toaster broken after a year", "warranty.txt"),
    ("broken toaster who pays", "warranty.txt"),
]


def test_supervised_pairs_move_held_out_recall(tmp_path: Path) -> None:
    lines = ["query,id"] + [f"{q},{d}" for q, d in SUPERVISED]
    pairs = write(tmp_path, "pairs.csv", "\n".join(lines) + "\n")
    result = train(help_center(tmp_path), [pairs], TrainParams(Settings(), test_split=0.34))
    report = result.report["supervised"]
    assert report["held_out_pairs"] >= 2 and report["training_pairs"] >= 6
    assert report["before"]["recall@1"] < report["after"]["recall@1"]
    assert report["after"]["recall@5"] >= report["before"]["recall@5"]
    assert report["training_after"]["recall@1"] == 1.0
    # an unseen wording of a trained query now finds its document
    assert top_doc(result.model, "money back please") == "refunds.txt"


def test_supervised_ids_may_name_several_docs_and_csv_ids_with_colons(tmp_path: Path) -> None:
    f = write(tmp_path, "rows.csv", "question\nalpha topic\nbeta topic\n")
    pairs = write(tmp_path, "pairs.csv", "query,id\nzeta,rows.csv:1:rows.csv:2\nomega,nope\n")
    warnings: list[str] = []
    result = train(
        [entry(f)], [pairs], TrainParams(Settings(), test_split=0.0), warn=warnings.append
    )
    assert result.report["supervised"]["pairs"] == 1
    assert any("skipped 1 supervised pair" in w for w in warnings)
    assert {r.doc_id for r in result.model.search(["zeta"], 2)[0]} == {"rows.csv:1", "rows.csv:2"}


def test_deletions_and_a_base_model_make_a_new_model_and_leave_the_base(tmp_path: Path) -> None:
    base = build(help_center(tmp_path))
    base_dir = tmp_path / "base"
    base.save(base_dir)
    before = {p.name: p.read_bytes() for p in base_dir.iterdir()}
    loaded = load_model(base_dir)
    extra = write(tmp_path, "returns.txt", "Returning a product: print the label and drop it off")
    warnings: list[str] = []
    result = train(
        [entry(extra)],
        [],
        TrainParams(loaded.settings, deletions=("careers.txt", "ghost.txt")),
        base=loaded,
        warn=warnings.append,
    )
    new_dir = tmp_path / "new"
    result.model.save(new_dir, [c.fields for c in result.chunks])
    new = load_model(new_dir)
    docs = {s.doc_id for s in new.sources()}
    assert "returns.txt" in docs and "careers.txt" not in docs and "refunds.txt" in docs
    assert any("ghost.txt" in w for w in warnings)
    assert top_doc(new, "print label drop off") == "returns.txt"
    assert new.search(["resume jobs portal engineers"], 3) == [[]]
    # the base is untouched, on disk and in what it answers
    assert {p.name: p.read_bytes() for p in base_dir.iterdir()} == before
    assert top_doc(load_model(base_dir), "resume jobs portal") == "careers.txt"


def test_deleting_every_document_fails(tmp_path: Path) -> None:
    base = build([entry(write(tmp_path, "only.txt", "the only document"))])
    with pytest.raises(DataError, match="deleted"):
        train([], [], TrainParams(base.settings, deletions=("only.txt",)), base=base)


# ---- feedback -----------------------------------------------------------------------------


def test_feedback_upvotes_rank_first_and_associations_rewrite(tmp_path: Path) -> None:
    base = build(help_center(tmp_path))
    query = "how long do I have"  # lexically matches nothing useful
    assert not base.search([query], 1)[0] or top_doc(base, query) != "refunds.txt"
    feedback = Feedback(
        upvotes=((query, "refunds.txt#0"), ("warranty two year", "privacy.txt#0")),
        associations=(("sign in trouble", "reset the password"),),
        implicit=(("hiring", "careers.txt#0", "click"), ("gone", "deleted.txt#0", "click")),
    )
    warnings: list[str] = []
    result = train(
        [], [], TrainParams(base.settings), base=base, feedback=feedback, warn=warnings.append
    )
    model = result.model
    assert top_doc(model, query) == "refunds.txt"
    assert top_doc(model, "How long do I have?") == "refunds.txt"  # same terms
    # an upvote beats even a strong lexical match
    assert top_doc(base, "warranty two year") == "warranty.txt"
    assert top_doc(model, "warranty two year") == "privacy.txt"
    # the associated phrase retrieves like its target
    assert top_doc(model, "sign in trouble") == "password.txt"
    assert [r.id for r in model.search(["sign in trouble"], 3)[0]] == [
        r.id for r in model.search(["reset the password"], 3)[0]
    ]
    assert top_doc(model, "hiring") == "careers.txt"
    assert result.report["feedback"] == {
        "upvotes": 2,
        "implicit": {"click": 1},
        "associations": 1,
        "unknown_references": 1,
    }
    assert any("no longer in the model" in w for w in warnings)
    # the feedback is part of the saved model
    model.save(tmp_path / "fb", [c.fields for c in result.chunks])
    assert top_doc(load_model(tmp_path / "fb"), query) == "refunds.txt"


def test_an_upvote_outranks_an_implicit_event_for_the_same_query(tmp_path: Path) -> None:
    base = build(help_center(tmp_path))
    feedback = Feedback(
        upvotes=(("store policy", "privacy.txt#0"),),
        implicit=(("store policy", "refunds.txt#0", "click"),),
    )
    model = train([], [], TrainParams(base.settings), base=base, feedback=feedback).model
    assert [r.doc_id for r in model.search(["store policy"], 2)[0]] == [
        "privacy.txt",
        "refunds.txt",
    ]


# ---- search options -----------------------------------------------------------------------


def test_constraints_filter_by_metadata_equality_or_any_of(tmp_path: Path) -> None:
    rows = "id,text,lang,year\n1,solar panel install,en,2020\n2,solar panel pose,fr,2021\n"
    rows += "3,solar panel montage,de,2021\n"
    model = build([entry(write(tmp_path, "p.csv", rows), metadata={"kind": "manual"})])
    assert [r.doc_id for r in model.search(["solar panel"], 5, {"lang": "fr"})[0]] == ["2"]
    got = model.search(["solar panel"], 5, {"lang": ["en", "de"]})[0]
    assert sorted(r.doc_id for r in got) == ["1", "3"]
    assert sorted(r.doc_id for r in model.search(["solar"], 5, {"year": 2021})[0]) == ["2", "3"]
    assert model.search(["solar"], 5, {"lang": "fr", "year": 2020}) == [[]]
    assert len(model.search(["solar"], 5, {"kind": "manual"})[0]) == 3
    assert model.search(["solar"], 5, {"missing": "x"}) == [[]]


def _mapped(array: object) -> bool:
    """Whether the array's memory is a file mapped by numpy."""
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_in_memory_false_maps_the_index_from_disk(tmp_path: Path) -> None:
    model = build(help_center(tmp_path), settings={"in_memory": False})
    model.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "ndb.json").read_text())
    assert manifest["settings"]["in_memory"] is False
    mapped = load_model(tmp_path / "m")
    assert _mapped(mapped.lexical.matrix.data) and _mapped(mapped.lexical.matrix.indices)
    assert top_doc(mapped, "forgot password") == "password.txt"
    kept = build(help_center(tmp_path), settings={"in_memory": True})
    kept.save(tmp_path / "k")
    loaded = load_model(tmp_path / "k")
    assert not _mapped(loaded.lexical.matrix.data)
    assert loaded.search(["warranty"], 3) == mapped.search(["warranty"], 3)


def test_a_damaged_model_folder_is_refused(tmp_path: Path) -> None:
    model = build(help_center(tmp_path))
    model.save(tmp_path / "m")
    (tmp_path / "m" / "text_offsets.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        load_model(tmp_path / "m")
    with pytest.raises(ValueError, match="not an NDB model"):
        load_model(tmp_path / "nothing")


def test_advanced_search_without_an_encoder_ranks_lexically_and_says_so(tmp_path: Path) -> None:
    warnings: list[str] = []
    result = train(
        help_center(tmp_path),
        [],
        TrainParams(Settings(advanced_search=True)),
        encoder=None,
        encoder_missing="the embedding model is not installed",
        warn=warnings.append,
    )
    assert any("advanced_search" in w and "not installed" in w for w in warnings)
    assert result.report["dense"] is None
    assert top_doc(result.model, "forgot password") == "password.txt"


def test_advanced_search_with_the_packaged_encoder_finds_paraphrases(tmp_path: Path) -> None:
    encoder = load_encoder()
    assert encoder is not None, "the tests install the embeddings extra (./dev setup)"
    result = train(
        help_center(tmp_path), [], TrainParams(Settings(advanced_search=True)), encoder=encoder
    )
    model = result.model
    assert result.report["dense"] == encoder.name
    # no word in common with the document: only the dense part can find it
    assert top_doc(model, "getting compensated for an item I dislike") == "refunds.txt"
    model.save(tmp_path / "adv", [c.fields for c in result.chunks])
    loaded = load_model(tmp_path / "adv", encoder=encoder)
    assert loaded.uses_dense
    assert top_doc(loaded, "getting compensated for an item I dislike") == "refunds.txt"


def test_passages_are_a_chunks_sentences_short_ones_joined_and_bounded() -> None:
    assert passages_of("One whole sentence here. And a second one follows it!") == [
        "One whole sentence here.",
        "And a second one follows it!",
    ]
    # a sentence under MIN_PASSAGE_WORDS words joins the next (or, last, the one before)
    assert passages_of("Hi there. The refund arrives within a week. Thanks.") == [
        "Hi there. The refund arrives within a week. Thanks."
    ]
    assert passages_of("no sentence end at all") == ["no sentence end at all"]
    assert passages_of("") == [""]
    many = " ".join(f"Sentence number {i} is here." for i in range(40))
    parts = passages_of(many)
    assert len(parts) == MAX_PASSAGES and " ".join(parts) == many
    assert parts[-1].startswith(f"Sentence number {MAX_PASSAGES - 1} ")


class CountingEncoder:
    """The packaged encoder, counting the texts it is asked to encode."""

    def __init__(self) -> None:
        inner = load_encoder()
        assert inner is not None, "the tests install the embeddings extra (./dev setup)"
        self.inner = inner
        self.name, self.dimensions, self.languages = inner.name, inner.dimensions, inner.languages
        self.texts: list[str] = []

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return self.inner.encode(texts, batch_size)


def test_dense_scores_a_chunk_by_its_best_passage_too_and_keeps_them_across_files(
    tmp_path: Path,
) -> None:
    encoder = CountingEncoder()
    long_text = (
        "The annual report lists revenue by region and quarter. Tables compare the "
        "operating margins of each division. Appendix B covers currency effects. "
        "Our office dog Biscuit loves chasing tennis balls in the park."
    )
    files = [*help_center(tmp_path), entry(write(tmp_path, "report.txt", long_text))]
    result = train(files, [], TrainParams(Settings(advanced_search=True)), encoder=encoder)
    model = result.model
    assert model.passages is not None and model.dense is not None
    row = model.rows["report.txt#0"]
    assert len(model.passages.of(row)) == 4  # its four sentences; one-sentence chunks: one
    assert sum(len(model.passages.of(r)) for r in range(len(model.chunk_ids))) == len(
        model.passages.vectors
    )
    # each chunk's best passage, as Passages.best computes it for a batch of queries
    q = encoder.encode(["a puppy playing fetch", "currency exchange"])
    best = model.passages.best(q)
    for r in range(len(model.chunk_ids)):
        np.testing.assert_allclose(best[:, r], (q @ model.passages.of(r).T).max(axis=1), rtol=1e-5)
    # the one sentence about a dog finds the report, with no word in common
    assert top_doc(model, "a puppy playing fetch") == "report.txt"

    model.save(tmp_path / "m", [c.fields for c in result.chunks])
    loaded = load_model(tmp_path / "m", encoder=encoder)
    assert loaded.passages is not None
    np.testing.assert_array_equal(loaded.passages.starts, model.passages.starts)
    assert top_doc(loaded, "a puppy playing fetch") == "report.txt"

    # retraining on a base encodes only what is new, reusing the base's passages
    encoder.texts.clear()
    extra = write(
        tmp_path, "returns.txt", "Print the shipping label. Drop the parcel at any post office."
    )
    again = train([entry(extra)], [], TrainParams(loaded.settings), base=loaded, encoder=encoder)
    assert set(encoder.texts) == {
        "Print the shipping label. Drop the parcel at any post office.",
        "Print the shipping label.",
        "Drop the parcel at any post office.",
    }
    assert again.model.passages is not None
    np.testing.assert_array_equal(
        again.model.passages.of(again.model.rows["report.txt#0"]), model.passages.of(row)
    )

    # a model written before passages searches by its chunk vectors alone
    manifest = json.loads((tmp_path / "m" / "ndb.json").read_text())
    manifest.pop("dense_passages")
    (tmp_path / "m" / "ndb.json").write_text(json.dumps(manifest))
    old = load_model(tmp_path / "m", encoder=encoder)
    assert old.uses_dense and old.passages is None
    assert top_doc(old, "getting compensated for an item I dislike") == "refunds.txt"
    # passage files that do not fit the chunks are refused
    manifest["dense_passages"] = len(model.passages.vectors) + 1
    (tmp_path / "m" / "ndb.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="passage vectors do not fit"):
        load_model(tmp_path / "m", encoder=encoder)


def test_the_orchestrators_loader_serves_a_model_from_its_files(tmp_path: Path) -> None:
    from trainyard.trainers.ndb import inference

    model = build(help_center(tmp_path), settings={"in_memory": False})
    model.save(tmp_path / "m")
    files = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    predictor = inference.load(files)
    [answer] = predictor.predict(["forgot password"], 2)
    assert answer["query"] == "forgot password"
    assert answer["references"][0]["id"] == "password.txt#0"
    assert set(answer["references"][0]) == {"id", "doc_id", "text", "source", "score", "metadata"}
    with pytest.raises(ValueError):
        inference.load({"ndb.json": b"{}"})
    with pytest.raises(ValueError):
        inference.load({"../escape": b"x"})


def test_stop_words_per_language_and_old_models_keep_their_terms() -> None:
    from trainyard.trainers.ndb.analysis import Analyzer

    french = Analyzer("french")
    assert french.words("Le prix de la garantie et les retours") == ["prix", "garantie", "retours"]
    turkish = Analyzer("turkish")
    assert "ve" not in turkish.words("iade ve garanti") and "garanti" in turkish.words("garanti")
    assert "için" not in turkish.words("iade için")  # the list decoded as Turkish, not Latin-1
    assert Analyzer("french", stop_words=False).words("le prix") == ["le", "prix"]
    assert Analyzer("basque").words("eta bai") == ["eta", "bai"]  # no list: nothing dropped
    # A model written before the non-English lists: searched as it was built.
    assert Settings.from_json({"language": "french"}).stop_words is False
    assert Settings.from_json({"language": "english"}).stop_words is True
    assert Settings(language="french").stop_words is True
    assert Settings.from_json(Settings(language="french").to_json()).stop_words is True
