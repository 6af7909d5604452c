use clap::Parser;
use tracing_subscriber::EnvFilter;
use vgpuctl::cli::{self, exit, Cli};

fn main() {
    // libvirt runs hooks on every VM event; most have nothing to do, so the
    // hook path skips argument parsing and logging set-up entirely.
    let args: Vec<String> = std::env::args().collect();
    if let Some(hook_args) = hook_invocation(&args) {
        let root = std::env::var_os("VGPUCTL_ROOT").filter(|r| !r.is_empty()).map(std::path::PathBuf::from);
        let code = match vgpuctl::open_host(root.as_deref()) {
            Ok(host) => {
                let _ = tracing::subscriber::set_global_default(vgpuctl::logging::WarnToStderr);
                vgpuctl::hook::run_qemu(&host, hook_args, &mut std::io::stdin().lock())
            }
            Err(e) => {
                eprintln!("vgpuctl hook: {}", vgpuctl::error_chain(&e));
                1
            }
        };
        std::process::exit(code);
    }
    // `--version` also checks the helpers this vgpuctl would run.
    if let Some(json) = version_request(&args) {
        let report = vgpuctl::version::report(&vgpuctl::host::CommandRunner::from_env());
        if json {
            let doc = vgpuctl::cli::doc::VersionDoc { schema_version: vgpuctl::cli::doc::SCHEMA_VERSION, version: report };
            println!("{}", serde_json::to_string(&doc).unwrap_or_default());
        } else {
            print!("{}", vgpuctl::version::render(&report));
        }
        std::process::exit(exit::OK);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    // A script that asked for JSON gets its errors as JSON too.
    let json = args.iter().skip(1).any(|a| a == "--json");
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            if json {
                eprintln!("{}", cli::error_json(&e));
            } else {
                eprintln!("vgpuctl: {}", cli::error_line(&e));
            }
            e.exit_code()
        }
    };
    std::process::exit(code);
}

/// Warnings only, unless asked for more: the plain case installs a tiny
/// subscriber instead of tracing-subscriber's registry, whose set-up was 7 %
/// of a short command's instructions.
fn init_logging(verbose: u8, quiet: bool) {
    let from_env = std::env::var_os("VGPUCTL_LOG").is_some();
    if quiet && !from_env {
        // -q: errors only.
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("error"))
            .with_writer(std::io::stderr)
            .with_target(false)
            .without_time()
            .with_ansi(false)
            .init();
        return;
    }
    if verbose == 0 && !from_env {
        let _ = tracing::subscriber::set_global_default(vgpuctl::logging::WarnToStderr);
        return;
    }
    let default = match verbose {
        0 | 1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("VGPUCTL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal, and never with NO_COLOR set.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().with_ansi(ansi).init();
}

/// `vgpuctl --version|-V [--json]`: Some(json).
fn version_request(args: &[String]) -> Option<bool> {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match rest.as_slice() {
        ["--version" | "-V"] => Some(false),
        ["--version" | "-V", "--json"] | ["--json", "--version" | "-V"] => Some(true),
        _ => None,
    }
}

/// `vgpuctl hook qemu ARGS…`, or the binary installed (symlinked) as a
/// libvirt hook: `…/hooks/qemu ARGS…` or `…/hooks/qemu.d/<name> ARGS…`.
fn hook_invocation(args: &[String]) -> Option<&[String]> {
    if args.len() >= 3 && args[1] == "hook" && args[2] == "qemu" {
        // libvirt never passes a domain named like a help flag; a person does.
        if args.len() == 4 && matches!(args[3].as_str(), "-h" | "--help") {
            return None;
        }
        return Some(&args[3..]);
    }
    let argv0 = std::path::Path::new(args.first()?);
    let parent = argv0.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
    let name = argv0.file_name().and_then(|n| n.to_str());
    (parent == Some("qemu.d") || (name == Some("qemu") && parent == Some("hooks"))).then(|| &args[1..])
}
