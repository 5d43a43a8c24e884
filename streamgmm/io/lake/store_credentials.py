"""Object-store settings for the clients that do not take them from the URL or the standard
variables alone.

pyarrow's ``FileSystem.from_uri`` reads credentials written on a URL
(``s3://KEY:SECRET@bucket/...``); botocore and s3fs clients opened beside it need them passed
(:func:`s3_client`), and no name shown, logged or recorded may carry them:
:func:`split_credentials` takes them off.
pyiceberg reads none of the standard ``AWS_*`` variables: :func:`iceberg_properties` gives it
the same settings as its FileIO properties (``s3.endpoint``, ``s3.access-key-id``, ...).

Examples
--------
>>> split_credentials("s3://AKIA:s%2Fcret@bucket/landing/?region=eu-west-1")
('s3://bucket/landing/?region=eu-west-1', {'key': 'AKIA', 'secret': 's/cret'})
>>> split_credentials("s3://bucket/landing/")
('s3://bucket/landing/', {})
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

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


def s3_client(url: str) -> Any:
    """A botocore S3 client configured as pyarrow's filesystem for ``url`` is (the standard
    variables, then the URL's ``endpoint_override``, ``scheme``, ``region`` and ``KEY:SECRET@``);
    None without botocore (it comes with s3fs and boto3)."""
    try:
        import botocore.session
    except ImportError:
        return None
    settings = url_settings(url)
    names = {
        "endpoint": "endpoint_url",
        "region": "region_name",
        "key": "aws_access_key_id",
        "secret": "aws_secret_access_key",
    }
    kwargs = {names[name]: value for name, value in settings.items()}
    return botocore.session.get_session().create_client("s3", **kwargs)


def url_settings(url: str) -> dict[str, str]:
    """What an object-store URL itself sets, as pyarrow reads it: ``endpoint`` (from
    ``endpoint_override`` and ``scheme``), ``region``, and ``key`` and ``secret`` (from
    ``KEY:SECRET@``); only those it has.

    >>> url_settings("s3://K:S@bucket/lake?endpoint_override=127.0.0.1:9000&scheme=http")
    {'endpoint': 'http://127.0.0.1:9000', 'key': 'K', 'secret': 'S'}
    """
    shown, credentials = split_credentials(url)
    query = dict(urllib.parse.parse_qsl(shown.partition("?")[2]))
    settings = {}
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"]
        settings["endpoint"] = endpoint if "://" in endpoint else f"{query.get('scheme', 'https')}://{endpoint}"
    if "region" in query:
        settings["region"] = query["region"]
    return {**settings, **credentials}


# The standard variables and the pyiceberg FileIO property each sets (pyiceberg reads none of them).
ICEBERG_PROPERTIES = {
    "AWS_ENDPOINT_URL": "s3.endpoint",
    "AWS_ACCESS_KEY_ID": "s3.access-key-id",
    "AWS_SECRET_ACCESS_KEY": "s3.secret-access-key",
    "AWS_SESSION_TOKEN": "s3.session-token",
    "AWS_DEFAULT_REGION": "s3.region",
    "AWS_REGION": "s3.region",
    "AZURE_STORAGE_ACCOUNT_NAME": "adls.account-name",
    "AZURE_STORAGE_ACCOUNT_KEY": "adls.account-key",
}


def iceberg_properties(url: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """pyiceberg's FileIO properties for a table under ``url``, from the standard variables of
    ``environ`` (default ``os.environ``; the CLI's ``--storage-option`` sets them), then the URL's
    ``endpoint_override``, ``scheme``, ``region`` and ``KEY:SECRET@``: the settings pyarrow's
    own readers of the same URL use.

    Examples
    --------
    >>> iceberg_properties("s3://bucket/table", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "x"})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'py-io-impl': 'pyiceberg.io.pyarrow.PyArrowFileIO', 's3.endpoint': 'http://127.0.0.1:9000', 's3.region': 'x',
     's3.force-virtual-addressing': 'false'}
    """
    environ = os.environ if environ is None else environ
    properties = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    for variable, name in ICEBERG_PROPERTIES.items():
        if environ.get(variable):
            properties[name] = environ[variable]
    names = {
        "endpoint": "s3.endpoint",
        "region": "s3.region",
        "key": "s3.access-key-id",
        "secret": "s3.secret-access-key",
    }
    properties.update({names[name]: value for name, value in url_settings(url).items()})
    if "s3.endpoint" in properties:
        # An endpoint of one's own (MinIO, a local server) is addressed by path, as pyarrow does.
        properties["s3.force-virtual-addressing"] = "false"
    return properties
