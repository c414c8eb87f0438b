"""The demo's progress output: numbered steps, what each shows, and which one failed.

Every step prints `[NUMBER] TITLE` before it runs and indented lines as it goes; a check
that fails raises `StepFailed`, and the demo reports it as the failure of the step that is
running, by number and title, so `strangler demo --check` names the first step that broke.
"""

from __future__ import annotations

import sys
from typing import TextIO


class StepFailed(Exception):
    """A step's check failed; the message says what was expected and what happened."""


class StepLog:
    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.number = ""
        self.title = ""

    def step(self, number: str, title: str) -> None:
        self.number, self.title = number, title
        print(f"\n[{number}] {title}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        for line in text.splitlines():
            print(f"    {line}", file=self.out, flush=True)

    def skip(self, reason: str) -> None:
        self.say(f"skipped: {reason}")

    def failure(self, error: BaseException) -> str:
        return f"FAILED at step {self.number} ({self.title}): {error}"
