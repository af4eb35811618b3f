"""URLs as the sweeper shows, stores and hands them on: any password masked (in log lines, overrides
and the files jobs write), scrubbed from error texts, and relative file paths made absolute for
jobs that run elsewhere. One module for every URL setting (storage, mlflow_uri, any added later);
it imports nothing of the sweeper's, so every module may use it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def masked(url: Any) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    if url is None:
        return "memory"
    text = str(url)
    password = password_of(text)
    if password is None:
        return text
    parts = urlsplit(text)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@", 1)))


def password_of(url: Any) -> str | None:
    """The password in a URL, or None (also for text that is not a URL)."""
    try:
        return urlsplit(str(url)).password if url is not None else None
    except ValueError:  # not a URL (an unbalanced [ in some other value)
        return None


def has_password(url: Any) -> bool:
    return password_of(url) is not None


def scrub(message: str, url: Any) -> str:
    """An error text with the URL's password (if any) replaced by ***."""
    password = password_of(url)
    return message.replace(password, "***") if password else message


def absolute(url: Any) -> str | None:
    """The URL with a relative SQLite or journal path made absolute, for jobs that run elsewhere."""
    if url is None:
        return None
    text = str(url)
    if text.startswith("journal:"):
        return "journal:" + str(Path(text.removeprefix("journal:")).absolute())
    if text.startswith("sqlite:///") and not text.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(text.removeprefix("sqlite:///")).absolute())
    return text


def mask_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides as they may be written to files: any URL's password masked, whatever
    the key (hydra.sweeper.storage, hydra.sweeper.mlflow_uri, an app's own)."""
    return [re.sub(r"^([^=]+=)(.*)$", lambda m: m[1] + masked(m[2]), o) for o in overrides]
