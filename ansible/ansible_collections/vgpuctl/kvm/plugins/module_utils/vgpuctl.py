# -*- coding: utf-8 -*-
# Copyright: vgpuctl developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Running vgpuctl on the managed host, and writing its host config."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json


def find_binary(module):
    """The vgpuctl binary: the `binary` option, else vgpuctl on PATH."""
    binary = module.params.get("binary")
    if binary:
        return binary
    return module.get_bin_path("vgpuctl", required=True)


def run(module, args, data=None, ok_codes=(0,)):
    """Runs vgpuctl with `args` (a list; never a shell string). Returns
    (rc, stdout, stderr); fails the task with vgpuctl's own message and
    exit code on any other exit code."""
    cmd = [find_binary(module), "--root", module.params["root"]] + list(args)
    rc, out, err = module.run_command(cmd, data=data, binary_data=False, environ_update={"NO_COLOR": "1", "COLUMNS": "200"})
    if rc not in ok_codes:
        fail(module, cmd, rc, out, err)
    return rc, out, err


def fail(module, cmd, rc, out, err):
    """Fails with vgpuctl's --json error document when there is one."""
    doc = None
    for line in reversed((err or "").splitlines()):
        try:
            doc = json.loads(line)
            break
        except ValueError:
            continue
    if isinstance(doc, dict) and "error" in doc:
        module.fail_json(msg=doc["error"], rc=rc, kind=doc.get("kind"), items=doc.get("items", []), cmd=cmd, stdout=out, stderr=err)
    module.fail_json(msg=(err or out or "vgpuctl failed").strip(), rc=rc, cmd=cmd, stdout=out, stderr=err)


def run_json(module, args, data=None, ok_codes=(0,)):
    rc, out, err = run(module, list(args) + ["--json"], data=data, ok_codes=ok_codes)
    try:
        return rc, json.loads(out)
    except ValueError:
        module.fail_json(msg="vgpuctl printed no JSON document", rc=rc, stdout=out, stderr=err)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, _toml_value(x)) for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_toml(config):
    """A vgpuctl host config (`gpu` and `mdev` lists of tables) as TOML.
    vgpuctl parses it and refuses unknown keys, so a typo in the play is
    reported by vgpuctl, naming the key."""
    if not isinstance(config, dict):
        raise ValueError("config must be a mapping with 'gpu' and/or 'mdev' lists")
    lines = ["# vgpuctl host config, written by the vgpuctl.kvm.vgpuctl_host Ansible module"]
    for key, tables in config.items():
        if not isinstance(tables, list):
            raise ValueError("config.%s must be a list of tables" % key)
        for table in tables:
            if not isinstance(table, dict):
                raise ValueError("each entry of config.%s must be a mapping" % key)
            lines.append("")
            lines.append("[[%s]]" % key)
            for k, v in table.items():
                lines.append("%s = %s" % (k, _toml_value(v)))
    return "\n".join(lines) + "\n"
