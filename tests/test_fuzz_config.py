"""Bad config files and environment overrides: every one is a ConfigError naming the problem, never a crash.

Config files come from outside (a technician's editor, a provisioning tool, a half-written SD card): arbitrary
bytes, valid TOML with wrong types, unknown keys. The regression corpus (tests/fuzz_corpus/config/) keeps the
inputs that once crashed the loader or are easy to get wrong.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.config import Config, ConfigError, load_config

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus" / "config"
SECTIONS = {f.name: [g.name for g in dataclasses.fields(getattr(Config(), f.name))]
            for f in dataclasses.fields(Config) if dataclasses.is_dataclass(getattr(Config(), f.name))}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_or_reject(path: Path | None, env: dict[str, str] | None = None) -> Config | ConfigError:
    try:
        return load_config(path, env=env or {})
    except ConfigError as exc:
        assert str(exc).strip(), "a rejection must say what is wrong"
        return exc


@pytest.mark.parametrize("case", sorted(p.name for p in CORPUS.glob("*.toml")))
def test_regression_corpus_is_rejected_or_loaded(case: str) -> None:
    result = load_or_reject(CORPUS / case)
    # Only the BOM-prefixed file is arguably loadable; everything else in the corpus is wrong.
    if case != "utf8_bom.toml":
        assert isinstance(result, ConfigError), f"{case} was accepted: {result}"


def test_invalid_utf8_is_a_config_error() -> None:
    result = load_or_reject(CORPUS / "invalid_utf8.toml")
    assert isinstance(result, ConfigError) and "UTF-8" in str(result)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_are_loaded_or_rejected(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    load_or_reject(path)


TOML_VALUES = st.one_of(
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: {"nan": "nan", "inf": "inf", "-inf": "-inf"}
                                                       .get(repr(f), repr(f))),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=30).map(lambda s: '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'),
    st.sampled_from(["[]", "[1, 2]", '["a", "b"]', "{}", "{ x = 1 }", '"vehicle"', '"dock"', '"zstd"', '""']),
)


@st.composite
def toml_documents(draw: Any) -> tuple[str, list[tuple[str, str]]]:
    """Real section and key names (and some made up), with values of any TOML type."""
    lines, keys = [], []
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "bogus"]), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys.append((section, ""))
        names = SECTIONS.get(section, []) + ["not_a_key"]
        for key in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
            lines.append(f"{key} = {draw(TOML_VALUES)}")
            keys.append((section, key))
    return "\n".join(lines) + "\n", keys


@FUZZ
@given(toml_documents())
def test_typed_toml_is_loaded_or_rejected_naming_the_key(tmp_path: Path, doc: tuple[str, list]) -> None:
    text, keys = doc
    path = tmp_path / "fuzz.toml"
    path.write_text(text)
    result = load_or_reject(path)
    if isinstance(result, ConfigError) and result.key != "-":
        assert result.key.split(".")[0] in {s for s, _ in keys}, result  # the message names the culprit


@FUZZ
@given(section=st.sampled_from(sorted(SECTIONS)), data=st.data(),
       value=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40))
def test_environment_overrides_are_loaded_or_rejected(tmp_path: Path, section: str, data: Any, value: str) -> None:
    key = data.draw(st.sampled_from(SECTIONS[section]))
    result = load_or_reject(None, {f"FLEXEDGE_{section.upper()}__{key.upper()}": value})
    if isinstance(result, ConfigError):  # the key, or a rule between keys naming it
        assert result.key == f"{section}.{key}" or f"{section}.{key}" in str(result), result
