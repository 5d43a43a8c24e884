"""Object-store settings for the clients that do not take them from the URL or the standard
variables alone.

pyarrow's ``FileSystem.from_uri`` reads credentials written on a URL
(``s3://KEY:SECRET@bucket/...``); botocore and s3fs clients opened beside it need them passed,
and no name shown, logged or recorded may carry them: :func:`split_credentials` takes them off.

Examples
--------
>>> split_credentials("s3://AKIA:s%2Fcret@bucket/landing/?region=eu-west-1")
('s3://bucket/landing/?region=eu-west-1', {'key': 'AKIA', 'secret': 's/cret'})
>>> split_credentials("s3://bucket/landing/")
('s3://bucket/landing/', {})
"""

from __future__ import annotations

import re
import urllib.parse

# The user information of a URL, which pyarrow reads as an access key and secret.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*)@")


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the ``KEY:SECRET@`` that pyarrow's ``FileSystem.from_uri`` reads as an
    access key and secret, and those (``{'key': ..., 'secret': ...}``, percent-decoded as pyarrow
    decodes them; empty when the URL carries none). The first is the URL to show, log or record:
    it holds no secret."""
    match = _USERINFO.match(url)
    if match is None:
        return url, {}
    key, _, secret = match.group(2).partition(":")
    credentials = {"key": urllib.parse.unquote(key), "secret": urllib.parse.unquote(secret)}
    return match.group(1) + url[match.end() :], credentials

