"""``ray start`` for a worker node joining a loopback head on this machine:
``python -m medtune.cluster.ops.raystart start ...``.

Ray replaces a loopback ``--address`` by the machine's IP before it connects, but a head that
``medtune cluster up`` started on loopback listens on 127.0.0.1 only; this entry point keeps the address as given
and otherwise is Ray's own command line.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> int:
    from ray._private import services

    services.resolve_ip_for_localhost = lambda host: host  # the head's 127.0.0.1, not this machine's IP
    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *sys.argv[1:]]
    return ray_main()


if __name__ == "__main__":
    sys.exit(main())
