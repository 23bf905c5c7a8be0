"""Children a test stops with Ctrl-C (SIGINT) start with SIGINT's default disposition.

An ignored SIGINT is inherited across fork and exec: a shell that starts the suite in the
background from a script (``bash .ci/run &``) ignores it for everything below it. Python then
leaves it ignored, no KeyboardInterrupt comes and asyncio never cancels the command, so the
child ran on after the test's Ctrl-C (seen in a CI run started that way: ``events --follow``
still running after its test had failed waiting for it). ``preexec_fn=sigint_restored`` gives
the child what a terminal would."""

from __future__ import annotations

import signal


def sigint_restored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
