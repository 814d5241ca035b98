//! Documentation kept true: the data dictionary in docs/ matches the code's.

use adsim::export::{DICTIONARY, SCHEMA_VERSION};

#[test]
fn dictionary_matches_the_code() {
    let doc = include_str!("../../docs/data-dictionary.md");
    assert!(
        doc.contains(&format!("schema `{SCHEMA_VERSION}`")),
        "schema version {SCHEMA_VERSION} not in the doc"
    );
    let population = doc.split("## Results folder").next().unwrap_or_default();
    let rows: Vec<&str> = population
        .lines()
        .filter(|l| l.starts_with("| `"))
        .collect();
    assert_eq!(
        rows.len(),
        DICTIONARY.len(),
        "the doc has {} column rows, the code {}",
        rows.len(),
        DICTIONARY.len()
    );
    for (row, col) in rows.iter().zip(DICTIONARY) {
        let expected = format!("| `{}` | {} | {} |", col.name, col.dtype, col.description);
        assert_eq!(
            *row, expected,
            "column {} differs between docs/data-dictionary.md and export::DICTIONARY",
            col.name
        );
    }
}

#[test]
fn results_dictionary_matches_the_code() {
    use adsim::cells::{All, Channel, Seg};
    use adsim::metrics::METRICS;
    let doc = include_str!("../../docs/data-dictionary.md");
    for (name, text) in Seg::ALL
        .iter()
        .chain(All::ALL)
        .chain(Channel::ALL)
        .map(|m| (m.name, m.doc))
        .chain(METRICS.iter().copied())
        .chain(adsim::demand::SUMMARY_METRICS.iter().copied())
        .chain(adsim::demand::TABLE_METRICS.iter().copied())
    {
        let row = format!("| `{name}` | {text} |");
        assert!(
            doc.contains(&row),
            "docs/data-dictionary.md lacks the row {row}"
        );
    }
    for v in [
        adsim::metrics::SCHEMA_VERSION,
        adsim::cells::CELLS_SCHEMA_VERSION,
        adsim::study::STUDY_SCHEMA_VERSION,
    ] {
        assert!(
            doc.contains(&format!("schema `{v}`")),
            "schema version {v} not in the doc"
        );
    }
}

#[test]
fn readme_lists_every_scenario_key() {
    // Every leaf key of the default scenario appears in the README's key reference, on a row
    // of its section.
    let readme = include_str!("../../README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    let value: toml::Value =
        toml::from_str(&adsim::scenario::Scenario::default().to_toml()).unwrap();
    let mut leaves = Vec::new();
    crate::common::toml_leaves("", &value, &mut leaves);
    let mut keys: Vec<(String, String)> = leaves
        .into_iter()
        .filter(|(_, v)| {
            !v.as_array()
                .is_some_and(|a| !a.is_empty() && a.iter().all(toml::Value::is_table))
        })
        .map(|(path, _)| {
            path.rsplit_once('.')
                .map_or((String::new(), path.clone()), |(s, l)| {
                    (s.to_string(), l.to_string())
                })
        })
        .collect();
    keys.push(("engine".into(), "chunk_size".into()));
    assert!(keys.len() > 30, "only {} keys found", keys.len());
    for (section, leaf) in keys {
        let found = rows.iter().any(|r| {
            r.contains(&format!("`{section}")) && r.contains(&leaf)
                || section.is_empty() && r.contains(&format!("`{leaf}`"))
        });
        assert!(
            found,
            "README's scenario key reference lacks {section}.{leaf}"
        );
    }
}

#[test]
fn the_limitations_name_nothing_that_exists() {
    // docs/model.md §15.8 lists what is not built; a command it names as missing must not be
    // one of the program's, or the section has gone stale.
    let model = include_str!("../../docs/model.md");
    let section = model
        .split("### 15.8 Not yet implemented")
        .nth(1)
        .and_then(|s| s.split("\n#").next())
        .expect("docs/model.md has its section 15.8");
    let dir = tempfile::tempdir().unwrap();
    let help = crate::common::adsim(dir.path(), &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        commands.contains(&"run") && commands.contains(&"study"),
        "{help}"
    );
    let mut named = 0;
    for piece in section.split('`').skip(1).step_by(2) {
        if let Some(cmd) = piece.strip_prefix("adsim ") {
            named += 1;
            let words: Vec<&str> = cmd.split_whitespace().collect();
            let word = words.first().copied().unwrap_or("");
            let options: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| w.starts_with("--"))
                .collect();
            if options.is_empty() || !commands.contains(&word) {
                assert!(
                    !commands.contains(&word),
                    "docs/model.md §15.8 says `{piece}` is not built, but `adsim {word}` exists"
                );
                continue;
            }
            // A command that exists, named with an option it must not have.
            let out = crate::common::adsim(dir.path(), &[word, "--help"]);
            let help = String::from_utf8_lossy(&out.stdout).to_string();
            for o in options {
                assert!(
                    !help
                        .split_whitespace()
                        .any(|w| w.trim_end_matches(',') == o),
                    "docs/model.md §15.8 says `{piece}` is not built, but `adsim {word}` has {o}"
                );
            }
        }
    }
    assert!(
        named > 0,
        "the section names no missing command: the check checks nothing"
    );
}

#[test]
fn run_shard_study_validate_and_report_import_one_another_without_a_cycle() {
    // The report is handed the rows it draws and a run the intervals it shows, so that none of
    // these modules depends on itself through the others (a leaf, `document`, renders them).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = ["run", "shard", "study", "validate", "report"];
    let source = |m: &str| -> String {
        let file = root.join(format!("{m}.rs"));
        if file.exists() {
            return std::fs::read_to_string(file).unwrap();
        }
        let mut text = String::new();
        for entry in std::fs::read_dir(root.join(m)).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        text
    };
    // Edges: module -> the modules of the five it names as `crate::<other>` outside comments.
    let edges: Vec<Vec<usize>> = modules
        .iter()
        .map(|m| {
            let code: String = source(m)
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            modules
                .iter()
                .enumerate()
                .filter(|(_, o)| *o != m && code.contains(&format!("crate::{o}::")))
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    assert!(
        edges.iter().any(|e| !e.is_empty()),
        "no edge found: the check reads nothing"
    );
    // Depth-first search for a cycle.
    fn visit(i: usize, edges: &[Vec<usize>], state: &mut [u8], path: &mut Vec<usize>) -> bool {
        state[i] = 1;
        path.push(i);
        for &j in &edges[i] {
            if state[j] == 1 {
                path.push(j);
                return true;
            }
            if state[j] == 0 && visit(j, edges, state, path) {
                return true;
            }
        }
        path.pop();
        state[i] = 2;
        false
    }
    let mut state = vec![0u8; modules.len()];
    for i in 0..modules.len() {
        let mut path = Vec::new();
        if state[i] == 0 && visit(i, &edges, &mut state, &mut path) {
            let names: Vec<&str> = path.iter().map(|&k| modules[k]).collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
}
