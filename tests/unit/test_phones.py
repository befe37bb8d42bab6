from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.phones import is_withheld, mask, normalize

SAME_CALLER = ["+33612345678", "0033612345678", "0612345678", "06 12 34 56 78",
               "06.12.34.56.78", "06-12-34-56-78", "+33 (0)6 12 34 56 78", "33612345678",
               "(06) 12 34 56 78", " +33 6 12 34 56 78 "]


@pytest.mark.parametrize("raw", SAME_CALLER)
def test_every_written_form_is_the_same_caller(raw: str) -> None:
    assert normalize(raw, "FR") == "+33612345678"


@pytest.mark.parametrize("raw", ["anonymous", "Anonymous", "unknown", "<unknown>", "restricted",
                                 "", "   ", "private", None])
def test_withheld_caller_ids_are_anonymous(raw: str | None) -> None:
    assert is_withheld(raw)
    assert normalize(raw, "FR") is None


@pytest.mark.parametrize("raw", ["abc", "06123", "+33 6 12 34", "0612345678901234567890123",
                                 "06 12 34 56 7x", "++33612345678", "'; DROP TABLE--"])
def test_garbage_is_not_a_number(raw: str) -> None:
    assert normalize(raw, "FR") is None


def test_region_decides_national_numbers() -> None:
    assert normalize("(650) 253-0000", "US") == "+16502530000"
    assert normalize("020 7946 0018", "GB") == "+442079460018"
    assert normalize("+16502530000", "FR") == "+16502530000"


def test_mask_keeps_numbers_out_of_logs() -> None:
    assert "12345" not in mask("+33612345678")
    assert mask("+33612345678").startswith("+336")
    assert mask("") == ""


@given(st.text(max_size=40))
def test_garbage_never_raises(raw: str) -> None:
    result = normalize(raw, "FR")
    assert result is None or (result.startswith("+") and result[1:].isdigit())


REGIONS = ["FR", "DE", "BE", "CH", "ES", "NL", "US", "GB", "IT", "PL", "MA", "SN", "BR", "AR",
           "CN", "IN", "RU", "JP", "AU", "CA"]


@given(st.sampled_from(REGIONS), st.text(alphabet="0123456789", min_size=4, max_size=14),
       st.sampled_from(["", "0", "00", "+"]))
def test_digit_strings_read_as_libphonenumber_reads_them(region: str, digits: str,
                                                          prefix: str) -> None:
    import phonenumbers

    raw = prefix + digits
    try:
        parsed = phonenumbers.parse(raw if not raw.startswith("00") else "+" + raw[2:], region)
        expected = (phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                    if phonenumbers.is_valid_number(parsed) else None)
    except phonenumbers.NumberParseException:
        expected = None
    result = normalize(raw, region)
    if expected is not None:
        assert result == expected
    elif result is not None:  # only the digits-only international retry may still succeed
        assert not raw.startswith(("+", "00")) and result == normalize("+" + raw, region)
