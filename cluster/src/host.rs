//! Commands run on the host (`ip`, `nft`), each checked, with what it
//! printed in the error when it fails.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct CommandError {
    pub command: String,
    pub detail: String,
}

/// Runs `program args...`; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, CommandError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| CommandError {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CommandError {
            command,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// `ip args...`.
pub fn ip(args: &[&str]) -> Result<String, CommandError> {
    run("ip", args)
}

/// `ip -n netns args...`: the same inside a network namespace.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String, CommandError> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(args);
    run("ip", &all)
}
