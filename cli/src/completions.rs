//! `adze completions <shell>`: the shell's completion script for every command.

use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, powershell or elvish. Bash, for one:
    /// `adze completions bash > ~/.local/share/bash-completion/completions/adze`.
    shell: clap_complete::Shell,
}

/// Prints the completion script of `command` (the whole `adze` command line).
pub fn print(args: Args, mut command: clap::Command) -> anyhow::Result<()> {
    let name = command.get_name().to_owned();
    // Into a buffer first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("cannot print the completion script: {e}"))
        }
        _ => Ok(()),
    }
}
