//! Documentation kept true: the data dictionary in docs/ matches the code's.

use adsim::export::{DICTIONARY, SCHEMA_VERSION};

#[test]
fn dictionary_matches_the_code() {
    let doc = include_str!("../../docs/data-dictionary.md");
    assert!(
        doc.contains(&format!("schema `{SCHEMA_VERSION}`")),
        "schema version {SCHEMA_VERSION} not in the doc"
    );
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
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
