"""`python -m trainyard.trainers.clustering` as a plain program: a bad config exits 2 naming
what is wrong, and the platform section never reaches the trainer's config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(config: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["TRAINYARD_CONFIG_JSON"] = json.dumps(config)
    return subprocess.run(
        [sys.executable, "-m", "trainyard.trainers.clustering"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({}, "experiment_id must be a non-empty string"),
        (
            {
                "experiment_id": "e",
                "model_id": "m",
                "language_code": "en-US",
                "data_uri": "file:///nowhere",
                "artifacts_uri": "file:///tmp/",
                "model_prefix": "models/e/",
                "num_clusters": -1,
            },
            "num_clusters must be an integer >= 0",
        ),
        ({"platform": "not an object"}, "'platform' section is malformed"),
    ],
)
def test_a_bad_config_exits_2(config: object, says: str) -> None:
    done = run(config)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
