#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vgpuctl developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vgpuctl_host
short_description: Converge a KVM host's NVIDIA GPUs to a vgpuctl host config
version_added: "0.1.0"
description:
  - Installs a vgpuctl host config (SR-IOV VFs, MIG mode and GPU instances,
    time-sliced and MIG-backed vGPUs, mdevs, passthrough) and runs
    C(vgpuctl apply) on the managed host.
  - In check mode nothing is changed; the result says what C(vgpuctl plan)
    would do.
  - With C(--diff) the installed config is shown before and after, and the
    plan as the steps C(vgpuctl apply) would take.
  - A config that does not match the host (a selector naming no GPU, a type
    the GPU does not offer) fails with vgpuctl's message and exit code.
options:
  config:
    description:
      - The host config, as the TOML file of C(vgpuctl) would hold it, given
        as a mapping with C(gpu) and/or C(mdev) lists (docs/config.md of
        vgpuctl).
      - It is installed at O(dest) so the boot-time C(vgpuctl-apply.service)
        applies the same config.
      - Mutually exclusive with O(src).
    type: dict
  src:
    description:
      - A host config file already on the managed host (for example copied
        there with M(ansible.builtin.copy)). Mutually exclusive with O(config).
    type: path
  dest:
    description:
      - Where O(config) is installed on the managed host (below O(root)).
    type: path
    default: /etc/vgpuctl/host.toml
  root:
    description:
      - The host root vgpuctl reads and writes; V(/) on a real host, a
        simulated host's folder in tests.
    type: path
    default: /
  binary:
    description:
      - The vgpuctl binary on the managed host; C(vgpuctl) on the PATH when
        not given.
    type: path
notes:
  - Supports C(check_mode) and C(diff).
requirements:
  - vgpuctl on the managed host
author:
  - vgpuctl developers (@vgpuctl)
"""

EXAMPLES = r"""
- name: Two 20 GB vGPUs on every H100, MIG on the last GPU
  vgpuctl.kvm.vgpuctl_host:
    config:
      gpu:
        - select: model:H100
          mode: vgpu
          vgpus:
            - type: H100-20C
              count: 2
        - select: "0000:db:00.0"
          mode: mig
          layout:
            - profile: 3g.40gb
            - profile: 3g.40gb

- name: Converge to a file already on the host
  vgpuctl.kvm.vgpuctl_host:
    src: /etc/vgpuctl/host.toml
"""

RETURN = r"""
changed:
  description: Whether the config file or the host changed (or would, in check mode).
  returned: always
  type: bool
steps:
  description: The steps of the plan (check mode) or those applied, as vgpuctl's JSON gives them.
  returned: always
  type: list
  elements: dict
untouched:
  description: What the config names that already matches the host.
  returned: always
  type: list
  elements: str
plan:
  description: The plan as vgpuctl prints it for people, one step per line.
  returned: always
  type: list
  elements: str
config_changed:
  description: Whether the installed config file at O(dest) changed (or would).
  returned: always
  type: bool
rc:
  description: vgpuctl's exit code on failure (64 usage, 3 refused, 4 unavailable, 1 failed).
  returned: failure
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vgpuctl.kvm.plugins.module_utils.vgpuctl import run, run_json, to_toml


def read(path):
    try:
        with open(path, "r") as f:
            return f.read()
    except (IOError, OSError):
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="dict"),
            src=dict(type="path"),
            dest=dict(type="path", default="/etc/vgpuctl/host.toml"),
            root=dict(type="path", default="/"),
            binary=dict(type="path"),
        ),
        mutually_exclusive=[("config", "src")],
        required_one_of=[("config", "src")],
        supports_check_mode=True,
    )
    p = module.params
    if p["config"] is not None:
        try:
            text = to_toml(p["config"])
        except ValueError as e:
            module.fail_json(msg="config: %s" % e, rc=64)
        path = os.path.join(p["root"], p["dest"].lstrip("/"))
        before = read(path)
        config_changed = before != text
    else:
        path = p["src"]
        text = read(path)
        if text is None:
            module.fail_json(msg="src %s: no such file on the managed host" % path, rc=64)
        before = text
        config_changed = False

    # The plan, from the config as it will be installed (on stdin: check
    # mode writes nothing).
    rc, planned = run_json(module, ["plan", "-f", "-"], data=text)
    _, plan_text, _ = run(module, ["plan", "-f", "-"], data=text)
    plan_lines = [line.strip() for line in plan_text.splitlines() if line.strip()]
    result = dict(
        changed=bool(planned.get("steps")) or config_changed,
        steps=planned.get("steps", []),
        untouched=planned.get("untouched", []),
        plan=plan_lines,
        config_changed=config_changed,
    )
    if module._diff:
        steps = "".join("%s\n" % line for line in plan_lines if planned.get("steps"))
        result["diff"] = [
            dict(before_header=p["dest"], after_header=p["dest"], before=before or "", after=text),
            dict(before_header="host now", after_header="after vgpuctl apply", before="", after=steps),
        ]
    if module.check_mode:
        module.exit_json(**result)

    if config_changed:
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        tmp = "%s.ansible-%d" % (path, os.getpid())
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path)
    rc, applied = run_json(module, ["apply", "-f", path])
    result["changed"] = bool(applied.get("changed")) or config_changed
    result["steps"] = applied.get("steps", [])
    result["untouched"] = applied.get("untouched", [])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
