//! Running the program under test as a child process: what it printed
//! and how it exited ([`Run`]), children killed when a test fails
//! ([`KillOnDrop`]), and their output as it comes.
#![allow(dead_code)]

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `toy_lang` example, built for this test run (see
/// [`super::example`]).
pub fn toy_lang() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| super::example("toy_lang", &[]))
}

/// What a run printed and how it exited.
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// Its arguments, for messages.
    pub args: Vec<String>,
}

impl Run {
    pub fn new(out: Output, args: &[&str]) -> Run {
        Run {
            code: out
                .status
                .code()
                .unwrap_or_else(|| panic!("toy_lang {args:?} was killed: {}", out.status)),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Asserts the exit code; returns `self` for chaining.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Run {
        assert_eq!(
            self.code, expected,
            "toy_lang {:?} exited with {} (expected {expected})\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "toy_lang {:?} printed invalid JSON ({e}):\n{}\n--- stderr:\n{}",
                self.args, self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "toy_lang {:?}: stdout lacks {needle:?}:\n{}\n--- stderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "toy_lang {:?}: stderr lacks {needle:?}:\n{}\n--- stdout:\n{}",
            self.args,
            self.stderr,
            self.stdout
        );
        self
    }
}

/// Kills the child on drop, so that a failing assertion leaves no process behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `seconds` for the child to exit (killing it and failing
/// otherwise); returns its output.
pub fn finish_within(mut child: KillOnDrop, seconds: u64, what: &str, args: &[&str]) -> Run {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: toy_lang {args:?} still running after {seconds}s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut out = Output {
        status: child.0.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut s) = child.0.stdout.take() {
        s.read_to_end(&mut out.stdout).unwrap();
    }
    if let Some(mut s) = child.0.stderr.take() {
        s.read_to_end(&mut out.stderr).unwrap();
    }
    Run::new(out, args)
}

/// Spawns `cmd`, with its stdout lines sent to the returned channel as
/// they come.
pub fn spawn_lines(mut cmd: Command) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn the program under test"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Sends SIGINT (Ctrl-C) to watch and expects a clean exit 0.
#[cfg(unix)]
pub fn interrupt(child: KillOnDrop) -> Run {
    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status();
    assert!(
        sent.as_ref().is_ok_and(|s| s.success()),
        "kill -INT {pid}: {sent:?}"
    );
    let run = finish_within(child, 20, "after SIGINT", &["watch"]);
    run.code(0);
    run
}

/// Runs a command to its end, as `Command::output` does, but fails the test
/// when it is still running after `seconds` (killing it), naming `args`: a
/// command that waits forever (a refresh waiting for a row no one
/// computes) fails instead of hanging the suite. Its output is read as it
/// comes, so that a full pipe never stalls it.
pub fn output_within(mut cmd: Command, seconds: u64, args: &[&str]) -> Output {
    use std::io::Read;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run toy_lang");
    let mut child = KillOnDrop(child);
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "toy_lang {args:?} still running after {seconds}s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
