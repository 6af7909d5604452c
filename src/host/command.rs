//! External programs (nvidia-smi, mdevctl) run through one runner whose
//! program paths tests can replace. Arguments are passed as a vector, never
//! through a shell, so no input can turn into a command.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{HostError, HostResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    NvidiaSmi,
    Mdevctl,
    /// vgpuctl's NVML helper (nvml-helper/), looked for beside vgpuctl first.
    NvmlHelper,
    /// vgpuctl's libvirt helper (libvirt-helper/), found like the NVML one.
    LibvirtHelper,
}

impl Tool {
    pub fn program(self) -> &'static str {
        match self {
            Tool::NvidiaSmi => "nvidia-smi",
            Tool::Mdevctl => "mdevctl",
            Tool::NvmlHelper => "vgpuctl-nvml",
            Tool::LibvirtHelper => "vgpuctl-libvirt",
        }
    }

    pub fn env_var(self) -> &'static str {
        match self {
            Tool::NvidiaSmi => "VGPUCTL_NVIDIA_SMI",
            Tool::Mdevctl => "VGPUCTL_MDEVCTL",
            Tool::NvmlHelper => "VGPUCTL_NVML_HELPER",
            Tool::LibvirtHelper => "VGPUCTL_LIBVIRT_HELPER",
        }
    }

    /// vgpuctl's own helpers, which ship with it and are found without configuration.
    pub fn is_helper(self) -> bool {
        matches!(self, Tool::NvmlHelper | Tool::LibvirtHelper)
    }
}

/// Where a package puts the helpers, relative to the prefix vgpuctl is in:
/// `/usr/bin/vgpuctl` finds `/usr/libexec/vgpuctl/vgpuctl-nvml`, and a
/// `/usr/local` install its own `/usr/local/libexec/vgpuctl/`.
pub const LIBEXEC_FROM_PREFIX: &str = "libexec/vgpuctl";

/// What to do about a missing helper, in every message that says so.
pub const HELPER_HINT: &str = "install the vgpuctl package, which puts it in /usr/libexec/vgpuctl; from source, build libvirt-helper/ or nvml-helper/ and put the binary beside vgpuctl; or name it with VGPUCTL_LIBVIRT_HELPER / VGPUCTL_NVML_HELPER";

#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended it, or when it had not
    /// exited yet after ending its output (`still_running`).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Only from [`Running::finish_output`]: the tool closed its output and
    /// went on (a helper tearing down after its answer); it is reaped later.
    pub still_running: bool,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

#[derive(Debug, Clone, Default)]
pub struct CommandRunner {
    nvidia_smi: Option<PathBuf>,
    mdevctl: Option<PathBuf>,
    nvml_helper: Option<PathBuf>,
    libvirt_helper: Option<PathBuf>,
    search_path: Option<std::ffi::OsString>,
    /// Where vgpuctl itself lives: its helpers are installed beside it.
    beside: Option<PathBuf>,
}

impl CommandRunner {
    /// Programs from `VGPUCTL_NVIDIA_SMI` / `VGPUCTL_MDEVCTL` when set,
    /// otherwise looked up in `PATH` when first needed.
    pub fn from_env() -> Self {
        let get = |t: Tool| std::env::var_os(t.env_var()).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            nvidia_smi: get(Tool::NvidiaSmi),
            mdevctl: get(Tool::Mdevctl),
            nvml_helper: get(Tool::NvmlHelper),
            libvirt_helper: get(Tool::LibvirtHelper),
            search_path: std::env::var_os("PATH"),
            beside: std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)),
        }
    }

    /// A runner that finds nothing: for simulated hosts, whose NVIDIA state
    /// lives in the tree, and for tests.
    pub fn none() -> Self {
        Self { nvidia_smi: None, mdevctl: None, nvml_helper: None, libvirt_helper: None, search_path: Some(Default::default()), beside: None }
    }

    pub fn with_program(mut self, tool: Tool, path: impl Into<PathBuf>) -> Self {
        match tool {
            Tool::NvidiaSmi => self.nvidia_smi = Some(path.into()),
            Tool::Mdevctl => self.mdevctl = Some(path.into()),
            Tool::NvmlHelper => self.nvml_helper = Some(path.into()),
            Tool::LibvirtHelper => self.libvirt_helper = Some(path.into()),
        }
        self
    }

    /// Where the tool would be run from, if it can be found at all.
    pub fn locate(&self, tool: Tool) -> Option<PathBuf> {
        if let Some(p) = self.explicit(tool) {
            return p.is_file().then(|| p.clone());
        }
        if tool.is_helper() {
            // Beside vgpuctl (a build tree, a tarball), then where the package puts them.
            let dirs = self.beside.iter().flat_map(|d| [Some(d.clone()), d.parent().map(|prefix| prefix.join(LIBEXEC_FROM_PREFIX))]).flatten();
            if let Some(p) = dirs.map(|d| d.join(tool.program())).find(|p| is_executable(p)) {
                return Some(p);
            }
        }
        let search = self.search_path.as_deref().unwrap_or(OsStr::new("/usr/sbin:/usr/bin:/sbin:/bin"));
        std::env::split_paths(search).map(|d| d.join(tool.program())).find(|p| is_executable(p))
    }

    fn explicit(&self, tool: Tool) -> Option<&PathBuf> {
        match tool {
            Tool::NvidiaSmi => self.nvidia_smi.as_ref(),
            Tool::Mdevctl => self.mdevctl.as_ref(),
            Tool::NvmlHelper => self.nvml_helper.as_ref(),
            Tool::LibvirtHelper => self.libvirt_helper.as_ref(),
        }
    }

    pub fn is_available(&self, tool: Tool) -> bool {
        self.locate(tool).is_some()
    }

    /// Runs the tool with `args`, waiting at most `timeout`. A tool that hangs
    /// (nvidia-smi does, when the driver is wedged) is killed, not waited on forever.
    pub fn run(&self, tool: Tool, args: &[&str], timeout: Duration) -> HostResult<CommandOutput> {
        self.start(tool, args)?.finish(timeout)
    }

    /// [`CommandRunner::run`] through [`Running::finish_output`].
    pub fn run_output(&self, tool: Tool, args: &[&str], timeout: Duration, answered: impl Fn(&str) -> bool) -> HostResult<CommandOutput> {
        self.start(tool, args)?.finish_output(timeout, answered)
    }

    /// Starts the tool and returns at once; [`Running::finish`] collects its
    /// output. What a command will surely need can so run while vgpuctl reads
    /// sysfs (the NVML helper's start is most of its cost).
    pub fn start(&self, tool: Tool, args: &[&str]) -> HostResult<Running> {
        let program = self.locate(tool).ok_or_else(|| HostError::ToolMissing {
            tool: tool.program(),
            looked_for: self.explicit(tool).map(|p| p.display().to_string()).unwrap_or_else(|| "PATH".to_string()),
            env: tool.env_var(),
        })?;
        let mut child = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C")
            .spawn()
            .map_err(|source| HostError::ToolSpawn { tool: tool.program(), source })?;
        // Drain both pipes on threads so a chatty tool cannot block on a full
        // pipe; stdout's end (the tool exited, as a rule) is what is waited for.
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_all(out.as_mut()));
        });
        let (tx, stderr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_all(err.as_mut()));
        });
        Ok(Running { tool, child: Some(child), stdout, stderr, started: Instant::now() })
    }
}

/// A tool started by [`CommandRunner::start`]. Dropped unfinished, it is
/// killed and reaped.
#[derive(Debug)]
pub struct Running {
    tool: Tool,
    child: Option<std::process::Child>,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
    started: Instant,
}

impl Running {
    /// Waits for the tool, at most `timeout` from its start. Returns as soon
    /// as it exits (no polling interval added to a 20 ms tool).
    pub fn finish(mut self, timeout: Duration) -> HostResult<CommandOutput> {
        let tool = self.tool.program();
        let deadline = self.started + timeout;
        let timed_out = || HostError::ToolTimeout { tool, seconds: timeout.as_secs() };
        let Some(mut child) = self.child.take() else { return Err(timed_out()) };
        let left = deadline.saturating_duration_since(Instant::now());
        let stdout = match self.stdout.recv_timeout(left) {
            Ok(s) => s,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(timed_out());
            }
        };
        // stdout is closed: the tool has exited, or is about to (or closed it
        // early and goes on, which the deadline still bounds).
        let status = wait_until(&mut child, deadline).ok_or_else(timed_out)?.map_err(|source| HostError::ToolSpawn { tool, source })?;
        // Exited: stderr ends with it, unless something it started holds it,
        // which is waited for until the deadline (and a moment, for the
        // reading thread to hand over what it read).
        let stderr = self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(200))).unwrap_or_default();
        Ok(CommandOutput { status: status.code(), stdout, stderr, still_running: false })
    }

    /// For a tool that ends its output once its answer is complete and then
    /// goes on tearing down (vgpuctl-nvml closes both outputs before NVML's
    /// shutdown, which costs 4–6 ms on an H200): returns when stdout and
    /// stderr have ended, with the exit status if it has exited by then.
    /// Otherwise, when `answered` says stdout holds an answer, `still_running`
    /// is set and a thread reaps the tool, killing it at the deadline (when
    /// vgpuctl exits first, the tool runs its course). Output ended without
    /// an answer is a tool exiting (its descriptors close a moment before it
    /// can be reaped), so its status is waited for as [`Running::finish`] does.
    pub fn finish_output(mut self, timeout: Duration, answered: impl Fn(&str) -> bool) -> HostResult<CommandOutput> {
        let tool = self.tool.program();
        let deadline = self.started + timeout;
        let Some(mut child) = self.child.take() else { return Err(HostError::ToolTimeout { tool, seconds: timeout.as_secs() }) };
        let left = || deadline.saturating_duration_since(Instant::now());
        let ended = self.stdout.recv_timeout(left()).and_then(|stdout| Ok((stdout, self.stderr.recv_timeout(left())?)));
        let Ok((stdout, stderr)) = ended else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HostError::ToolTimeout { tool, seconds: timeout.as_secs() });
        };
        match child.try_wait() {
            Ok(Some(status)) => Ok(CommandOutput { status: status.code(), stdout, stderr, still_running: false }),
            Ok(None) if answered(&stdout) => {
                // Reaped, and killed at the deadline like any tool: a wedged
                // driver must not leave `metrics --listen` a hung helper per scrape.
                std::thread::spawn(move || {
                    let _ = wait_until(&mut child, deadline);
                });
                Ok(CommandOutput { status: None, stdout, stderr, still_running: true })
            }
            Ok(None) => {
                let status = wait_until(&mut child, deadline).ok_or(HostError::ToolTimeout { tool, seconds: timeout.as_secs() })?;
                Ok(CommandOutput { status: status.map_err(|source| HostError::ToolSpawn { tool, source })?.code(), stdout, stderr, still_running: false })
            }
            Err(source) => Err(HostError::ToolSpawn { tool, source }),
        }
    }
}

/// The tool's exit, polled on a short back-off (it is exiting as a rule);
/// `None` when the deadline passed first, and then it is killed and reaped.
fn wait_until(child: &mut std::process::Child, deadline: Instant) -> Option<std::io::Result<std::process::ExitStatus>> {
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Some(Err(e)),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_all<R: Read>(r: Option<&mut R>) -> String {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> PathBuf {
        named_script(dir, "fake-tool", body)
    }

    fn named_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn test_run_replaced_program_passes_args_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), r#"printf '%s|' "$@"; echo; echo oops >&2; exit 3"#);
        let r = CommandRunner::none().with_program(Tool::NvidiaSmi, p);
        let out = r.run(Tool::NvidiaSmi, &["a b", "$(reboot)", ";x"], Duration::from_secs(5)).unwrap();
        assert_eq!(out.stdout.trim(), "a b|$(reboot)|;x|");
        assert_eq!(out.stderr.trim(), "oops");
        assert_eq!(out.status, Some(3));
    }

    #[test]
    fn test_helpers_are_found_beside_vgpuctl_then_in_libexec_never_elsewhere_first() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("usr/bin");
        let libexec = d.path().join("usr/libexec/vgpuctl");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&libexec).unwrap();
        let runner = CommandRunner { beside: Some(bin.clone()), ..CommandRunner::none() };
        assert_eq!(runner.locate(Tool::LibvirtHelper), None);
        let packaged = libexec.join("vgpuctl-libvirt");
        std::fs::rename(script(&libexec, "true"), &packaged).unwrap();
        assert_eq!(runner.locate(Tool::LibvirtHelper).unwrap(), packaged, "shown without `..`");
        // A copy beside the binary wins (a build tree, an unpacked tarball).
        let beside = bin.join("vgpuctl-libvirt");
        std::fs::copy(&packaged, &beside).unwrap();
        assert_eq!(runner.locate(Tool::LibvirtHelper).unwrap(), beside);
        // nvidia-smi is never looked for there.
        std::fs::copy(&packaged, libexec.join("nvidia-smi")).unwrap();
        assert_eq!(runner.locate(Tool::NvidiaSmi), None);
    }

    #[test]
    fn test_run_missing_tool_names_the_env_var() {
        let err = CommandRunner::none().run(Tool::Mdevctl, &[], Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("VGPUCTL_MDEVCTL"), "{err}");
    }

    #[test]
    fn test_run_hanging_tool_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "exec sleep 30");
        let r = CommandRunner::none().with_program(Tool::NvidiaSmi, p);
        let t = Instant::now();
        let err = r.run(Tool::NvidiaSmi, &[], Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, HostError::ToolTimeout { .. }));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn test_started_tools_run_side_by_side_and_one_dropped_unfinished_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let slow = script(dir.path(), &format!("echo $$ >{}\nexec sleep 30", pidfile.display()));
        let quick = named_script(dir.path(), "quick", "echo \"$@\"; echo oops >&2; exit 3");
        let r = CommandRunner::none().with_program(Tool::NvidiaSmi, &slow).with_program(Tool::Mdevctl, &quick);
        let running = r.start(Tool::NvidiaSmi, &[]).unwrap();
        let out = r.start(Tool::Mdevctl, &["a b", "c"]).unwrap().finish(Duration::from_secs(10)).unwrap();
        assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (Some(3), "a b c\n", "oops\n"));
        let t = Instant::now();
        while !pidfile.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(running);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed and reaped");
    }

    #[test]
    fn test_finish_output_returns_when_the_output_ends_and_reaps_the_tool_later() {
        let dir = tempfile::tempdir().unwrap();
        // Ends its output, then goes on (as the NVML helper's shutdown does).
        let p = script(dir.path(), "echo answer; echo note >&2; exec >&- 2>&-; exec sleep 30");
        let r = CommandRunner::none().with_program(Tool::NvmlHelper, p);
        let out = r.start(Tool::NvmlHelper, &[]).unwrap().finish_output(Duration::from_secs(20), |o| !o.is_empty()).unwrap();
        assert_eq!((out.stdout.as_str(), out.stderr.as_str(), out.status, out.still_running), ("answer\n", "note\n", None, true));
        // A tool that ends its output by exiting, without an answer, reports
        // its status however soon after its output ends it can be reaped.
        let q = named_script(dir.path(), "quick", "echo failed >&2; exit 3");
        let runner = CommandRunner::none().with_program(Tool::NvmlHelper, &q);
        for _ in 0..50 {
            let out = runner.run_output(Tool::NvmlHelper, &[], Duration::from_secs(20), |o| !o.is_empty()).unwrap();
            assert_eq!((out.stderr.as_str(), out.status, out.still_running), ("failed\n", Some(3), false));
        }
    }

    #[test]
    fn test_a_tool_that_answered_and_then_hangs_is_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let p = script(dir.path(), &format!("echo $$ >{}; echo answer; exec >&- 2>&-; exec sleep 30", pidfile.display()));
        let r = CommandRunner::none().with_program(Tool::NvmlHelper, p);
        let out = r.run_output(Tool::NvmlHelper, &[], Duration::from_millis(500), |o| !o.is_empty()).unwrap();
        assert!(out.still_running);
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_string();
        let t = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed at the deadline and reaped");
    }

    #[test]
    fn test_finish_output_still_bounds_a_tool_that_keeps_stderr_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "echo answer; exec >&-; exec sleep 30");
        let r = CommandRunner::none().with_program(Tool::NvmlHelper, p);
        let err = r.run_output(Tool::NvmlHelper, &[], Duration::from_millis(300), |o| !o.is_empty()).unwrap_err();
        assert!(matches!(err, HostError::ToolTimeout { .. }), "{err}");
    }
}
