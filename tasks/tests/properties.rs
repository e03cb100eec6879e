//! Property tests: whatever a user (or a service) hands these parsers, they answer with a
//! value or a diagnostic, never a panic. Bounded (a few hundred cases each) so they run in
//! the normal test command; `fuzz/` has the unbounded cargo-fuzz targets for the same
//! entry points. A panic found here or there becomes a regression case below.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{TimeZone, Utc};
use orchestrator_engine::schedule::{Dst, Expr};
use orchestrator_engine::template::{Renderer, TemplateVars};
use orchestrator_engine::workflow::{load_str, LoadOptions};
use proptest::prelude::*;

const DAILY: &str = include_str!("../../workflows/daily.yaml");

fn load(text: &str) {
    let registry = orchestrator_tasks::registry();
    let opts = LoadOptions {
        registry: &registry,
        overrides: BTreeMap::new(),
        inherited: BTreeMap::new(),
        run_id: "r".into(),
        date: "2026-01-02".into(),
        scheduled_at: None,
        trigger_files: Vec::new(),
        env: BTreeMap::new(),
        default_warehouse: "/nonexistent/warehouse".into(),
        backend: None,
        channels_file: None,
    };
    let path = Path::new("/nonexistent/workflows/fuzz.yaml");
    if let Err(diagnostics) = load_str(path, text.to_string(), &opts) {
        // Rendering the diagnostics (excerpts, carets) must not panic either.
        let shown = diagnostics.to_string();
        assert!(
            shown.contains("error"),
            "a failed load says nothing: {shown}"
        );
    }
}

/// Pieces YAML and our templates give meaning to.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(":".to_string()),
        Just(": ".to_string()),
        Just("- ".to_string()),
        Just("\n".to_string()),
        Just("\n  ".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("|".to_string()),
        Just(">".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: *a".to_string()),
        Just("!!str ".to_string()),
        Just("#".to_string()),
        Just("{{ ".to_string()),
        Just(" }}".to_string()),
        Just("params.".to_string()),
        Just("run.date".to_string()),
        Just("after: [".to_string()),
        Just("kind: ".to_string()),
        Just("\t".to_string()),
        Just("\u{feff}".to_string()),
        "[a-z_]{1,8}",
        "[0-9]{1,4}",
        any::<char>().prop_map(String::from),
    ]
}

/// An edit of a valid workflow: replace bytes `at..at+len` with `insert`.
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (
        0..base.len(),
        0usize..40,
        prop::collection::vec(token(), 0..6),
    )
        .prop_map(move |(at, len, insert)| {
            let mut start = at;
            while !base.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(base.len());
            while !base.is_char_boundary(end) {
                end += 1;
            }
            format!("{}{}{}", &base[..start], insert.concat(), &base[end..])
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        load(&text);
    }

    #[test]
    fn the_loader_never_panics_on_yaml_made_of_meaningful_pieces(
        pieces in prop::collection::vec(token(), 0..80)
    ) {
        load(&pieces.concat());
    }

    #[test]
    fn the_loader_never_panics_on_an_edited_daily_yaml(text in mutated(DAILY)) {
        load(&text);
    }

    #[test]
    fn templates_render_or_explain(pieces in prop::collection::vec(prop_oneof![
        Just("{{".to_string()), Just("}}".to_string()), Just("{%".to_string()),
        Just("%}".to_string()), Just("{#".to_string()), Just(" | ".to_string()),
        Just("params.".to_string()), Just("run.".to_string()), Just("env.".to_string()),
        Just("shell_quote".to_string()), Just("sql_string".to_string()),
        Just("(".to_string()), Just(")".to_string()), Just("'".to_string()),
        Just("\"".to_string()), Just("date".to_string()), Just("greeting".to_string()),
        Just(" for x in ".to_string()), Just("endfor".to_string()), Just(" if ".to_string()),
        Just("range(99999)".to_string()), Just("~".to_string()), Just("*".to_string()),
        "[a-z]{1,6}", "[0-9]{1,3}", any::<char>().prop_map(String::from),
    ], 0..40)) {
        let params = BTreeMap::from([("greeting".to_string(), "hi".to_string())]);
        let vars = TemplateVars::for_run(params, "r", "2026-01-02");
        let renderer = Renderer::new(&vars);
        match renderer.render(&pieces.concat()) {
            Ok(_) => {}
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn schedules_parse_or_explain_and_never_panic_when_asked_for_times(
        text in prop_oneof![
            prop::collection::vec(prop_oneof![
                Just("cron(".to_string()), Just("rate(".to_string()), Just(")".to_string()),
                Just(" ".to_string()), Just("*".to_string()), Just("?".to_string()),
                Just("L".to_string()), Just("W".to_string()), Just("#".to_string()),
                Just("-".to_string()), Just(",".to_string()), Just("/".to_string()),
                Just("MON".to_string()), Just("FRI".to_string()), Just("JAN".to_string()),
                Just("LW".to_string()), Just("minutes".to_string()), Just("day".to_string()),
                "[0-9]{1,2}", "[0-9]{3,10}", any::<char>().prop_map(String::from),
            ], 0..16).prop_map(|p| p.concat()),
            // Well-formed fields in odd combinations: these parse, and must be asked.
            (prop::collection::vec(cron_field(), 5..=6), any::<bool>()).prop_map(|(f, eventbridge)| {
                if eventbridge {
                    format!("cron({} {})", f[..5].join(" "), f.get(5).map_or("*", |s| s.as_str()))
                } else {
                    f.join(" ")
                }
            }),
        ],
        zone in prop_oneof![Just("UTC"), Just("America/New_York"), Just("Europe/Berlin"), Just("Australia/Lord_Howe")],
        start in 0i64..4_102_444_800,
    ) {
        if let Ok(expr) = Expr::parse(&text) {
            let tz = orchestrator_engine::schedule::parse_timezone(zone).unwrap();
            let after = Utc.timestamp_opt(start, 0).unwrap();
            let mut t = after;
            for _ in 0..3 {
                match expr.next_after(t, tz, Dst::default()) {
                    Some(next) => {
                        prop_assert!(next > t, "{text}: {next} is not after {t}");
                        t = next;
                    }
                    None => break,
                }
            }
        }
    }

    #[test]
    fn alpha_vantage_answers_parse_or_explain(body in alpha_vantage_body()) {
        let _ = orchestrator_tasks::alpha_vantage::answer::parse_daily("NVDA", &body);
        let _ = orchestrator_tasks::alpha_vantage::quote::parse_quote("NVDA", &body);
    }
}

/// One cron field: values, ranges, steps, lists and the EventBridge specials.
fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        Just("L".to_string()),
        Just("LW".to_string()),
        Just("MON-FRI".to_string()),
        Just("SAT,SUN".to_string()),
        Just("JAN-MAR".to_string()),
        (0u32..70).prop_map(|n| n.to_string()),
        (0u32..40, 0u32..40).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..40, 0u32..70).prop_map(|(a, b)| format!("{a}/{b}")),
        (0u32..40).prop_map(|n| format!("*/{n}")),
        (0u32..35).prop_map(|n| format!("{n}W")),
        (0u32..9, 0u32..7).prop_map(|(d, k)| format!("{d}#{k}")),
        (0u32..8).prop_map(|d| format!("{d}L")),
        (1970u32..2300).prop_map(|y| y.to_string()),
    ]
}

/// Bodies shaped like Alpha Vantage's answers, good and bad: JSON with its real keys and
/// wrong types, truncated JSON, HTML error pages, CSV, nothing.
fn alpha_vantage_body() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        "[0-9]{1,6}(\\.[0-9]{1,4})?".prop_map(|n| format!("\"{n}\"")),
        Just("\"-1\"".to_string()),
        Just("\"NaN\"".to_string()),
        Just("\"\"".to_string()),
        Just("null".to_string()),
        Just("{}".to_string()),
        Just("[]".to_string()),
        Just("1e999".to_string()),
        "[a-zA-Z ]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ];
    let bar = (
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]|not-a-date",
        prop::collection::vec(
            (
                prop_oneof![
                    Just("1. open"),
                    Just("2. high"),
                    Just("3. low"),
                    Just("4. close"),
                    Just("5. volume"),
                    Just("05. price"),
                    Just("06. volume"),
                    Just("07. latest trading day"),
                ],
                value,
            ),
            0..7,
        ),
    )
        .prop_map(|(date, fields)| {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("\"{k}\": {v}"))
                .collect();
            format!("\"{date}\": {{{}}}", fields.join(", "))
        });
    let json = (
        prop_oneof![
            Just("Time Series (Daily)"),
            Just("Global Quote"),
            Just("Meta Data"),
            Just("Note"),
            Just("Information"),
            Just("Error Message"),
        ],
        prop::collection::vec(bar, 0..5),
        0usize..3,
    )
        .prop_map(|(key, bars, cut)| {
            let text = format!("{{\"{key}\": {{{}}}}}", bars.join(", "));
            // Sometimes truncated, as a dropped connection leaves it.
            let keep = text.len() - (text.len() / 3) * cut.min(1);
            let mut keep = keep;
            while !text.is_char_boundary(keep) {
                keep -= 1;
            }
            text[..keep].to_string()
        });
    prop_oneof![
        json,
        Just("<html><body>502 Bad Gateway</body></html>".to_string()),
        Just("{\"Information\": \"Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day.\"}".to_string()),
        Just("timestamp,open,high,low,close,volume\n2026-01-02,1,2,0.5,1.5,100\n".to_string()),
        Just(String::new()),
        "\\PC{0,200}",
    ]
}

/// Regression cases: inputs that once panicked stay here.
#[test]
fn regressions() {
    for text in ["name: x\ntasks:\n  a: *b\n", "\u{feff}", "name: [\n"] {
        load(text);
    }
}
