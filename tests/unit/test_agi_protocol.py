"""FastAGI pure parsers and encoders: env blocks, replies, sanitize, EXEC MSet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.pbx.agi.protocol import (
    MAX_COMMAND_BYTES,
    MAX_MSET_PAIRS,
    MAX_VALUE_CHARS,
    AgiProtocolError,
    AgiReply,
    encode_mset,
    encode_msets,
    parse_env,
    parse_reply,
    sanitize,
)
from tests.net.fake_asterisk import DTMF_ENV, ROUTE_ENV, channel_variables, load_env

# ------------------------------------------------------------------------------ env blocks


def test_route_fixture() -> None:
    request = parse_env(load_env(ROUTE_ENV))
    assert request.script == "route"
    assert request.args == ()
    assert request.callerid == "+33612345678"
    assert request.calleridname == "Test"
    assert request.dnid == "unknown"
    assert request.uniqueid == "1796088099.1"
    assert request.channel == "Local/100@from-pstn-00000000;2"
    assert request.context == "from-pstn"
    assert request.extension == "100"
    assert request.env["agi_accountcode"] == ""  # written as `agi_accountcode: `
    assert request.env["agi_request"] == "agi://127.0.0.1:4573/route"
    assert len(request.env) == 22


def test_dtmf_fixture_has_args_after_threadid() -> None:
    request = parse_env(load_env(DTMF_ENV))
    assert request.script == "dtmf"
    assert request.args == ("5", "main")
    assert request.dnid == "0140000000"
    assert request.callerid == "0612345678"
    assert request.calleridname == "DUPONT Jean"
    assert request.env["agi_request"] == "agi://127.0.0.1:4599/dtmf"


def test_repr_keeps_personal_data_out_of_logs() -> None:
    text = repr(parse_env(load_env(DTMF_ENV)))
    assert "0612345678" not in text
    assert "DUPONT" not in text
    assert "dtmf" in text


@pytest.mark.parametrize(
    ("request_line", "script"),
    [
        (b"agi_request: agi://127.0.0.1:4573/route", "route"),
        (b"agi_request: hagi://_agi._tcp.example.org/lookup", "lookup"),
        (b"agi_request: agi://127.0.0.1:4573/crm/route", "crm/route"),
        (b"agi_request: agi://127.0.0.1:4573", ""),
    ],
)
def test_script_falls_back_to_agi_request_path(request_line: bytes, script: str) -> None:
    assert parse_env(b"agi_network: yes\n" + request_line + b"\n\n").script == script


def test_network_script_wins_over_request() -> None:
    block = b"agi_network_script: lookup\nagi_request: agi://h/route\n\n"
    assert parse_env(block).script == "lookup"


def test_args_empty_and_in_order() -> None:
    block = b"agi_network_script: dtmf\nagi_arg_1: \nagi_arg_2: main\nagi_arg_3: x: y\n\n"
    assert parse_env(block).args == ("", "main", "x: y")


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    block = b"agi_network_script: route\nagi_calleridname: H\xe9l\xe8ne\n\n"
    assert parse_env(block).calleridname == "H\ufffdl\ufffdne"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (b"agi_network_script: route\nagi_callerid +33612345678\n\n", "line 2: no ': '"),
        (b"agi_network_script: route\nagi_callerid:+33612345678\n\n", "line 2: no ': '"),
        (b"agi_network_script: route\nX-Forwarded: 1.2.3.4\n\n", "line 2: key"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\n\n", "line 1: no ': '"),
        (b"agi_network: yes\nagi_channel: SIP/x\n\n", "neither agi_network_script"),
        (b"\n\n", "neither agi_network_script"),
    ],
)
def test_malformed_env(block: bytes, message: str) -> None:
    with pytest.raises(AgiProtocolError, match=message) as caught:
        parse_env(block)
    assert "+33612345678" not in str(caught.value)


# ------------------------------------------------------------------------------ replies


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"200 result=1\n", AgiReply(200, "1", "")),
        (b"200 result=0\n", AgiReply(200, "0", "")),
        (b"200 result=0 (timeout)\n", AgiReply(200, "0", "timeout")),
        (b"200 result=1 (a (b) c)\n", AgiReply(200, "1", "a (b) c")),
        (b"200 result=0 endpos=12345\n", AgiReply(200, "0", "endpos=12345")),
        (b"200 result=-1\r\n", AgiReply(200, "-1", "")),
        (b"510 Invalid or unknown command\n", AgiReply(510, None, "Invalid or unknown command")),
        (
            b"511 Command Not Permitted on a dead channel or intercepted\n",
            AgiReply(511, None, "Command Not Permitted on a dead channel or intercepted"),
        ),
        (b"HANGUP\n", AgiReply(0, None, "HANGUP")),
    ],
)
def test_reply_forms(raw: bytes, expected: AgiReply) -> None:
    assert parse_reply(raw) == expected


def test_reply_flags() -> None:
    assert parse_reply(b"200 result=0\n").ok
    assert not parse_reply(b"200 result=0\n").dead
    assert parse_reply(b"HANGUP\n").dead
    assert parse_reply(b"511 Command Not Permitted on a dead channel or intercepted\n").dead
    assert not parse_reply(b"510 Invalid or unknown command\n").dead
    assert not parse_reply(b"510 Invalid or unknown command\n").ok


USAGE = (
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b" Usage: EXEC <application> <options>\n"
    b"\tExecutes application with given options.\n"
    b"520 End of proper usage.\n"
)


def test_multiline_usage_reply() -> None:
    reply = parse_reply(USAGE)
    assert reply.code == 520
    assert not reply.ok and not reply.dead
    assert reply.data.startswith("Invalid command syntax.")
    assert "Usage: EXEC <application> <options>" in reply.data
    assert reply.data.endswith("End of proper usage.")


@pytest.mark.parametrize(
    "raw",
    [
        b"\n",
        b"hello\n",
        b"20 result=1\n",
        b"200result=1\n",
        b"200 foo\n",
        b"2x0 result=1\n",
        b"520-Invalid command syntax.  Proper usage follows:\n Usage: EXEC\n",
    ],
)
def test_bad_replies(raw: bytes) -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply(raw)


# ------------------------------------------------------------------------------ sanitize


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Dupont, Jean", "Dupont, Jean"),
        ("Hélène Müller", "Hélène Müller"),
        ("${CALLERID(num)}", "${CALLERID(num)}"),
        ('O"Brien', "O'Brien"),
        ("O\\Brien \\\\ x", "OBrien  x"),
        ("x\r\nEXEC Dial PJSIP/666", "x  EXEC Dial PJSIP/666"),
        ("a\x00b\tc\x7fd\x1b", "a b c d"),
        ("\n  Dupont  \r\n", "Dupont"),
        (None, ""),
        (True, "1"),
        (False, "0"),
        (42, "42"),
    ],
)
def test_sanitize(value: object, expected: str) -> None:
    assert sanitize(value) == expected


def test_sanitize_caps_length() -> None:
    assert len(sanitize("é" * 1000)) == MAX_VALUE_CHARS
    assert sanitize("abcdef", max_chars=3) == "abc"


# ------------------------------------------------------- SETTING-VARIABLES.md, row by row

# The model of Asterisk's parsers in fake_asterisk must reproduce what the table observed.
# Rows 7 and 10 (backslash kept by `O\\\"Brien` and by SET VARIABLE) are left out: they
# contradict res_agi.c's parse_args, which drops the escaping backslash; the encoder never
# sends `"` or `\` in values, so those rows do not constrain it.
TABLE = [
    (rb'EXEC MSet "CRM_ROUTE_TYPE=queue,CRM_ROUTE_TARGET=vip"',
     {"CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "vip"}, ()),
    (rb'EXEC MSet "CRM_CONTACT_NAME=\"Dupont, Jean\",CRM_A=1"',
     {"CRM_CONTACT_NAME": "Dupont, Jean", "CRM_A": "1"}, ()),
    (rb'EXEC MSet "CRM_CONTACT_NAME=Dupont\\, Jean,CRM_A=1"',
     {"CRM_CONTACT_NAME": "Dupont, Jean", "CRM_A": "1"}, ()),
    (rb'EXEC MSet CRM_CONTACT_NAME="Dupont, Jean",CRM_A=1', {"CRM_CONTACT_NAME": "Dupont"}, ()),
    (rb'EXEC MSet "CRM_CONTACT_NAME=Dupont\, Jean,CRM_A=1"', {"CRM_CONTACT_NAME": "Dupont"}, ()),
    (rb'EXEC MSet "CRM_CONTACT_NAME=O\\"Brien (x),CRM_A=1"',
     {"CRM_CONTACT_NAME": "OBrien"}, ("CRM_A",)),
    ('EXEC MSet "CRM_CONTACT_NAME=Hélène Müller,CRM_A=1"'.encode(),
     {"CRM_CONTACT_NAME": "Hélène Müller", "CRM_A": "1"}, ()),
    (rb'EXEC MSet "CRM_CONTACT_NAME=a=b;c|d,CRM_A=${CALLERID(num)}"',
     {"CRM_CONTACT_NAME": "a=b;c|d", "CRM_A": "${CALLERID(num)}"}, ()),
]


@pytest.mark.parametrize(("wire", "expected", "missing"), TABLE)
def test_asterisk_model_matches_the_table(
    wire: bytes, expected: dict[str, str], missing: tuple[str, ...]
) -> None:
    variables = channel_variables(wire + b"\n")
    assert variables.items() >= expected.items()
    assert not set(missing) & variables.keys()


def test_encode_plain_row() -> None:
    command = encode_mset({"CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "vip"})
    assert command == b'EXEC MSet "CRM_ROUTE_TYPE=queue,CRM_ROUTE_TARGET=vip"\n'


def test_encode_comma_row() -> None:
    command = encode_mset({"CRM_CONTACT_NAME": "Dupont, Jean", "CRM_A": "1"})
    assert command == rb'EXEC MSet "CRM_CONTACT_NAME=Dupont\\, Jean,CRM_A=1"' + b"\n"
    assert channel_variables(command) == {"CRM_CONTACT_NAME": "Dupont, Jean", "CRM_A": "1"}


def test_encode_utf8_row() -> None:
    command = encode_mset({"CRM_CONTACT_NAME": "Hélène Müller", "CRM_A": "1"})
    assert command == 'EXEC MSet "CRM_CONTACT_NAME=Hélène Müller,CRM_A=1"\n'.encode()


def test_encode_dialplan_expression_stays_literal() -> None:
    command = encode_mset({"CRM_CONTACT_NAME": "a=b;c|d", "CRM_A": "${CALLERID(num)}"})
    # brackets are escaped too (see test_unbalanced_brackets_do_not_swallow_pairs)
    assert command == rb'EXEC MSet "CRM_CONTACT_NAME=a=b;c|d,CRM_A=${CALLERID\\(num\\)}"' + b"\n"
    assert channel_variables(command) == {"CRM_CONTACT_NAME": "a=b;c|d",
                                          "CRM_A": "${CALLERID(num)}"}


@pytest.mark.parametrize(
    "name", ['O"Brien (x)', 'O\\"Brien (x)', 'O\\\\\\"Brien', '"Dupont, Jean"']
)
def test_quotes_and_backslashes_cannot_break_out(name: str) -> None:
    command = encode_mset({"CRM_CONTACT_NAME": name, "CRM_A": "1"})
    assert command.count(b'"') == 2
    assert channel_variables(command) == {"CRM_CONTACT_NAME": sanitize(name), "CRM_A": "1"}


def test_crlf_injection_stays_one_command() -> None:
    command = encode_mset({"CRM_CONTACT_NAME": "x\r\nEXEC Dial PJSIP/666\n", "CRM_A": "1"})
    assert command.count(b"\n") == 1 and command.endswith(b"\n")
    assert b"\r" not in command
    assert channel_variables(command) == {"CRM_CONTACT_NAME": "x  EXEC Dial PJSIP/666",
                                          "CRM_A": "1"}


@pytest.mark.parametrize("name", ["Dupont (SARL", "Dupont [SARL", "Dupont )( SARL"])
def test_unbalanced_brackets_do_not_swallow_pairs(name: str) -> None:
    # MSet counts ( ) and [ ] nesting across pairs: an unescaped "(" hides every later comma
    unescaped = f'EXEC MSet "CRM_CONTACT_NAME={name},CRM_A=1"\n'.encode()
    assert "CRM_A" not in channel_variables(unescaped)
    command = encode_mset({"CRM_CONTACT_NAME": name, "CRM_A": "1"})
    assert channel_variables(command) == {"CRM_CONTACT_NAME": name, "CRM_A": "1"}


def test_function_names_are_allowed() -> None:
    command = encode_mset({"CALLERID(name)": "Dupont, Jean"})
    assert channel_variables(command) == {"CALLERID(name)": "Dupont, Jean"}


@pytest.mark.parametrize("name", ["", "A B", "A=B", "A,B", 'A"', "A\nB", "1A", "X" * 100])
def test_invalid_variable_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid channel variable name"):
        encode_mset({name: "1"})


def test_empty_mapping() -> None:
    with pytest.raises(AgiProtocolError):
        encode_mset({})
    assert encode_msets({}) == []


def test_lone_surrogate_does_not_raise() -> None:
    assert channel_variables(encode_mset({"CRM_A": "x\ud800y"})) == {"CRM_A": "x?y"}


def test_too_long_for_asterisk_buffer_is_refused_then_split() -> None:
    variables = {f"CRM_V{i}": "é, " * 90 for i in range(12)}
    with pytest.raises(AgiProtocolError, match="too long"):
        encode_mset(variables)
    commands = encode_msets(variables)
    assert len(commands) > 1
    assert all(len(command) <= MAX_COMMAND_BYTES for command in commands)
    decoded: dict[str, str] = {}
    for command in commands:
        decoded |= channel_variables(command)
    assert decoded == {name: sanitize(value) for name, value in variables.items()}


def test_pair_limit_splits() -> None:
    variables = {f"V{i}": str(i) for i in range(MAX_MSET_PAIRS + 5)}
    commands = encode_msets(variables)
    assert len(commands) == 2
    assert channel_variables(commands[0]) | channel_variables(commands[1]) == variables


def test_normal_route_is_one_command() -> None:
    variables = {
        "CRM_ROUTE_TYPE": "queue", "CRM_ROUTE_TARGET": "support", "CRM_VOICEMAIL": "1",
        "CRM_AUDIO": "custom/welcome-vip", "CRM_RULE": "vip-customers", "CRM_KNOWN": "1",
        "CRM_CONTACT_ID": "123456", "CRM_CONTACT_NAME": "Jean-Édouard de La Tour-d'Auvergne",
        "CRM_OWNER_EXTENSION": "201", "CRM_SCORE": "87", "CALLERID(name)": "x" * MAX_VALUE_CHARS,
    }
    assert len(encode_msets(variables)) == 1


NAMES = st.sampled_from(["CRM_ROUTE_TYPE", "CRM_CONTACT_NAME", "CRM_A", "CALLERID(name)"])
VALUES = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)


@given(st.dictionaries(NAMES, VALUES, min_size=1))
def test_any_value_round_trips_through_asterisk(variables: dict[str, str]) -> None:
    command = encode_mset(variables)
    assert command.count(b"\n") == 1
    assert channel_variables(command) == {name: sanitize(v) for name, v in variables.items()}


def test_mset_values_of_any_type_are_encoded_as_their_own_text() -> None:
    # pairs are memoised: 1, 1.0 and True must not share an encoding, lists still encode
    values: dict[str, object] = {"A": 1, "B": 1.0, "C": True}
    assert encode_mset(values) == b'EXEC MSet "A=1,B=1.0,C=1"\n'  # type: ignore[arg-type]
    values = {"A": True, "B": 1, "C": ["x", "y"]}
    assert encode_mset(values) == (  # type: ignore[arg-type]
        b'EXEC MSet "A=1,B=1,C=\\\\[\'x\'\\\\, \'y\'\\\\]"\n')


@pytest.mark.parametrize("block", [
    b"agi_network_script: route\nagi_callerid: 0612345678",  # no final newline
    b"\nagi_network_script: route\n\nagi_callerid: 0612345678\n\n",  # blank lines anywhere
    b"agi_network_script: route\nagi_callerid: +33600000000\nagi_callerid: 0612345678\n\n",
])
def test_env_values_read_alone_agree_with_the_whole_env(block: bytes) -> None:
    request = parse_env(block)
    assert request.callerid == "0612345678"  # read straight from the block: last one wins
    assert request.env["agi_callerid"] == "0612345678"  # the env split as a whole agrees
    assert request.dnid == "" and request.args == ()


def test_malformed_env_names_the_line_after_blank_lines() -> None:
    with pytest.raises(AgiProtocolError, match="line 3: no ': '"):
        parse_env(b"\nagi_network_script: route\nagi_callerid 0612345678\n\n")
