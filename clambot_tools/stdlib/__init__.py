"""Standard bindings: files, HTTP and SQL, each off until the application grants it.

Nothing here is reachable by a script unless the application passes the bindings to
a ``Sandbox``; each factory returns a list of ``Binding`` objects to grant::

    from clambot_tools import Sandbox
    from clambot_tools.stdlib import files, http, sql

    sb = Sandbox(bindings=[
        *files.bindings("/srv/agent-work", write=True),
        *http.bindings(allow_hosts=["api.example.com"],
                       secrets={"api.example.com": {"Authorization": "Bearer ..."}}),
        *sql.bindings("/srv/data/catalog.sqlite"),
    ])

The modules:

* ``files``: read (and, with ``write=True``, write) files under one root directory.
  Paths are walked component by component from a descriptor of the root with
  ``O_NOFOLLOW``, so neither ``..``, absolute paths nor symlinks (final or
  intermediate) can leave the root; symlinks that stay inside it are followed. The
  sandbox's compiled-module cache is never reachable (compared by device and inode);
  text is decoded only with ordinary, linear-time encodings. Linux (POSIX ``*at``
  calls); effects ``read`` / ``write``.
* ``http``: ``http_fetch`` for http(s) URLs on an allow-list of hosts. Every address a
  host resolves to is checked (private, loopback, link-local, multicast and reserved
  ranges are refused), the connection goes to the checked address, and each redirect
  is followed by hand and checked again. ``secrets`` (headers such as an API key) are
  added on the host side, only over HTTPS to the host and port they were given for,
  and redacted (also in common encodings) from what the script gets back. Needs
  ``httpx`` (imported only when ``http.bindings`` is called); effect ``network``.
* ``sql``: read-only queries on a SQLite file, opened read-only at the connection
  level (``mode=ro`` and ``PRAGMA query_only``), with ATTACH refused, a deadline per
  query, caps on rows and result size, and every value capped before SQLite builds
  it; effect ``read``.

Every call keeps the time of the script's run it serves (``clambot_tools.current_call``):
it stops at its own timeout or the run's deadline, whichever is first, also when it
runs inline on the run's own thread, and stops at once when the run ends (queries are
interrupted, requests cancelled). A call served after its run ended does nothing.

Every refusal and failure raises ``ToolError`` (or a subclass) whose message is written
for the script: the sandbox turns it into a catchable JS ``Error`` with that message.
Messages never contain the host path of a root directory or database, nor a secret.
"""

from __future__ import annotations


class ToolError(Exception):
    """A standard binding refused or could not complete a call.

    Its message is meant for the script (and the model that wrote it): it says what
    went wrong and, where useful, what to do instead.
    """


__all__ = ["ToolError"]
