//! README's examples, run as written: the output README shows must be the output the
//! binary prints (run ids, dates, durations and the sandbox's paths masked). When the two
//! diverge, this fails, and README or the binary is wrong.

use std::path::PathBuf;

use crate::common::Sandbox;

fn readme() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The text under `heading` (a whole line), up to the next heading of its level or
/// above outside a code block.
fn section(text: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut out = Vec::new();
    let mut inside = false;
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if !fenced && !line.trim_start().starts_with("```") {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            let is_heading = hashes > 0 && line[hashes..].starts_with(' ');
            if line == heading {
                inside = true;
                continue;
            }
            if inside && is_heading && hashes <= level {
                break;
            }
        }
        if inside {
            out.push(line);
        }
    }
    assert!(inside, "README has no `{heading}`");
    out.join("\n")
}

/// The fenced code blocks of `text` whose info string is `lang`, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == format!("```{lang}") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(body.join("\n"));
        }
    }
    out
}

/// One word as README shows it: run ids, dates and durations become placeholders.
fn mask_word(w: &str) -> String {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let core = w.trim_end_matches([',', ':', ')', ';']);
    let tail = &w[core.len()..];
    let run_id = core.len() == 20
        && digits(&core[..8])
        && &core[8..9] == "T"
        && digits(&core[9..15])
        && &core[15..16] == "-";
    let date = core.len() == 10 && digits(&core[..4]) && &core[4..5] == "-" && digits(&core[5..7]);
    let duration = core.strip_suffix("ms").is_some_and(digits)
        || core
            .strip_suffix('s')
            .is_some_and(|n| n.split('.').all(digits) && n.contains('.'));
    if run_id {
        format!("RUN{tail}")
    } else if date {
        format!("DATE{tail}")
    } else if duration {
        format!("DUR{tail}")
    } else {
        w.to_string()
    }
}

/// Lines with masked words and single spaces (table columns widen with durations).
fn masked(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .map(mask_word)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_first_workflow_example_prints_what_readme_shows() {
    let text = readme();
    let s = section(&text, "## A first workflow");
    let yaml = &blocks(&s, "yaml")[0];
    let console = &blocks(&s, "console")[0];
    let mut lines = console.lines();
    let command = lines.next().unwrap().trim_start_matches("$ ");
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let expected: Vec<&str> = lines.collect();
    let sb = Sandbox::new();
    sb.write("demo.yaml", yaml);
    // README shows the default state dir; the sandbox's is elsewhere.
    let mut c = sb.command(&args);
    c.env_remove("ORCHESTRATOR_STATE_DIR")
        .current_dir(sb.path(""));
    let out = crate::common::Out::from(c.output().unwrap());
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        !out.stderr.contains("warning"),
        "README's example warns: {out:?}"
    );
    // Task output goes to stderr (`load | hi`), the rest to stdout.
    let (want_err, want_out): (Vec<&str>, Vec<&str>) =
        expected.iter().partition(|l| l.contains(" | "));
    assert_eq!(
        masked(&out.stdout),
        masked(&want_out.join("\n")),
        "stdout differs from README's:\n{}",
        out.stdout
    );
    for l in want_err {
        assert!(out.stderr.contains(l), "stderr lacks `{l}`: {out:?}");
    }
}

#[test]
fn the_validate_example_prints_what_readme_shows() {
    let text = readme();
    let yaml = blocks(&section(&text, "## A first workflow"), "yaml")[0].clone();
    let expected = blocks(&section(&text, "### Validation"), "text")[0].clone();
    // README's broken copy of the first example: a misspelt field and a misspelt task.
    let broken = yaml
        .replacen("    after: [extract]", "    aftr: [extract]", 1)
        .replacen("    after: [load]", "    after: [laod]", 1);
    assert_ne!(broken, yaml);
    let sb = Sandbox::new();
    sb.write("demo.yaml", &broken);
    let out = sb.run(&["validate", "demo.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    let shown = out.stderr.replace(
        &sb.path("demo.yaml").display().to_string(),
        "/work/demo.yaml",
    );
    assert_eq!(
        masked(&shown),
        masked(&expected),
        "validate's output differs from README's:\n{shown}"
    );
}
