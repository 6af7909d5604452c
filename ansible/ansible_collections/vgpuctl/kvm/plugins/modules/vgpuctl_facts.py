#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vgpuctl developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vgpuctl_facts
short_description: GPU facts of a KVM host, from vgpuctl
version_added: "0.1.0"
description:
  - Sets C(ansible_facts.vgpuctl) from C(vgpuctl list), C(status) and
    C(types) (their C(--json) documents).
  - C(capacity) maps each vGPU type name to how many more can be created on
    the host now, so a play can pick hosts with room for a type.
options:
  root:
    description:
      - The host root vgpuctl reads; V(/) on a real host, a simulated host's
        folder in tests.
    type: path
    default: /
  binary:
    description:
      - The vgpuctl binary on the managed host; C(vgpuctl) on the PATH when
        not given.
    type: path
notes:
  - Supports C(check_mode); it only reads.
requirements:
  - vgpuctl on the managed host
author:
  - vgpuctl developers (@vgpuctl)
"""

EXAMPLES = r"""
- name: Gather GPU facts
  vgpuctl.kvm.vgpuctl_facts:

- name: Hosts with room for two more H100-20C
  ansible.builtin.group_by:
    key: room_h100_20c
  when: ansible_facts.vgpuctl.capacity['H100-20C'] | default(0) >= 2
"""

RETURN = r"""
ansible_facts:
  description: The facts.
  returned: always
  type: complex
  contains:
    vgpuctl:
      description: The host's GPUs as vgpuctl sees them.
      returned: always
      type: complex
      contains:
        gpus:
          description: Every GPU (C(vgpuctl list --json) C(gpus)).
          returned: always
          type: list
          elements: dict
        status:
          description: Per GPU, its mode and the devices on it with their VMs (C(vgpuctl status --json) C(gpus)).
          returned: always
          type: list
          elements: dict
        capacity:
          description: vGPU type name to how many more can be created on this host now.
          returned: always
          type: dict
        types:
          description: Per GPU, every vGPU type with C(creatable) and C(why_not) (C(vgpuctl types --json) C(gpus)).
          returned: always
          type: list
          elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.vgpuctl.kvm.plugins.module_utils.vgpuctl import run_json


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
            binary=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    _, listed = run_json(module, ["list"])
    _, status = run_json(module, ["status"])
    _, types = run_json(module, ["types"])
    capacity = {}
    for gpu in types.get("gpus", []):
        for t in gpu.get("types", []):
            capacity[t["name"]] = capacity.get(t["name"], 0) + int(t.get("creatable") or 0)
    facts = dict(
        gpus=listed.get("gpus", []),
        status=status.get("gpus", []),
        types=types.get("gpus", []),
        capacity=capacity,
    )
    module.exit_json(changed=False, ansible_facts=dict(vgpuctl=facts))


if __name__ == "__main__":
    main()
