//! The vgpuctl.kvm Ansible collection driving a managed host over ssh: an
//! sshd on 127.0.0.1 started here with a key made here, ansible-core from
//! PyPI, a simulated GPU host (`root`) on the far side. Check mode changes
//! nothing and reports the plan, apply changes, a second apply is
//! unchanged, drift is seen, a bad config fails with vgpuctl's message and
//! exit code, and the facts module reports capacity per type. Also runs
//! ansible-doc and `ansible-test sanity` (compile, pep8, validate-modules).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::sim::SimHost;
use serde_json::Value;

const COLLECTIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/ansible");

/// An sshd on 127.0.0.1 that lets this test's key in as the current user.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sshd(dir: &Path) -> Sshd {
    let keygen = |path: &Path| {
        let o = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).output().expect("ssh-keygen");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let (host_key, key) = (dir.join("host_key"), dir.join("id"));
    keygen(&host_key);
    keygen(&key);
    std::fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
    // sshd's privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/sbin/sshd").args(["-D", "-e", "-f"]).arg(&cfg).stderr(Stdio::null()).spawn().expect("sshd");
    // Bounded wait for the listener.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "sshd did not listen on 127.0.0.1:{port}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Sshd { child, port, key }
}

struct Controller {
    inventory: PathBuf,
    root: String,
}

impl Controller {
    fn new(dir: &Path, s: &Sshd, h: &SimHost) -> Self {
        let py = Command::new("sh").args(["-c", "command -v python3"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let inventory = dir.join("inventory.ini");
        std::fs::write(
            &inventory,
            format!(
                "gpuhost ansible_host=127.0.0.1 ansible_port={} ansible_user={user} ansible_ssh_private_key_file={} ansible_python_interpreter={py} ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'\n",
                s.port,
                s.key.display()
            ),
        )
        .unwrap();
        Self { inventory, root: h.root.display().to_string() }
    }

    fn env(c: &mut Command) {
        c.env("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_LOCALHOST_WARNING", "false")
            .env("ANSIBLE_DEPRECATION_WARNINGS", "false");
    }

    /// Runs `module` on the managed host with `args` (JSON); returns whether
    /// it succeeded, the result document and the whole output.
    fn module(&self, module: &str, args: &Value, extra: &[&str]) -> (bool, Value, String) {
        let mut args = args.clone();
        args["root"] = Value::from(self.root.as_str());
        args["binary"] = Value::from(env!("CARGO_BIN_EXE_vgpuctl"));
        let mut c = Command::new("ansible");
        c.arg("gpuhost").arg("-i").arg(&self.inventory).args(["-m", module, "-a"]).arg(args.to_string()).args(extra);
        Self::env(&mut c);
        let o = c.output().expect("ansible");
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        // `gpuhost | CHANGED => {…}` (or SUCCESS / FAILED!); --diff output comes first.
        let doc = out
            .find("gpuhost | ")
            .and_then(|i| out[i..].find("=> ").map(|j| i + j + 3))
            .and_then(|i| serde_json::from_str(&out[i..]).ok())
            .unwrap_or(Value::Null);
        (o.status.success(), doc, out)
    }
}

fn config(select: &str, ty: &str, count: u32) -> Value {
    serde_json::json!({ "config": { "gpu": [ { "select": select, "mode": "vgpu", "vgpus": [ { "type": ty, "count": count } ] } ] } })
}

#[test]
#[ignore = "needs ansible-core (PyPI), openssh-server and root (scripts/install-test-deps.sh); starts sshd on 127.0.0.1"]
fn test_collection_over_ssh_check_apply_unchanged_drift_and_failure() {
    let dir = common::sim::tempdir();
    let s = sshd(dir.path());
    let h = SimHost::new("t4x2-mdev");
    let a = Controller::new(dir.path(), &s, &h);
    let want = config("0000:3b:00.0", "T4-4Q", 2);

    // Check mode: the plan, changed, and nothing on the host changed.
    let before = h.snapshot();
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &want, &["--check", "--diff"]);
    assert!(ok, "{out}");
    assert_eq!(r["changed"], true, "{out}");
    assert_eq!(r["plan"], serde_json::json!(["1. create 2× T4-4Q on 0000:3b:00.0"]), "{out}");
    assert!(out.contains("after vgpuctl apply") && out.contains("+1. create 2× T4-4Q on 0000:3b:00.0"), "the plan as a diff: {out}");
    assert!(out.contains("+select = \"0000:3b:00.0\""), "the config as a diff: {out}");
    assert_eq!(h.snapshot(), before, "check mode changed the host");

    // Apply: changed, the vGPUs and the installed config are there.
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &want, &[]);
    assert!(ok && r["changed"] == true, "{out}");
    assert_eq!(h.json(&["mdev", "list", "--json"])["devices"].as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(h.path("/etc/vgpuctl/host.toml")).unwrap().contains("T4-4Q"));

    // Again: unchanged, in check mode and for real.
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &want, &["--check"]);
    assert!(ok && r["changed"] == false, "{out}");
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &want, &[]);
    assert!(ok && r["changed"] == false, "{out}");

    // Drift: a vGPU removed behind Ansible's back is seen and put back.
    let uuid = h.json(&["mdev", "list", "--json"])["devices"][0]["uuid"].as_str().unwrap().to_string();
    h.ok(&["mdev", "remove", &uuid]);
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &want, &["--check"]);
    assert!(ok && r["changed"] == true && r["config_changed"] == false, "{out}");
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &want, &[]);
    assert!(ok && r["changed"] == true, "{out}");
    assert_eq!(h.json(&["mdev", "list", "--json"])["devices"].as_array().unwrap().len(), 2);

    // A config that does not match the host: vgpuctl's message and exit code.
    let before = h.snapshot();
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_host", &config("model:T9", "T4-4Q", 1), &[]);
    assert!(!ok, "{out}");
    assert!(r["msg"].as_str().unwrap_or("").contains("select \"model:T9\" matches no GPU"), "{out}");
    assert_eq!(r["rc"], 3, "{out}");
    assert_eq!(r["kind"], "refused", "{out}");
    assert_eq!(h.snapshot(), before, "a refused config changed the host");

    // Facts: capacity per type, for picking hosts with room.
    let (ok, r, out) = a.module("vgpuctl.kvm.vgpuctl_facts", &serde_json::json!({}), &[]);
    assert!(ok, "{out}");
    let cap = &r["ansible_facts"]["vgpuctl"]["capacity"];
    assert_eq!(cap["T4-4Q"], 2 + 4, "two more on the first T4, four on the second: {cap}");
    assert_eq!(r["ansible_facts"]["vgpuctl"]["gpus"].as_array().map(Vec::len), Some(2 + 1), "{out}");
}

#[test]
#[ignore = "needs ansible-core (PyPI, with ansible-doc and ansible-test) and the package index for ansible-test's sanity requirements"]
fn test_collection_docs_render_and_sanity_passes() {
    for module in ["vgpuctl.kvm.vgpuctl_host", "vgpuctl.kvm.vgpuctl_facts"] {
        let mut c = Command::new("ansible-doc");
        c.arg(module);
        Controller::env(&mut c);
        let o = c.output().expect("ansible-doc");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && out.contains("EXAMPLES") && out.contains("RETURN VALUES"), "{module}: {out}{}", String::from_utf8_lossy(&o.stderr));
    }
    // ansible-test runs in the collection; its venvs and pip bootstrap go
    // to a private HOME (see prepare_ansible_test_home).
    let home = common::sim::tempdir();
    prepare_ansible_test_home(home.path());
    let dir = Path::new(COLLECTIONS).join("ansible_collections/vgpuctl/kvm");
    let o = Command::new("ansible-test")
        .args(["sanity", "--test", "compile", "--test", "pep8", "--test", "validate-modules", "--python", "3.11", "--requirements"])
        .current_dir(&dir)
        .env("HOME", home.path())
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-test");
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}");
    let _ = std::fs::remove_dir_all(dir.join("tests/output"));
}

/// ansible-test fetches its pip bootstrap script from a host that is not a
/// package index; CI reaches only package indexes. The cached script it
/// would use instead is this stand-in: pip from the interpreter's own
/// ensurepip, then the pinned pip from the index. The index settings of
/// this machine (`pip config list`: a mirror, a CA bundle) go to the private
/// HOME's pip.conf, since ansible-test runs pip with a clean environment.
fn prepare_ansible_test_home(home: &Path) {
    let cache = home.join(".ansible/test/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let script = "import ensurepip\nimport os\nimport subprocess\nimport sys\n\nensurepip.bootstrap(upgrade=True)\n# ensurepip points pip at no config; the index settings are in HOME's.\nos.environ.pop(\"PIP_CONFIG_FILE\", None)\nargs = [a for a in sys.argv[1:] if a not in (\"--no-setuptools\", \"--no-wheel\")]\nsys.exit(subprocess.call([sys.executable, \"-m\", \"pip\", \"install\"] + args))\n";
    // ansible-test asks for one pinned pip version; any name it uses is served.
    for version in ["24_2", "24_3", "25_0", "25_1", "25_2", "25_3"] {
        std::fs::write(cache.join(format!("get_pip_{version}.py")), script).unwrap();
    }
    let listed =
        Command::new("python3").args(["-m", "pip", "config", "list"]).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let mut settings: Vec<(String, String)> = Vec::new();
    for line in listed.lines() {
        // `global.cert='/etc/ssl/…'` or `:env:.index-url='…'`; the first
        // listed (the environment's) wins, as it does for pip.
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.rsplit('.').next().unwrap_or(key).to_string();
        if ["cert", "index-url", "extra-index-url", "trusted-host", "find-links"].contains(&key.as_str()) && !settings.iter().any(|(k, _)| *k == key) {
            settings.push((key, value.trim_matches('\'').to_string()));
        }
    }
    let conf: String = std::iter::once("[global]\n".to_string()).chain(settings.iter().map(|(k, v)| format!("{k} = {v}\n"))).collect();
    std::fs::create_dir_all(home.join(".config/pip")).unwrap();
    std::fs::write(home.join(".config/pip/pip.conf"), conf).unwrap();
}
