"""Local worker processes: the closing cluster's heartbeat race is not logged as a crash."""
from __future__ import annotations

import logging

from laueflow.pipeline.cluster import ClusterConfig, _announce_shutdown, connect
from laueflow.pipeline.worker_process import shutdown_expected


def _log_heartbeat_failure(marker: str) -> None:
    """What distributed 2026.8's worker logs when the scheduler closes during a heartbeat."""
    from distributed.comm.core import CommClosedError

    try:
        raise CommClosedError(f"in <TCP (closed) ConnectionPool.heartbeat_worker>: Stream is closed {marker}")
    except CommClosedError:
        logging.getLogger("distributed.worker").exception("Failed to communicate with scheduler during heartbeat.")


def _log_other_error(marker: str) -> None:
    logging.getLogger("distributed.worker").error("some other worker error %s", marker)


def test_heartbeat_failures_are_dropped_only_once_the_driver_closes_the_cluster(capfd):
    with connect(ClusterConfig("local", {"n_workers": 2, "dashboard_address": ":0"})) as client:
        assert list(client.run(shutdown_expected).values()) == [False, False]
        client.run(_log_heartbeat_failure, "during-the-run")  # a scheduler lost mid-run: logged in full
        _announce_shutdown(client)
        assert list(client.run(shutdown_expected).values()) == [True, True]
        client.run(_log_heartbeat_failure, "while-closing")
        client.run(_log_other_error, "still-logged")
    err = capfd.readouterr().err
    assert err.count("Stream is closed during-the-run") == 2 and "Traceback" in err
    assert "while-closing" not in err
    assert err.count("some other worker error still-logged") == 2
    assert not shutdown_expected()  # the driver's own process is not told


def test_workers_in_the_driver_process_change_nothing_of_the_driver():
    """A ``processes: false`` cluster: the workers are threads of the driver, whose logs stay whole."""
    import logging

    from laueflow.pipeline.worker_process import ClosedConnectionFilter

    with connect(ClusterConfig("local", {"n_workers": 1, "processes": False, "dashboard_address": ":0"})) as client:
        _announce_shutdown(client)
        assert list(client.run(shutdown_expected).values()) == [False]
    assert not shutdown_expected()
    assert not any(isinstance(f, ClosedConnectionFilter)
                   for h in logging.getLogger("distributed").handlers for f in h.filters)
