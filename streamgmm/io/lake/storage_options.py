"""Object-store credentials and endpoints given as options, applied the standard way.

Every client streamgmm reaches an object store through (pyarrow's filesystems, s3fs, botocore,
deltalake, and the workers of a local Dask cluster started afterwards) reads the same
environment variables: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_PROFILE`` (a named profile of ``~/.aws``), and their
Google Cloud and Azure counterparts. The CLI's ``--storage-option KEY=VALUE`` sets them for its
process, so one option reaches every reader and writer of the command: a short name below, or
any variable of those families by its own name.

Examples
--------
>>> from streamgmm.io.lake.storage_options import storage_environment
>>> storage_environment(["endpoint_url=http://127.0.0.1:9000", "region=eu-west-1", "AWS_PROFILE=lake"])
{'AWS_ENDPOINT_URL': 'http://127.0.0.1:9000', 'AWS_REGION': 'eu-west-1', 'AWS_PROFILE': 'lake'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Short names (those of s3fs, pyarrow and deltalake's storage options) and the variable each sets.
SHORT_NAMES = {
    "endpoint_url": "AWS_ENDPOINT_URL",
    "endpoint_override": "AWS_ENDPOINT_URL",
    "access_key": "AWS_ACCESS_KEY_ID",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_key": "AWS_SECRET_ACCESS_KEY",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "session_token": "AWS_SESSION_TOKEN",
    "region": "AWS_REGION",
    "profile": "AWS_PROFILE",
    "google_application_credentials": "GOOGLE_APPLICATION_CREDENTIALS",
    "account_name": "AZURE_STORAGE_ACCOUNT_NAME",
    "account_key": "AZURE_STORAGE_ACCOUNT_KEY",
}
FAMILIES = ("AWS_", "GOOGLE_", "GCS_", "AZURE_")
KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def storage_environment(options: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` options as the environment variables they set; an unknown key or a
    malformed option is a ``ValueError`` naming the key, never showing a value.

    >>> storage_environment(["secret_key:wJalr"])
    Traceback (most recent call last):
    ValueError: --storage-option secret_key...: expected secret_key=VALUE (with '='); the rest is not shown
    """
    env: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not KEY_NAME.fullmatch(key):
            raise ValueError(malformed_option(option))
        name = SHORT_NAMES.get(key.lower())
        if name is None and key.upper().startswith(FAMILIES):
            name = key.upper()
        if name is None:
            raise ValueError(
                f"--storage-option {key!r}: unknown key; use one of {', '.join(sorted(SHORT_NAMES))} "
                f"or a variable starting with {', '.join(FAMILIES)}"
            )
        env[name] = value
    return env


def malformed_option(option: str) -> str:
    """What is wrong with an option that is not ``KEY=VALUE``, showing at most a known key's name:
    the rest may be a secret (``secret_key:...`` typed with a colon)."""
    leading = KEY_NAME.match(option)
    key = leading.group() if leading else ""
    if key and (key.lower() in SHORT_NAMES or key.upper().startswith(FAMILIES)):
        return f"--storage-option {key}...: expected {key}=VALUE (with '='); the rest is not shown"
    return (
        "--storage-option: expected KEY=VALUE, e.g. region=eu-west-1 (the text given is not shown: it may be a secret)"
    )
