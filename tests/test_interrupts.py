"""A deferred section runs whole; the signal that came meanwhile is delivered after it."""

from __future__ import annotations

import signal
import threading

import pytest

from ednn_dask.interrupts import deferred


class Stopped(Exception):
    pass


@pytest.fixture
def stopping():
    """SIGINT and SIGTERM raise ``Stopped`` (with the signal) for the test's length."""
    def stop(signum, frame):
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield stop
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_the_section_comes_when_it_ends(stopping, sig):
    done = []
    with pytest.raises(Stopped) as caught:
        with deferred():
            signal.raise_signal(sig)
            signal.raise_signal(signal.SIGTERM)  # a second one is not delivered twice
            done.append("the rest of the section")
        done.append("after the section")
    assert done == ["the rest of the section"] and caught.value.args == (sig,)
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is stopping


def test_a_quiet_section_leaves_the_handlers_as_they_were(stopping):
    with deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.getsignal(signal.SIGTERM) is stopping


def test_an_error_in_the_section_passes_and_the_handlers_are_back(stopping):
    with pytest.raises(KeyError), deferred():
        {}["missing"]
    assert signal.getsignal(signal.SIGINT) is stopping


def test_outside_the_main_thread_it_changes_nothing(stopping):
    seen = []

    def section():
        with deferred():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=section)
    thread.start()
    thread.join()
    assert seen == [stopping]
