//! Hostile input gets bounded work: YAML alias bombs, runaway templates, absurd task ids
//! and endless output lines are refused or cut within a small CPU and memory budget.
//!
//! Each case is measured on the child alone (`wait4`'s resource usage: CPU seconds and
//! peak RSS of the orchestrator process and anything it waited for). The bounds are
//! safety limits far above what a healthy run needs (about 10 ms and 20 MB here), not
//! speed targets: before the fixes these cases took minutes and gigabytes.

use std::process::{Command, Stdio};

use crate::common::Sandbox;

struct Measured {
    code: i32,
    cpu_secs: f64,
    max_rss_mb: f64,
    stderr: String,
}

impl std::fmt::Debug for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}, {:.2} s CPU, {:.0} MB peak RSS\n--- stderr (first 2000 chars)\n{}",
            self.code,
            self.cpu_secs,
            self.max_rss_mb,
            self.stderr.chars().take(2000).collect::<String>()
        )
    }
}

fn measure(mut cmd: Command, sb: &Sandbox) -> Measured {
    let err_path = sb.path("measured.stderr");
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // Reaped below with wait4, which std's `Child` cannot do (it would not return the
    // resource usage).
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid pointers to locals; the child is ours and is
    // reaped here exactly once (std's `Child` is never waited on).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        let r = libc::wait4(pid, &mut status, 0, &mut usage);
        assert_eq!(r, pid, "wait4 failed");
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        cpu_secs: secs(usage.ru_utime) + secs(usage.ru_stime),
        max_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn assert_refused_cheaply(m: &Measured, needle: &str) {
    assert_eq!(m.code, 2, "{m:?}");
    assert!(m.stderr.contains(needle), "expected `{needle}` in {m:?}");
    assert!(!m.stderr.contains("panicked"), "{m:?}");
    assert!(m.cpu_secs < 2.0, "{m:?}");
    assert!(m.max_rss_mb < 200.0, "{m:?}");
}

#[test]
fn a_yaml_alias_bomb_is_refused() {
    let sb = Sandbox::new();
    let mut yaml = String::from("name: bomb\nx0: &a0 [x,x,x,x,x,x,x,x,x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(",");
        yaml.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    yaml.push_str("tasks:\n  a:\n    kind: noop\n");
    assert!(yaml.len() < 600, "{}", yaml.len());
    sb.write("bomb.yaml", &yaml);
    let m = measure(sb.command(&["validate", "bomb.yaml"]), &sb);
    assert_refused_cheaply(&m, "alias");
}

#[test]
fn a_runaway_template_is_refused() {
    let sb = Sandbox::new();
    let mut tpl = String::new();
    for i in 0..9 {
        tpl.push_str(&format!("{{% for i{i} in 'abcdefghijklmnopqrstuvwxyz' %}}"));
    }
    tpl.push('x');
    for _ in 0..9 {
        tpl.push_str("{% endfor %}");
    }
    sb.write(
        "loops.yaml",
        &format!("name: loops\ntasks:\n  a:\n    kind: shell\n    command: \"{tpl}\"\n"),
    );
    let m = measure(sb.command(&["validate", "loops.yaml"]), &sb);
    assert_refused_cheaply(&m, "loops.yaml:5");
}

#[test]
fn a_100000_character_task_id_is_refused() {
    let sb = Sandbox::new();
    let id = "a".repeat(100_000);
    sb.write(
        "long.yaml",
        &format!("name: long\ntasks:\n  {id}:\n    kind: noop\n    bogus: 1\n"),
    );
    let m = measure(sb.command(&["validate", "long.yaml"]), &sb);
    assert_refused_cheaply(&m, "long.yaml:3");
    // The diagnostic shows the neighbourhood of the error, not a 100 KB line.
    assert!(
        m.stderr.len() < 20_000,
        "{} bytes of stderr",
        m.stderr.len()
    );
}

#[test]
fn output_without_newlines_is_bounded_in_memory() {
    let sb = Sandbox::new();
    // 300 MB on one line.
    sb.write(
        "flood.yaml",
        "name: flood\ntasks:\n  a:\n    kind: shell\n    command: \"head -c 300000000 /dev/zero | tr '\\\\0' a\"\n",
    );
    let m = measure(sb.command(&["run", "flood.yaml", "-q"]), &sb);
    assert_eq!(m.code, 0, "{m:?}");
    assert!(m.max_rss_mb < 200.0, "{m:?}");
    let out = sb.run(&["runs", "--json"]);
    assert!(out.stdout.contains("\"succeeded\""), "{out:?}");
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let show = sb.run(&["show", runs[0]["id"].as_str().unwrap()]);
    assert!(show.stdout.contains("[line cut at"), "{show:?}");
}
