//! `riffle demo`, `riffle chaos`, ...: the developer harness lives in its own binary
//! (`riffle-dev`, ADR 0011), so the operator binary links no emulator launcher and no load
//! generator. Its commands typed here are handed to `riffle-dev` beside this binary, as
//! `cargo foo` runs `cargo-foo`.

use std::path::PathBuf;
use std::process::ExitCode;

/// The harness binary's name.
pub const DEV_BINARY: &str = "riffle-dev";

/// Runs `riffle-dev ARGS...` (found beside this binary, else on `PATH`) and exits as it does.
pub fn forward(args: &[String]) -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(DEV_BINARY)))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(DEV_BINARY));
    match std::process::Command::new(&program).args(args).status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            // Killed by a signal (Ctrl-C): the shell's convention.
            None => ExitCode::from(130),
        },
        Err(e) => {
            let command = args.first().map_or("", String::as_str);
            eprintln!(
                "error: `riffle {command}` is not an operator command, and the developer harness \
                 ({DEV_BINARY}) could not be run: {e}\n\
                 Build it with `cargo build --bin {DEV_BINARY}` in a checkout (it runs the local \
                 twin: demo, chaos, schema-gate); `riffle --help` lists the operator commands."
            );
            ExitCode::from(2)
        }
    }
}
