//! Writes vgpuctl's man pages and shell completions from its clap
//! definitions, so they can never disagree with `--help`:
//!
//!     cargo run --release --example gen-docs -- OUT_DIR
//!
//! OUT_DIR/man1/vgpuctl.1 and one page per subcommand (vgpuctl-mdev.1,
//! vgpuctl-mdev-create.1, …), OUT_DIR/completions/{vgpuctl.bash,_vgpuctl,vgpuctl.fish}.
//! scripts/package.sh runs it; the pages are gzipped there.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use vgpuctl::cli::Cli;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen-docs OUT_DIR");
        return ExitCode::from(64);
    };
    match generate(&out) {
        Ok(n) => {
            println!("wrote {n} man pages and 3 completion files under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &std::path::Path) -> std::io::Result<usize> {
    let man = out.join("man1");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    // `vm define|attach|detach|show` (run by the libvirt helper) are part of
    // vgpuctl's own command line, so they get pages and completions too.
    let cmd = Cli::command();
    // One page per command and subcommand, named vgpuctl-<sub>[-<sub>].1,
    // each with the version line and a SEE ALSO back to its parent.
    clap_mangen::generate_to(cmd.clone(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "vgpuctl", &completions)?;
    }
    Ok(std::fs::read_dir(&man)?.count())
}
