"""Reference resolution: env:// and gsm:// as whole values and inline ${...} tokens (bizon's resolvers)."""

from __future__ import annotations

import sys
import types

import pytest

from bizon_fast.config.secrets import (
    SecretResolutionError,
    find_references,
    resolve_reference,
    resolve_references,
)
from bizon_fast.errors import ConfigError


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("BF_TOKEN", "tok-123")
    monkeypatch.setenv("BF_USER", "alice")
    monkeypatch.setenv("BF_PW", "s3cret")
    monkeypatch.delenv("BF_UNSET", raising=False)
    return monkeypatch


class FakeSecretManager:
    """Stands in for google-cloud-secret-manager: records the version names it is asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls: list[str] = []
        fake = self

        class Client:
            def access_secret_version(self, request: dict) -> types.SimpleNamespace:
                name = request["name"]
                fake.calls.append(name)
                if name not in fake.values:
                    raise LookupError(f"404 Secret [{name}] not found")
                return types.SimpleNamespace(payload=types.SimpleNamespace(data=fake.values[name].encode()))

        self.module = types.ModuleType("google.cloud.secretmanager")
        self.module.SecretManagerServiceClient = Client


@pytest.fixture
def gsm(monkeypatch: pytest.MonkeyPatch) -> FakeSecretManager:
    fake = FakeSecretManager(
        {
            "projects/proj/secrets/api-token/versions/latest": "gsm-token",
            "projects/proj/secrets/api-token/versions/3": "gsm-token-v3",
            "projects/other/secrets/db/versions/latest": "db-pw",
            "projects/other/secrets/db/versions/7": "db-pw-7",
        }
    )
    google = types.ModuleType("google")
    google.__path__ = []
    cloud = types.ModuleType("google.cloud")
    cloud.__path__ = []
    cloud.secretmanager = fake.module
    google.cloud = cloud
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.cloud", cloud)
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", fake.module)
    return fake


def test_whole_value_env_reference_is_resolved(env: pytest.MonkeyPatch) -> None:
    out = resolve_references({"source": {"authentication": {"params": {"token": "env://BF_TOKEN"}}}})
    assert out["source"]["authentication"]["params"]["token"] == "tok-123"


def test_inline_references_several_in_one_value(env: pytest.MonkeyPatch) -> None:
    raw = {"dsn": "postgresql://${env://BF_USER}:${ env://BF_PW }@db:5432/bizon"}
    assert resolve_references(raw) == {"dsn": "postgresql://alice:s3cret@db:5432/bizon"}


def test_lists_are_walked_too(env: pytest.MonkeyPatch) -> None:
    raw = {"transforms": [{"label": "x", "python": "data['t'] = '${env://BF_TOKEN}'"}], "tags": ["env://BF_USER", 3]}
    out = resolve_references(raw)
    assert out["transforms"][0]["python"] == "data['t'] = 'tok-123'"
    assert out["tags"] == ["alice", 3]


def test_input_is_not_mutated(env: pytest.MonkeyPatch) -> None:
    raw = {"a": {"b": "env://BF_USER"}}
    resolve_references(raw)
    assert raw == {"a": {"b": "env://BF_USER"}}


@pytest.mark.parametrize(
    "value",
    ["https://hooks.slack.com/services/XXX", "postgresql://u:p@h/db", "s3://bucket/key", "plain", "ENV://X", ""],
)
def test_whole_values_with_other_schemes_are_left_alone(value: str) -> None:
    assert resolve_references({"v": value}) == {"v": value}
    assert find_references({"v": value}) == []


def test_non_strings_pass_through() -> None:
    raw = {"n": 1, "f": 1.5, "b": True, "none": None}
    assert resolve_references(raw) == raw


def test_missing_env_var_names_the_path_and_the_variable(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_references({"engine": {"backend": {"config": {"password": "${env://BF_UNSET}"}}}})
    message = str(info.value)
    assert message.startswith("engine.backend.config.password: ")
    assert "BF_UNSET" in message and "not set" in message
    assert isinstance(info.value, SecretResolutionError)
    assert info.value.path == ("engine", "backend", "config", "password")


def test_missing_env_var_in_a_list_item_names_its_index(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^streams\[1\]\.source\.topic: environment variable BF_UNSET"):
        resolve_references({"streams": [{"source": {"topic": "a"}}, {"source": {"topic": "env://BF_UNSET"}}]})


def test_unknown_inline_scheme_is_an_error_naming_the_path() -> None:
    with pytest.raises(ConfigError, match=r"^source\.token: unknown reference scheme 'vault' in '\$\{vault://x\}'"):
        resolve_references({"source": {"token": "Bearer ${vault://x}"}})


@pytest.mark.parametrize("token", ["${}", "${env:/X}", "${ENV://X}", "${just text}"])
def test_malformed_inline_token_is_an_error_naming_the_path(token: str) -> None:
    with pytest.raises(ConfigError, match=r"^a\.b: malformed reference"):
        resolve_references({"a": {"b": f"x{token}y"}})


def test_env_values_are_cached_per_reference(env: pytest.MonkeyPatch) -> None:
    from bizon_fast.config.secrets import Resolver

    resolver = Resolver()
    assert resolver.resolve_string("env://BF_USER") == "alice"
    env.setenv("BF_USER", "bob")
    assert resolver.resolve_string("${env://BF_USER}") == "alice"  # same reference, same run: one lookup


def test_gsm_short_name_uses_the_configured_project(gsm: FakeSecretManager) -> None:
    raw = {
        "secrets": {"gsm": {"project_id": "proj"}},
        "a": "gsm://api-token",
        "b": "Bearer ${gsm://api-token}",
        "c": "gsm://api-token/versions/3",
        "d": "gsm://projects/other/secrets/db",
        "e": "${gsm://projects/other/secrets/db/versions/7}",
    }
    out = resolve_references(raw)
    assert (out["a"], out["b"], out["c"], out["d"], out["e"]) == (
        "gsm-token",
        "Bearer gsm-token",
        "gsm-token-v3",
        "db-pw",
        "db-pw-7",
    )
    # gsm://api-token is used twice but fetched once
    assert gsm.calls.count("projects/proj/secrets/api-token/versions/latest") == 1


def test_gsm_project_can_come_from_an_explicit_secrets_block_or_an_env_reference(
    gsm: FakeSecretManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_references({"a": "gsm://api-token"}, {"gsm": {"project_id": "proj"}}) == {"a": "gsm-token"}
    monkeypatch.setenv("BF_PROJECT", "proj")
    raw = {"secrets": {"gsm": {"project_id": "${env://BF_PROJECT}"}}, "a": "gsm://api-token"}
    assert resolve_references(raw)["a"] == "gsm-token"


def test_gsm_errors_name_the_secret_and_the_path(gsm: FakeSecretManager) -> None:
    with pytest.raises(ConfigError, match=r"^x\.y: cannot read secret projects/proj/secrets/nope/versions/latest"):
        resolve_references({"secrets": {"gsm": {"project_id": "proj"}}, "x": {"y": "gsm://nope"}})


def test_gsm_without_the_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"^token: .*pip install google-cloud-secret-manager"):
        resolve_references({"secrets": {"gsm": {"project_id": "p"}}, "token": "gsm://api-token"})


def test_find_references_lists_whole_inline_and_malformed_references() -> None:
    raw = {
        "source": {"authentication": {"params": {"token": "env://DUMMY_TOKEN"}}},
        "engine": {"backend": {"config": {"dsn": "postgresql://u:${gsm://db-pw}@h/${env://DB}"}}},
        "streams": [{"name": "s", "source": {"topic": "${nope}"}}],
        "destination": {"config": {"url": "https://example.com"}},
    }
    assert find_references(raw) == [
        ("source.authentication.params.token", "env://DUMMY_TOKEN"),
        ("engine.backend.config.dsn", "gsm://db-pw"),
        ("engine.backend.config.dsn", "env://DB"),
        ("streams[0].source.topic", "${nope}"),
    ]


def test_resolve_reference_checks_one_reference(env: pytest.MonkeyPatch) -> None:
    assert resolve_reference("env://BF_TOKEN") == "tok-123"
    with pytest.raises(SecretResolutionError, match="BF_UNSET"):
        resolve_reference("env://BF_UNSET")
    with pytest.raises(SecretResolutionError, match="malformed"):
        resolve_reference("${nope}")
    with pytest.raises(SecretResolutionError, match="not a reference"):
        resolve_reference("plain text")
