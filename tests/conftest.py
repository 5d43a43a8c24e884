"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamgmm.datasets.synthetic_lake import LakeInfo, write_lake


@pytest.fixture(scope="session")
def make_lake(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., LakeInfo]:
    """A factory of synthetic Parquet lakes: ``make_lake(name, **kwargs)`` writes
    ``write_lake(<new temporary directory named after name>/lake, **kwargs)`` and returns its
    :class:`~streamgmm.datasets.synthetic_lake.LakeInfo`.

    Each test module keeps its own ``lake`` fixture (their sizes, layouts and seeds differ), written
    through this factory; it is session-scoped so that module-scoped fixtures can use it.
    """

    def make(name: str, **kwargs) -> LakeInfo:
        return write_lake(tmp_path_factory.mktemp(name) / "lake", **kwargs)

    return make
