"""The one error the rules loader raises: it says which file, line and rule to fix."""

from __future__ import annotations


class RulesError(Exception):
    """A rules file (or a list file it references) that cannot be used.

    `str()` reads like a compiler message:
    `routing.yaml:12: rule 'gold customers': unknown operator 'eqq' (expected one of ...)`.
    """

    def __init__(self, file: str, line: int | None, rule: str | None, message: str) -> None:
        super().__init__(file, line, rule, message)
        self.file = file
        self.line = line
        self.rule = rule
        self.message = message

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        who = "" if self.rule is None else f"rule {self.rule!r}: "
        return f"{where}: {who}{self.message}"
