//! The NVIDIA driver seam on a host that is not simulated: a simulated
//! vendor-VFIO tree with its simulator marker removed is read through the
//! real driver, whose NVML helper here is a fake that logs what it is asked
//! and prints a snapshot of the tree's GPUs. A VM start with a vGPU costs
//! one NVML session, asking only for what the hook decides with; a start
//! with no GPU, and the reads that need no driver, start the helper never;
//! nvidia-smi is not run while NVML answers.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::replay::script;
use common::sim::SimHost;

struct RealDriverHost {
    sim: SimHost,
    helper: PathBuf,
    smi: PathBuf,
    log: PathBuf,
    smi_log: PathBuf,
}

impl RealDriverHost {
    fn new() -> Self {
        let sim = SimHost::new("h100x8-vfio");
        sim.ok(&["sriov", "enable", "0000:18:00.0"]);
        let gpus: Vec<String> = sim.json(&["list", "--json"])["gpus"].as_array().unwrap().iter().map(|g| g["address"].as_str().unwrap().to_string()).collect();
        // From here on the host is "real": no simulated driver, no simulated kernel.
        std::fs::remove_file(sim.path("/.vgpuctl-sim.json")).unwrap();
        let dir = sim.root.parent().unwrap().to_path_buf();
        let snapshot = serde_json::json!({
            "schema_version": 2,
            "driver_version": "580.159.04",
            "gpus": gpus.iter().enumerate().map(|(i, a)| serde_json::json!({
                "index": i,
                "pci_bus_id": format!("0000{}", a.to_uppercase()),
                "uuid": format!("GPU-0000000{i}-0000-0000-0000-000000000000"),
                "mig": { "current": false, "pending": false },
                "heterogeneous": false
            })).collect::<Vec<_>>()
        });
        let snap = dir.join("snapshot.json");
        std::fs::write(&snap, snapshot.to_string()).unwrap();
        let log = dir.join("helper.log");
        let helper = dir.join("vgpuctl-nvml");
        script(&helper, &format!("[ \"$1\" = snapshot ] || exit 2\necho \"$*\" >>{}\ncat {}", log.display(), snap.display()));
        let smi_log = dir.join("smi.log");
        let smi = dir.join("nvidia-smi");
        script(&smi, &format!("echo \"$*\" >>{}\nexit 9", smi_log.display()));
        Self { sim, helper, smi, log, smi_log }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vgpuctl"));
        c.env("VGPUCTL_ROOT", &self.sim.root)
            .env("VGPUCTL_NVML_HELPER", &self.helper)
            .env("VGPUCTL_NVIDIA_SMI", &self.smi)
            .env_remove("VGPUCTL_NVIDIA_BACKEND");
        c
    }

    fn hook(&self, args: &[&str], xml: &str) -> (i32, String) {
        let mut c = self.cmd().args(["hook", "qemu"]).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        c.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().unwrap();
        assert!(o.status.success(), "vgpuctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The helper runs since the last call, and forgets them.
    fn asked(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }
}

fn vf_type(root: &Path, vf: &str) -> String {
    std::fs::read_to_string(root.join(format!("sys/bus/pci/devices/{vf}/nvidia/current_vgpu_type"))).unwrap().trim().to_string()
}

#[test]
fn test_a_vm_start_with_a_vgpu_costs_one_nvml_session_and_one_without_gpus_none() {
    let h = RealDriverHost::new();
    let xml = h.sim.ok(&["vm", "xml", "--name", "vm1", "--vgpu", "H100-20C", "--domain-type", "qemu"]);
    assert!(xml.contains("vf='0000:18:00.4'"), "{xml}");
    let _ = h.asked();

    // prepare: the vGPU view (mixed-size mode, MIG room) from one helper run.
    let (rc, err) = h.hook(&["vm1", "prepare", "begin", "-"], &xml);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(vf_type(&h.sim.root, "0000:18:00.4"), "1215");
    assert_eq!(h.asked(), ["snapshot --want instances,vgpu --sample-ms 0"]);
    // release clears the type from sysfs alone.
    assert_eq!(h.hook(&["vm1", "release", "end", "-"], &xml).0, 0);
    assert_eq!(vf_type(&h.sim.root, "0000:18:00.4"), "0");
    assert!(h.asked().is_empty());

    // A domain without GPUs never starts the helper.
    let plain =
        "<domain type='qemu'><name>plain</name><uuid>9d3f5f3e-8b49-4a8c-9d55-3c1b0f0d2a11</uuid><memory>1024</memory><os><type>hvm</type></os></domain>";
    assert_eq!(h.hook(&["plain", "prepare", "begin", "-"], plain).0, 0);
    assert_eq!(h.hook(&["plain", "release", "end", "-"], plain).0, 0);
    assert!(h.asked().is_empty());

    // Each read command: one session, its own parts.
    for (args, want) in [
        (&["list", "--json"][..], "identity"),
        (&["types", "--json"][..], "instances,vgpu"),
        (&["explain", "--type", "H100-20C", "--json"][..], "instances,vgpu"),
        (&["mig", "status", "--json"][..], "instances"),
        // GPU-instance utilization is sampled (the helper waits only where there are instances).
        (&["status", "--json"][..], "instances,utilization,vgpu,sampled --sample-ms 100"),
    ] {
        let out = h.ok(args);
        assert!(!out.is_empty());
        let want = if want.contains("--sample-ms") { want.to_string() } else { format!("{want} --sample-ms 0") };
        assert_eq!(h.asked(), [format!("snapshot --want {want}")], "{args:?}");
    }
    // What the driver says reaches the output: UUIDs come from NVML here.
    let list: serde_json::Value = serde_json::from_str(&h.ok(&["list", "--json"])).unwrap();
    assert_eq!(list["gpus"][0]["uuid"], "GPU-00000000-0000-0000-0000-000000000000");
    assert!(!h.smi_log.exists(), "nvidia-smi was run: {}", std::fs::read_to_string(&h.smi_log).unwrap_or_default());
}
