"""Issue 9 in a namespace: `mcastd@232.1.1.1` used to die (exit 70) on a SIGHUP once the file
no longer listed its source-specific group. Now the reload fails like any bad file: logged,
recorded in the status, and the previous configuration stays served."""

from __future__ import annotations

import signal

from tests.hosts import PORT
from tests.net.conftest import Site
from tests.netns import ask

SSM = "232.1.1.1"
# The client's datagrams leave from 127.0.0.1 (224.0.0.0/4 is routed to lo with that source).
LISTED = f"groups:\n  - group: {SSM}\n    sources: [127.0.0.1]\n  - 239.0.0.9\n"
UNLISTED = "# the SSM group is gone\ngroups: [239.0.0.9]\n"


def test_reload_that_unlists_the_ssm_group_of_the_instance_keeps_serving(site: Site):
    daemon = site.daemons.start(site.netns, LISTED, ["--group", SSM])
    client = site.netns.socket()
    try:
        data, _ = ask(client, b"before", SSM, PORT)
        assert data.startswith(b"HEAR [ BEFORE")

        daemon.config_path.write_text(UNLISTED)
        daemon.signal(signal.SIGHUP)
        assert "reload failed" in daemon.wait_for("READY=1")
        problem = (
            f"{daemon.config_path}:2:1: --group: {SSM} is a source-specific (SSM) group that "
            "the configuration does not list: add it to 'groups' with its 'sources'"
        )
        assert f"reload failed: {problem}" in daemon.stderr
        assert daemon.proc.poll() is None

        data, _ = ask(client, b"after", SSM, PORT)  # the old configuration is still served
        assert data.startswith(b"HEAR [ AFTER")
        document = site.daemons.document(daemon)
        last = document["last_reload"]
        assert (last["ok"], last["errors"]) == (False, [problem])
        (endpoint,) = document["endpoints"]
        assert (endpoint["group"], endpoint["port"], endpoint["answered"]) == (SSM, PORT, 2)

        # Listed again: the next reload succeeds and the group was never left.
        daemon.config_path.write_text(LISTED)
        daemon.signal(signal.SIGHUP)
        assert "reload failed" not in daemon.wait_for("READY=1")
        assert site.daemons.document(daemon)["last_reload"]["ok"] is True
    finally:
        client.close()
