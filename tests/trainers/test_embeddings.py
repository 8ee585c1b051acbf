"""The packaged sentence encoder: loads offline from the `embeddings` extra, which the tests
install, and can be turned off by setting."""

from __future__ import annotations

import numpy as np
import pytest

from trainyard.trainers import embeddings


def test_the_packaged_model_encodes_normalised_vectors_that_carry_meaning() -> None:
    encoder = embeddings.require_encoder(embeddings.DEFAULT_MODEL)
    vectors = encoder.encode(
        ["How do I reset my password?", "I forgot my password", "The train leaves at noon"]
    )
    assert vectors.shape == (3, encoder.dimensions)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.2
    assert encoder.encode([]).shape == (0, encoder.dimensions)


def test_none_turns_dense_features_off_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(embeddings.MODEL_VAR, "none")
    assert embeddings.load_encoder() is None
    assert "turned off" in (embeddings.unavailable_reason() or "")


def test_an_unknown_model_is_unavailable_with_the_known_names() -> None:
    assert embeddings.load_encoder("no-such-model") is None
    reason = embeddings.unavailable_reason("no-such-model") or ""
    assert "unknown embedding model 'no-such-model'" in reason
    assert embeddings.DEFAULT_MODEL in reason
