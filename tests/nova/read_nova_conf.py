"""Reads a nova.conf with Nova's own option definitions (the `nova` package
from PyPI, through oslo.config) and prints what Nova's libvirt driver would
see: the enabled mdev types and, per type, its group's options. Used by
tests/nova_export.rs; exits 1 with oslo.config's message when Nova refuses
the file."""

import json
import sys

from oslo_config import cfg

import nova.conf.devices


def main(path):
    conf = cfg.ConfigOpts()
    nova.conf.devices.register_opts(conf)
    conf(args=[], project="nova", default_config_files=[path])
    # The libvirt driver registers the per-type groups once it has read the
    # types (nova.conf.devices.register_dynamic_opts), then reads them.
    nova.conf.devices.register_dynamic_opts(conf)
    groups = {}
    for t in conf.devices.enabled_mdev_types:
        g = getattr(conf, "mdev_%s" % t)
        groups[t] = {
            "device_addresses": list(g.device_addresses),
            "mdev_class": getattr(g, "mdev_class", None),
            "max_instances": getattr(g, "max_instances", None),
        }
    print(json.dumps({"enabled_mdev_types": list(conf.devices.enabled_mdev_types), "groups": groups}))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except cfg.Error as e:
        print("nova refuses the config: %s" % e, file=sys.stderr)
        sys.exit(1)
