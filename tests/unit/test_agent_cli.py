"""The agent's command line (guestha.agent.main.parse_args): what the systemd unit and an
admin type, and the clear refusal of anything else."""

from __future__ import annotations

import pytest

from guestha.agent.main import Options, UsageError, main, parse_args
from guestha.protocol.identity import IDENTITY_FILE

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("argv", "expected"), [
    ([], Options(IDENTITY_FILE, "INFO", False)),
    (["--config", "/opt/ha/agent.json"], Options("/opt/ha/agent.json", "INFO", False)),
    (["--config=/opt/ha/agent.json"], Options("/opt/ha/agent.json", "INFO", False)),
    (["--log-level", "DEBUG", "--config", "a.json"], Options("a.json", "DEBUG", False)),
    (["--log-level=ERROR"], Options(IDENTITY_FILE, "ERROR", False)),
    (["--config", "a", "--config", "b"], Options("b", "INFO", False)),
    (["--config", "--odd-but-a-path"], Options("--odd-but-a-path", "INFO", False)),
    (["-h"], Options(IDENTITY_FILE, "INFO", True)),
    (["--config", "x", "--help"], Options("x", "INFO", True)),
])
def test_the_options_it_takes(argv: list[str], expected: Options) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize(("argv", "message"), [
    (["--bogus"], "unrecognized argument: --bogus"),
    (["agent.json"], "unrecognized argument: agent.json"),
    (["--config"], "argument --config: expected one argument"),
    (["--log-level", "TRACE"], "argument --log-level: invalid choice: 'TRACE'"),
    (["--log-level=info"], "argument --log-level: invalid choice: 'info'"),
    (["--conf", "a.json"], "unrecognized argument: --conf"),
])
def test_anything_else_is_refused_naming_the_argument(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_args(argv)


def test_a_refused_command_line_exits_2_with_the_usage(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["--log-level", "TRACE"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: guestha-agent") and "invalid choice: 'TRACE'" in err


def test_help_names_both_options_and_the_default_identity_file(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out and IDENTITY_FILE in out and "--log-level" in out
