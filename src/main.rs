use clap::Parser;
use tracing_subscriber::EnvFilter;
use vgpuctl::cli::{self, exit, Cli};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging(cli.verbose);
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vgpuctl: {}", cli::error_line(&e));
            if matches!(e, cli::CliError::Usage(_)) { exit::USAGE } else { exit::FAILED }
        }
    };
    std::process::exit(code);
}

/// Warnings only, unless asked for more: the plain case installs a tiny
/// subscriber instead of tracing-subscriber's registry, whose set-up was 7 %
/// of a short command's instructions.
fn init_logging(verbose: u8) {
    let from_env = std::env::var_os("VGPUCTL_LOG").is_some();
    if verbose == 0 && !from_env {
        let _ = tracing::subscriber::set_global_default(vgpuctl::logging::WarnToStderr);
        return;
    }
    let default = match verbose {
        0 | 1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("VGPUCTL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().init();
}
