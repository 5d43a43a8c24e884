"""The Dask tests' cluster: a real ``distributed.LocalCluster`` of two single-threaded worker
processes, started once for the folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="package")
def client(cluster):
    distributed = pytest.importorskip("distributed")
    # Not the default client: calls without client= must still use the local thread pool.
    with distributed.Client(cluster, set_as_default=False) as client:
        yield client
