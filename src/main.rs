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
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("VGPUCTL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).without_time().init();
    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vgpuctl: {}", cli::error_line(&e));
            exit::FAILED
        }
    };
    std::process::exit(code);
}
