//! `deploy/local/up.sh` starts everything (control plane, engine, CRDs, `local-dps`, the operator), the
//! examples go Ready against it, and SIGTERM to the script stops every process it started.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Lines;
use crate::support::control_plane::TEST_KUBECONFIG_ENV;
use crate::support::engine::free_port;

/// Processes whose command line or environment mention `marker` (every descendant of the script inherits
/// `DPS_LOCAL_DIR`, so this finds them even after they are re-parented), with their command lines.
fn processes_mentioning(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() || is_zombie(pid) {
            continue;
        }
        let read = |file: &str| std::fs::read(entry.path().join(file)).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&read("cmdline")).replace('\0', " ");
        let environ = String::from_utf8_lossy(&read("environ")).to_string();
        if cmdline.contains(marker) || environ.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// A zombie has exited; only its parent has not collected its status yet.
fn is_zombie(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name, which may itself contain spaces.
    stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
}

/// Kills whatever a failed test left running, so one failure does not leak a control plane.
struct Leftovers {
    marker: String,
    script: Option<Child>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(mut script) = self.script.take() {
            let _ = script.kill();
            let _ = script.wait();
        }
        for (pid, _) in processes_mentioning(&self.marker) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

fn kubectl(kubeconfig: &Path) -> Command {
    let mut command = Command::new("kubectl");
    command.arg("--kubeconfig").arg(kubeconfig);
    command
}

/// A running `up.sh` that has said it is ready, with its own state directory, ports and process group.
struct Up {
    state: PathBuf,
    said: Lines,
    guard: Leftovers,
    kubeconfig: PathBuf,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn own_cluster() -> Option<std::ffi::OsString> {
    std::env::var_os(TEST_KUBECONFIG_ENV)
}

/// Starts `up.sh` in a process group of its own (as a shell starts a foreground job) and waits for "ready".
fn start_up(name: &str) -> Up {
    let state = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("up-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).expect("state directory");
    let mut command = Command::new(root().join("deploy/local/up.sh"));
    command
        .env("DPS_LOCAL_DIR", &state)
        .env("DPS_APISERVER_PORT", free_port().to_string())
        // A loopback block of its own (the hubs take .2 and .3), apart from the engines of other tests.
        .env("DPS_ENGINE_LISTEN", format!("127.251.{}.1:{}", std::process::id() % 250, free_port()))
        .env("DPS_OPERATOR_BIN", env!("CARGO_BIN_EXE_dps-operator"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if own_cluster().is_none() {
        command.env_remove(TEST_KUBECONFIG_ENV);
    }
    let mut script = command.spawn().expect("up.sh starts");
    let mut said = Lines::new(script.stderr.take().expect("stderr is piped"));
    let guard = Leftovers { marker: state.display().to_string(), script: Some(script) };
    let ready = said.wait_for(Duration::from_secs(300), |line| (line == "[up] ready").then_some(()));
    assert!(ready.is_some(), "up.sh never said ready; it said:\n{}", said.seen.join("\n"));
    let kubeconfig = match own_cluster() {
        Some(path) => PathBuf::from(path),
        None => state.join("control-plane/kubeconfig"),
    };
    Up { state, said, guard, kubeconfig }
}

impl Up {
    /// Checks the operator, the engine and (unless the cluster is the caller's) the control plane run.
    fn assert_everything_runs(&self) {
        let started = processes_mentioning(&self.guard.marker);
        let running = |needle: &str| started.iter().any(|(_, cmd)| cmd.contains(needle));
        assert!(running("dps-operator run"), "no operator among {started:#?}");
        assert!(running("dps-operator engine"), "no engine among {started:#?}");
        if own_cluster().is_none() {
            for part in ["kube-apiserver", "etcd", "kube-controller-manager"] {
                assert!(running(part), "no {part} among {started:#?}");
            }
        }
    }

    /// Sends `signal` to the script (or, like Ctrl-C in a terminal, to its whole process group), waits for
    /// it to exit and checks nothing it started is left; returns its exit code.
    fn stop_with(mut self, signal: &str, whole_group: bool) -> Option<i32> {
        let mut script = self.guard.script.take().expect("the script is held");
        let target = if whole_group { format!("-{}", script.id()) } else { script.id().to_string() };
        let signalled = Command::new("kill").args([&format!("-{signal}"), "--", &target]).status();
        assert!(signalled.is_ok_and(|s| s.success()), "{signal} could not be sent to up.sh");
        let give_up = Instant::now() + Duration::from_secs(90);
        let exit = loop {
            if let Some(status) = script.try_wait().expect("status is readable") {
                break status;
            }
            assert!(Instant::now() < give_up, "up.sh still runs 90 s after {signal}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let left = processes_mentioning(&self.guard.marker);
        assert!(left.is_empty(), "up.sh left these running after {signal}: {left:#?}");
        let said = self.said.wait_for(Duration::from_secs(5), |line| (line == "[up] stopped").then_some(()));
        assert!(said.is_some(), "up.sh did not say it stopped: {:?}", self.said.seen);
        let _ = std::fs::remove_dir_all(&self.state);
        exit.code()
    }
}

#[test]
fn up_sh_starts_everything_the_examples_go_ready_and_sigterm_stops_every_child() {
    let up = start_up("term");
    let hint = up.said.seen.join("\n");
    assert!(hint.contains("kubectl apply -f"), "up.sh printed no walk-through hint:\n{hint}");
    let applied = kubectl(&up.kubeconfig).args(["apply", "-n", "default", "-f"]).arg(root().join("examples")).output();
    let applied = applied.expect("kubectl runs");
    assert!(
        applied.status.success(),
        "kubectl apply -f examples/ failed: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let waited = kubectl(&up.kubeconfig)
        .args(["wait", "-n", "default", "--for=condition=Ready", "--timeout=60s", "individualenrollments", "--all"])
        .output()
        .expect("kubectl runs");
    assert!(
        waited.status.success(),
        "the example IndividualEnrollments did not go Ready: {}{}\noperator log:\n{}",
        String::from_utf8_lossy(&waited.stdout),
        String::from_utf8_lossy(&waited.stderr),
        std::fs::read_to_string(up.state.join("operator.log")).unwrap_or_default()
    );
    up.assert_everything_runs();
    assert_eq!(up.stop_with("TERM", false), Some(143), "up.sh should exit as terminated by SIGTERM");
}

#[test]
fn ctrl_c_to_up_sh_and_its_process_group_stops_every_child() {
    let up = start_up("int");
    up.assert_everything_runs();
    assert_eq!(up.stop_with("INT", true), Some(130), "up.sh should exit as interrupted");
}
