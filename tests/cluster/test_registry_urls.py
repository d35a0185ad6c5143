"""The registry's URL check refuses whitespace and control characters with
one C-level test (cluster/stores/registry.py): it is the per-character test
it replaced, over every code point."""

import pytest

from coordinator.cluster.stores.registry import InvalidService, validate_service_body


def test_printable_but_not_a_space_is_exactly_not_whitespace_nor_control() -> None:
    for code in range(0x110000):
        char = chr(code)
        assert (char.isspace() or not char.isprintable()) == (char == " " or not char.isprintable()), hex(code)


@pytest.mark.parametrize(
    "bad", ["http://h:1/a b", "http://h:1/\t", "http://h:1/\u2028", "http://h:1/\x00", "http://h:1/\u3000"]
)
def test_urls_with_whitespace_or_control_characters_are_refused(bad: str) -> None:
    with pytest.raises(InvalidService):
        validate_service_body({"url": bad})


def test_a_plain_url_is_kept_without_its_trailing_slash() -> None:
    assert validate_service_body({"url": "http://127.0.0.1:9001/base/"}) == {
        "url": "http://127.0.0.1:9001/base",
        "grpc": None,
    }
