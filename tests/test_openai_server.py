import openai
import pytest

from tests.support.openai_server import ApiError, OpenAIServer


def test_chat_roundtrip_through_the_sdk() -> None:
    with OpenAIServer() as server:
        server.chat = lambda request: "SELECT 1 -- " + request["model"]
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "SELECT 1 -- gpt-4o-mini"
        bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        server.chat_error = ApiError(429, "slow down", "rate_limit_error")
        with pytest.raises(openai.RateLimitError, match="slow down"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
