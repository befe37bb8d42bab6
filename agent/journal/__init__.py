"""The call journal (§7): `journal.yaml` settings, and the pure scenario matrix that turns
a finished call into CRM operations (`plan`). The outbox applies the operations."""

from __future__ import annotations

from agent.journal.matrix import Target, plan
from agent.journal.operations import (
    OPERATIONS,
    CreateContact,
    CreateLead,
    CreateOrganization,
    CreateTask,
    LogCall,
    Operation,
    Ref,
    UpdateLead,
)
from agent.journal.settings import (
    JournalError,
    JournalSettings,
    Scenarios,
    UtmTags,
    load_settings,
    settings_file,
)

__all__ = [
    "OPERATIONS",
    "CreateContact",
    "CreateLead",
    "CreateOrganization",
    "CreateTask",
    "JournalError",
    "JournalSettings",
    "LogCall",
    "Operation",
    "Ref",
    "Scenarios",
    "Target",
    "UpdateLead",
    "UtmTags",
    "load_settings",
    "plan",
    "settings_file",
]
